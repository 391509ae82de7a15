"""The ppd rule that never loses to P/D: committed local load, the TPOT budget, the decode
bottleneck, P->D affinity and the cold-start prior (issue 7, item 1). Table-driven."""

from __future__ import annotations

import pytest
from routing_views import COEFS, cluster, decode, loaded, prefill, request, session

from ppd_server.routing.cost_model import MIN_SAMPLES_TO_PUBLISH, CostModel
from ppd_server.routing.latency import committed_local_ms_per_step, expected_output_tokens, local_tpot_budget
from ppd_server.routing.local_load import LocalLoad
from ppd_server.routing.observation import Observation
from ppd_server.routing.placement import AFFINITY_SLACK, best_pd
from ppd_server.routing.policies import build_options, make_policy
from ppd_server.routing.types import CostCoefficients, SessionView

PPD = make_policy("ppd")


def _committed(reqs: int, tokens_each: int, out: int = 32) -> dict:
    """WorkerView fields for ``reqs`` local requests in flight of ``tokens_each`` uncached tokens."""
    load = LocalLoad()
    for k in range(reqs):
        load.commit(k, tokens_each, out)
    return load.view_fields()


# -- 1. committed local prefill raises local's (and every stream's) predicted TPOT ---------------


@pytest.mark.parametrize("reqs", [0, 1, 4, 16])
def test_committed_local_load_raises_the_predicted_tpot(reqs):
    cl = cluster(prefill(), decode(**loaded(8), **_committed(reqs, 300)))
    opts = build_options(request(), cl, session())
    base = build_options(request(), cluster(prefill(), decode(**loaded(8))), session())
    # each rides in decode iterations that run anyway: its base counts only beyond the decode base
    per_step = reqs * (max(COEFS.prefill_base_ms - COEFS.decode_base_ms, 0.0) + COEFS.prefill_per_token_ms * 300) / 32
    assert committed_local_ms_per_step(cl.workers[1]) == pytest.approx(per_step)
    # every stream on the worker absorbs the committed prefill, whichever route this turn takes
    assert opts.local.tpot_ms == pytest.approx(base.local.tpot_ms + per_step)
    assert opts.pd.tpot_ms == pytest.approx(base.pd.tpot_ms + per_step)


def test_more_committed_load_never_makes_local_look_cheaper():
    tpots = [
        build_options(request(), cluster(prefill(), decode(**loaded(8), **_committed(n, 300))), session()).local.tpot_ms
        for n in range(0, 20, 2)
    ]
    assert tpots == sorted(tpots) and tpots[-1] > tpots[0]


def test_local_load_bookkeeping_commits_and_releases():
    load = LocalLoad()
    load.commit("a", 300, 30)
    load.commit("b", 100, 10)
    assert load.view_fields() == pytest.approx(
        {
            "local_prefill_reqs": 2,
            "local_prefill_tokens": 400,
            "local_prefill_tokens_per_step": 20.0,
            "local_prefill_reqs_per_step": 1 / 30 + 1 / 10,
        }
    )
    load.release("a")
    load.release("unknown")
    assert load.view_fields() == pytest.approx(
        {
            "local_prefill_reqs": 1,
            "local_prefill_tokens": 100,
            "local_prefill_tokens_per_step": 10.0,
            "local_prefill_reqs_per_step": 0.1,
        }
    )
    load.release("b")
    assert load.view_fields() == {
        "local_prefill_reqs": 0,
        "local_prefill_tokens": 0,
        "local_prefill_tokens_per_step": 0.0,
        "local_prefill_reqs_per_step": 0.0,
    }


# -- 2. with a TPOT target, the per-iteration budget switches the turn to P->D --------------------

# 4 running streams, a 300-token append over 32 tokens of answer, target 60 ms (x0.85 headroom):
# the budget is ~10.7 ms of prefill per step, this append alone needs ~9.5; each committed
# 30-token local request adds ~1.1
BUDGET_TABLE = [
    (0, "local"),
    (1, "local"),
    (2, "pd"),
    (8, "pd"),
]


