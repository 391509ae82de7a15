"""The router's own prefills in flight on a prefill worker price its queue (issue 7, 1P3D mixed
32/s): the load poll lags, and pricing the requests it has not seen like the request at hand
under-priced a short turn queued behind long ones."""

from __future__ import annotations

import pytest
from routing_views import COEFS, cluster, decode, prefill, request

from ppd_server.routing.latency import estimate_pd, prefill_ms, queue_wait_ms
from ppd_server.routing.local_load import PrefillLoad
from ppd_server.routing.placement import best_pd


def test_prefill_load_bookkeeping_commits_and_releases():
    load = PrefillLoad()
    load.commit("a", 1000, 0)
    load.commit("b", 100, 900)
    assert (load.reqs, load.tokens) == (2, 1100)
    assert load.attn_ktok2 == pytest.approx(1.0 + 0.1)
    load.commit("b", 200, 0)  # a retried request replaces its own entry
    assert (load.reqs, load.tokens) == (2, 1200)
    load.release("a")
    load.release("unknown")
    assert (load.reqs, load.tokens) == (1, 200) and load.attn_ktok2 == pytest.approx(0.04)
    load.release("b")
    assert load.view_fields() == {
        "router_prefill_reqs": 0,
        "router_prefill_tokens": 0,
        "router_prefill_attn_ktok2": 0.0,
    }


def test_the_routers_own_prefills_in_flight_are_the_queue_whatever_the_poll_says():
    # the poll saw nothing yet; the router sent one 1000-token and one 2000-token prefill there
    own = {"inflight": 2, "router_prefill_reqs": 2, "router_prefill_tokens": 3000, "router_prefill_attn_ktok2": 5.0}
    expected = 2 * 5 + 3000 + 0.2 * 5.0
    # a 50-token turn queues behind 3,000 tokens of prefill, not behind two 50-token ones
    assert queue_wait_ms(prefill(**own), 50) == pytest.approx(expected)
    assert queue_wait_ms(prefill(**own), 50) > 10 * queue_wait_ms(prefill(inflight=2), 50)
    # a poll that shows less does not lower it (the poll lags); one that shows more (other router
    # replicas' work: they poll the same workers) is the queue
    assert queue_wait_ms(prefill(waiting_reqs=1, waiting_tokens=900, **own), 50) == pytest.approx(expected)
    assert queue_wait_ms(prefill(waiting_reqs=5, waiting_tokens=9000, **own), 50) == pytest.approx(5 * 5 + 9000)
    # in-flight requests beyond the router's count are still priced like the request at hand
    more = dict(own, inflight=3)
    assert queue_wait_ms(prefill(**more), 50) == pytest.approx(expected + prefill_ms(COEFS, 50))


def test_p_to_d_ttft_and_placement_follow_the_routers_prefill_queue():
    busy = prefill("http://p0", inflight=1, router_prefill_reqs=1, router_prefill_tokens=4000)
    idle = prefill("http://p1")
    cl = cluster(busy, idle, decode())
    req = request(prompt=100, out=16)
    assert (
        estimate_pd(req, cl, None, busy, cl.workers[2]).ttft_ms
        > estimate_pd(req, cl, None, idle, cl.workers[2]).ttft_ms + 3000
    )
    assert best_pd(req, cl, None).prefill == "http://p1"
