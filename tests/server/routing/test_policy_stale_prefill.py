"""ppd charges a D-local turn with what it costs other turns beyond its own holder's streams
(issue 7, the decode-bound cells where ppd's turn-2+ TTFT p50 was above pd's):

* ``stale_prefill_ms`` (with a TPOT target only): going local, the conversation's prefill worker
  does not see this turn, so a later P->D turn re-prefills its tokens there; weighted by the
  holder's budget use squared (how likely the next turn goes P->D);
* ``join_delay_ms``: P->D streams landing on the holder wait for the iteration in flight; the append
  makes one iteration ``append`` longer: ``rate x append x (append/2 + step)`` (their rate by
  Little's law)."""

from __future__ import annotations

import pytest
from routing_views import COEFS, cluster, decode, loaded, prefill, request, session

from ppd_server.routing.latency import decode_step_ms, expected_output_tokens, local_tpot_budget, prefill_ms
from ppd_server.routing.policies import build_options, make_policy, ppd_score
from ppd_server.routing.policies.ppd import budget_pd_chance, join_delay_ms, stale_prefill_ms

PPD = make_policy("ppd")
SESSION = session(cached_d=1000, cached_p=1000)
REQ = request(prompt=1050, out=32)  # 50 new tokens; P caches the 1000 before them


def _cluster(running: int = 4, local: int = 0, inflight: int | None = None):
    holder = decode(**loaded(running), inflight=running if inflight is None else inflight, local_prefill_reqs=local)
    return cluster(prefill(waiting_reqs=1, waiting_tokens=50), holder)


def test_the_stale_charge_is_the_left_behind_prefill_times_the_chance():
    opts = build_options(REQ, _cluster(running=4), SESSION)
    assert opts.pd.prefill_tokens == 50  # P->D would prefill only the new tokens now
    # the answer is missing on P whichever route this turn takes: only the 50 tokens count
    extra = prefill_ms(COEFS, 50, opts.pd.cached_tokens) - COEFS.prefill_base_ms
    assert stale_prefill_ms(opts, 1.0) == pytest.approx(extra)
    assert stale_prefill_ms(opts, 0.25) == pytest.approx(0.25 * extra)
    assert stale_prefill_ms(opts, 0.0) == 0.0
    assert stale_prefill_ms(opts, 7.0) == pytest.approx(extra)  # a chance is at most 1


def test_nothing_in_flight_on_the_holder_means_no_join_charge():
    opts = build_options(REQ, _cluster(running=0, inflight=0), SESSION)
    assert join_delay_ms(opts, 10.0) == 0.0


@pytest.mark.parametrize("local", [0, 2])
def test_join_delay_is_the_join_rate_times_the_growth_of_the_iteration_wait(local):
    opts = build_options(REQ, _cluster(running=8, local=local), SESSION)
    life = opts.pd.ttft_ms + expected_output_tokens(REQ, SESSION) * opts.pd.tpot_ms
    step = decode_step_ms(COEFS, 8, 8000)  # the holder's decode step: 8 streams of 1000 tokens
    rate = (8 - local) / life  # its P->D streams (in flight, not local) over how long one stays
    # ((step + append)^2 - step^2) / 2: the waits for the iteration in flight grow by this much
    assert join_delay_ms(opts, 10.0) == pytest.approx(rate * ((step + 10.0) ** 2 - step**2) / 2)
    assert join_delay_ms(opts, 10.0) == pytest.approx(rate * 10.0 * (10.0 / 2 + step))
    assert join_delay_ms(opts, 20.0) > 2 * join_delay_ms(opts, 10.0)  # superlinear in the append
    assert join_delay_ms(opts, 0.0) == 0.0


