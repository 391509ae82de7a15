"""ppd charges a D-local turn with the prefill it leaves behind on the conversation's prefill worker
(``policies.ppd.stale_prefill_ms``): going local, P does not see this turn, so a later P->D turn
re-prefills this turn's tokens and answer there. Weighted by the squared non-local share of the
holder's in-flight requests (how likely turns there go P->D). Issue 7, the decode-bound cells."""

from __future__ import annotations

import pytest
from routing_views import COEFS, cluster, decode, loaded, prefill, request, session

from ppd_server.routing.latency import prefill_ms
from ppd_server.routing.policies import build_options, make_policy, ppd_score
from ppd_server.routing.policies.ppd import stale_prefill_ms

PPD = make_policy("ppd")
SESSION = session(cached_d=1000, cached_p=1000)
REQ = request(prompt=1050, out=32)  # 50 new tokens; P caches the 1000 before them


def _cluster(running: int = 4, local: int = 0, inflight: int | None = None):
    holder = decode(**loaded(running), inflight=running if inflight is None else inflight, local_prefill_reqs=local)
    return cluster(prefill(waiting_reqs=1, waiting_tokens=50), holder)


@pytest.mark.parametrize(("local", "share_pd"), [(0, 1.0), (2, 0.5), (3, 0.25), (4, 0.0)])
def test_the_charge_is_the_left_behind_prefill_times_the_squared_pd_share(local, share_pd):
    opts = build_options(REQ, _cluster(running=4, local=local), SESSION)
    lag = opts.pd.prefill_tokens + 32  # this turn's uncached-on-P tokens + its answer
    extra = prefill_ms(COEFS, lag, opts.pd.cached_tokens) - COEFS.prefill_base_ms
    assert opts.pd.prefill_tokens == 50  # P->D prefills only the new tokens now
    assert stale_prefill_ms(opts) == pytest.approx(extra * share_pd**2)


def test_nothing_in_flight_on_the_holder_means_no_charge():
    assert stale_prefill_ms(build_options(REQ, _cluster(running=0, inflight=0), SESSION)) == 0.0


def test_the_charge_lowers_s_and_is_named_in_the_reason():
    d = PPD.decide(REQ, _cluster(local=0), SESSION)
    opts = build_options(REQ, _cluster(local=0), SESSION)
    stale = stale_prefill_ms(opts)
    assert stale > 0
    assert d.score == pytest.approx(ppd_score(opts.local, opts.pd, 1.0, 1.0) - stale / opts.pd.ttft_ms)
    assert "stale P +" in d.reason


@pytest.mark.parametrize("running", [2, 4, 8])
def test_a_holder_whose_turns_go_pd_keeps_the_conversation_on_pd(running):
    # everything in flight on the holder is local: a later turn will stay local, nothing is left behind
    all_local = PPD.decide(REQ, _cluster(running=running, local=running), SESSION)
    assert all_local.route == "local", all_local.reason
    assert "stale" not in all_local.reason
    # nothing in flight is local: the next turn likely goes P->D and re-prefills this one on P
    none_local = PPD.decide(REQ, _cluster(running=running, local=0), SESSION)
    assert none_local.route == "pd", none_local.reason
    assert "stale P +" in none_local.reason