@pytest.mark.parametrize(("committed", "route"), BUDGET_TABLE)
def test_tpot_budget_switches_to_pd_as_committed_local_load_grows(committed, route):
    req = request(prompt=1300, slo_tpot_ms=60.0)
    d = decode(**loaded(4), **_committed(committed, 30))
    # margin -1: S (and the stale-P charge, which near a full budget is most of the gain here)
    # does not decide; the budget alone switches the route
    decision = make_policy("ppd", margin=-1.0).decide(
        req, cluster(prefill(), decode("http://d1", **loaded(4)), d), session()
    )
    need, budget = local_tpot_budget(req, session(), d, 0.85 * 60.0)
    assert (need <= budget) == (route == "local")
    assert decision.route == route, decision.reason
    if route == "pd":
        assert "TPOT budget" in decision.reason


def test_without_a_tpot_target_the_weights_decide():
    d = decode(**loaded(4), **_committed(8, 300))
    assert "budget" not in PPD.decide(request(prompt=1300), cluster(prefill(), d), session()).reason


def test_an_idle_decode_worker_has_budget_for_its_own_append():
    need, budget = local_tpot_budget(request(slo_tpot_ms=30.0), session(), decode(), 25.0)
    assert need == 0.0 and budget > 0
    assert PPD.decide(request(slo_tpot_ms=30.0), cluster(prefill(), decode()), session()).route == "local"


# -- 3. the decode side is the bottleneck while prefill has slack: P->D ---------------------------

# (running streams on every decode worker, prefill queue tokens, expected route). With 9 streams
# a joining stream runs at ~11 ms: past 90% of the 11.9 ms (0.85 x 14) target, yet the holder's
# own budget still takes this short append.
BOTTLENECK_TABLE = [
    (2, 0, "local"),  # nobody is saturated: the score decides (local wins TTFT)
    (9, 0, "pd"),  # every decode worker near the TPOT target, the prefill side idle
    (9, 200_000, "local"),  # decode saturated but prefill is too (P->D breaks TTFT): no slack
]


# (prefill queue tokens, TPOT target, expected route, reason). Weights that prefer P->D; a P queue
# that breaks the TTFT target while local is at most half as slow: the prefill side is the
# bottleneck, so local whatever S says - but not past the holder's TPOT budget unless P->D is
# hopeless (past HOPELESS x the TTFT target) and the append short (<= 512 tokens): then the
# static rule, even over a saturated decode pool (test_policy_ppd covers it).
PREFILL_BOUND_TABLE = [
    (0, None, "pd", "S="),
    (200_000, None, "local", "prefill side is the bottleneck"),
    (200_000, 1.0, "local", "P->D hopeless"),  # every decode worker saturated, P->D misses for sure
    (0, 1.0, "pd", "TPOT budget"),  # P idle: P->D meets the TTFT target, the budget holds
]


@pytest.mark.parametrize(("p_queue", "tpot_slo", "route", "why"), PREFILL_BOUND_TABLE)
def test_prefill_bottleneck_keeps_turns_local_within_the_budget(p_queue, tpot_slo, route, why):
    p = prefill(waiting_reqs=1 if p_queue else 0, waiting_tokens=p_queue)
    req = request(slo_ttft_ms=1000.0, slo_tpot_ms=tpot_slo, w_ttft=0.1, w_tpot=10.0)
    d = PPD.decide(req, cluster(p, decode(**loaded(4))), session())
    assert d.route == route and why in d.reason, d.reason


def test_local_is_charged_for_the_first_tokens_it_delays():
    quiet = PPD.decide(request(prompt=1400), cluster(prefill(), decode(**loaded(1))), session())
    crowded = PPD.decide(request(prompt=1400), cluster(prefill(), decode(**loaded(1), waiting_reqs=3)), session())
    assert quiet.route == "local" and crowded.route == "pd", crowded.reason
    assert "others +" in crowded.reason and crowded.score < quiet.score


@pytest.mark.parametrize(("running", "p_queue", "route"), BOTTLENECK_TABLE)
def test_decode_bottleneck_sends_turns_to_pd(running, p_queue, route):
    fast = CostCoefficients(5.0, 0.05, 0.2, 5.0, 0.5, 0.1)  # a GPU-like worker: decode step ~ 5 + 0.5 b ms
    p = prefill(coefficients=fast, waiting_reqs=1 if p_queue else 0, waiting_tokens=p_queue)
    ds = [decode(f"http://d{k}", coefficients=fast, **loaded(running)) for k in range(2)]
    req = request(prompt=1100, out=256, slo_tpot_ms=14.0, slo_ttft_ms=500.0)
    holder = ds[0]
    need, budget = local_tpot_budget(req, session(), holder, 0.85 * 14.0)
    assert need <= budget  # the holder's budget alone would allow local
    d = PPD.decide(req, cluster(p, *ds), session())
    assert d.route == route, d.reason
    assert ("decode side is the bottleneck" in d.reason) == (route == "pd")