def test_without_a_tpot_target_s_charges_the_joins_not_the_stale_prefill():
    """Without a target nothing sends a continuation P->D but S, and the next turn's S is about
    this one's: the catch-up prefill is priced by TTFT(pd) of a turn that goes P->D, not charged
    to every local turn before it (which grew with each one until it forced that turn)."""
    cl = _cluster(local=0)
    d = PPD.decide(REQ, cl, SESSION)
    opts = build_options(REQ, cl, SESSION)
    append = prefill_ms(COEFS, opts.local.prefill_tokens, opts.local.cached_tokens)
    joins = join_delay_ms(opts, append)
    assert joins > 0 and stale_prefill_ms(opts, 1.0) > 0
    assert d.score == pytest.approx(ppd_score(opts.local, opts.pd, 1.0, 1.0) - joins / opts.pd.ttft_ms)
    assert "others +" in d.reason and "stale" not in d.reason


def test_a_long_local_streak_does_not_force_a_catch_up_turn_without_a_target():
    """Live (1P1D long-context-cpu): P lacked the conversation's last turns, the charge for them
    tipped a turn whose local TTFT was 166 ms against 701 ms P->D to P->D (measured 1,641 ms)."""
    behind = session(cached_d=1000, cached_p=200)  # P last saw the conversation 800 tokens ago
    req = request(prompt=1100, out=32)
    d = PPD.decide(req, _cluster(running=4, local=0), behind)
    assert d.route == "local", d.reason


# -- with a TPOT target: how likely the next turn goes P->D is the holder's budget use, squared ------


@pytest.mark.parametrize(
    ("need", "budget", "chance"),
    [(0.0, 10.0, 0.0), (5.0, 10.0, 0.25), (10.0, 10.0, 1.0), (30.0, 10.0, 1.0), (1.0, 0.0, 1.0), (-1.0, 10.0, 0.0)],
)
def test_budget_pd_chance_is_the_squared_budget_use(need, budget, chance):
    assert budget_pd_chance(need, budget) == pytest.approx(chance)


def test_with_a_tpot_target_an_idle_budget_does_not_charge_the_stale_prefill():
    """3P1D huge_paste 4/s: nothing local in flight on the holder says the share is 1 (every turn
    P->D), so the share charged the full re-prefill, no turn went local and the share stayed 1.
    Under a TPOT target the budget says whether the next turn is refused local: far from full, the
    charge is small, and the turn goes local where the share kept it P->D."""
    req = request(prompt=1100, out=32, slo_tpot_ms=200.0)  # a loose target: the budget is far from used
    cl = _cluster(running=4, local=0)
    opts = build_options(req, cl, SESSION)
    need, budget = local_tpot_budget(req, SESSION, opts.holder, 0.85 * 200.0)
    assert 0 < need < 0.1 * budget
    d = PPD.decide(req, cl, SESSION)
    assert d.route == "local", d.reason
    assert stale_prefill_ms(opts, budget_pd_chance(need, budget)) < 0.01 * stale_prefill_ms(opts, 1.0)


@pytest.mark.parametrize("slo_tpot", [25.0, 60.0, 200.0])
def test_with_a_tpot_target_s_charges_the_stale_prefill_at_the_budget_chance(slo_tpot):
    req = request(prompt=1100, out=32, slo_tpot_ms=slo_tpot)
    cl = _cluster(running=4, local=0)
    opts = build_options(req, cl, SESSION)
    need, budget = local_tpot_budget(req, SESSION, opts.holder, 0.85 * slo_tpot)
    chance = budget_pd_chance(need, budget)
    stale = stale_prefill_ms(opts, chance)
    joins = join_delay_ms(opts, prefill_ms(COEFS, opts.local.prefill_tokens, opts.local.cached_tokens))
    d = PPD.decide(req, cl, SESSION)
    assert d.score == pytest.approx(ppd_score(opts.local, opts.pd, 1.0, 1.0) - (stale + joins) / opts.pd.ttft_ms)
    # the full re-prefill only when the budget is used up
    assert (stale < stale_prefill_ms(opts, 1.0)) == (need < budget)