# -- 4. P->D placement keeps the conversation on the decode worker holding its prefix --------------

# (streams on the holder, streams on the other decode worker, expected decode worker)
AFFINITY_TABLE = [
    (0, 0, "http://d0"),
    (2, 0, "http://d0"),  # a little busier: still the holder (incremental transfer, next turn local-capable)
    (60, 0, "http://d1"),  # far busier: load says otherwise
]


@pytest.mark.parametrize(("holder_load", "other_load", "want"), AFFINITY_TABLE)
def test_pd_placement_prefers_the_prefix_holder_unless_load_says_otherwise(holder_load, other_load, want):
    cl = cluster(prefill(), decode("http://d1", **loaded(other_load)), decode("http://d0", **loaded(holder_load)))
    sess = session(decode_url="http://d0")
    pd = best_pd(request(prompt=1100), cl, sess)
    assert pd is not None and pd.decode == want
    if want == "http://d0" and holder_load:
        no_affinity = best_pd(request(prompt=1100), cl, session(decode_url=None))
        assert no_affinity is not None and no_affinity.decode == "http://d1"  # the slack is what keeps it


def test_affinity_slack_is_bounded():
    assert 0.0 < AFFINITY_SLACK < 1.0


# -- 5. cold start: the profile's prior, not the first noisy sample ------------------------------

PROFILE = {"coefficients": COEFS.to_dict()}


@pytest.mark.parametrize("factor", [0.5, 3.0, 10.0])
def test_cold_start_predictions_come_from_the_prior_not_the_first_sample(factor):
    cm = CostModel(PROFILE)
    prior = cm.coefficients("http://d0", "decode")
    pred_tpot = 40.0
    for k in range(MIN_SAMPLES_TO_PUBLISH):
        assert cm.coefficients("http://d0", "decode") == prior, f"moved after {k} sample(s)"
        cm.observe(
            Observation("local", "http://d0", None, 300, 1000, 400.0 * factor, pred_tpot * factor, 4, 400.0, pred_tpot)
        )
    assert cm.coefficients("http://d0", "decode") != prior  # consistent evidence is believed


def test_cold_start_keeps_the_holder_local_capable_on_an_idle_fleet():
    """The live 1P2D case: turn 2 on an idle fleet after one slow first sample stays with the holder."""
    cm = CostModel(PROFILE)
    cm.observe(Observation("pd", "http://d0", "http://p0", 1000, 0, 9_000.0, 400.0, 0, 1100.0, 25.0))
    views = [prefill(coefficients=cm.coefficients("http://p0", "prefill"))] + [
        decode(u, coefficients=cm.coefficients(u, "decode")) for u in ("http://d1", "http://d0")
    ]
    d = PPD.decide(request(prompt=1100), cluster(*views), session(decode_url="http://d0"))
    assert d.decode == "http://d0"
    assert d.route == "local", d.reason


# -- output lengths unknown to the router: the conversation's last answer, not the max_tokens cap ---


@pytest.mark.parametrize(("cap", "last", "want"), [(2048, 0, 2048), (2048, 64, 64), (32, 64, 32), (128, 128, 128)])
def test_expected_answer_length(cap, last, want):
    sess = SessionView("c1", "http://d0", "http://p0", 1000, 800, 1, None, last)
    assert expected_output_tokens(request(out=cap), sess) == want
    assert expected_output_tokens(request(out=cap), None) == cap


def test_a_generous_max_tokens_cap_does_not_hide_the_interference():
    """Clients send max_tokens=2048 for 64-token answers: with the last answer known, the
    append is spread over ~64 steps (a real cost), not 2048 (none)."""
    cl = cluster(prefill(), decode(**loaded(8)))
    blind = build_options(request(out=2048), cl, session())
    known = build_options(request(out=2048), cl, SessionView("c1", "http://d0", "http://p0", 1000, 800, 1, None, 64))
    assert known.local.tpot_ms - known.pd.tpot_ms > 10 * (blind.local.tpot_ms - blind.pd.tpot_ms)
    assert (
        PPD.decide(
            request(out=2048), cl, SessionView("c1", "http://d0", "http://p0", 1000, 800, 1, None, 64)
        ).output_tokens
        == 64
    )
