"""The latency formulas, checked against hand-computed values."""

from __future__ import annotations

import pytest
from routing_views import COEFS, cluster, decode, loaded, prefill, request, session, unified

from ppd_server.routing.latency import (
    append_riding_ms,
    committed_local_ms_per_step,
    decode_step_ms,
    estimate_local,
    estimate_pd,
    estimate_replica,
    iteration_wait_ms,
    local_tpot_budget,
    prefill_ms,
    queue_wait_ms,
    riding_base_ms,
    transfer_ms,
)
from ppd_server.routing.types import CostCoefficients


def test_prefill_is_linear_plus_attention_over_the_cached_prefix():
    assert prefill_ms(COEFS, 0, 5000) == 0.0
    assert prefill_ms(COEFS, 1000, 0) == pytest.approx(5 + 1000 + 0.2 * 1.0)
    assert prefill_ms(COEFS, 100, 900) == pytest.approx(5 + 100 + 0.2 * 0.1)


def test_decode_step():
    assert decode_step_ms(COEFS, 4, 8000) == pytest.approx(20 + 12 + 8)


def test_transfer_includes_the_link_backlog():
    assert transfer_ms(125_000_000, 1.0) == pytest.approx(1000.0)
    assert transfer_ms(125_000_000, 1.0, 125_000_000) == pytest.approx(2000.0)
    assert transfer_ms(0, 1.0, 10**9) == 0.0


def test_queue_wait_counts_queued_tokens_requests_and_unseen_inflight():
    assert queue_wait_ms(prefill()) == 0.0
    assert queue_wait_ms(prefill(waiting_reqs=2, waiting_tokens=300)) == pytest.approx(2 * 5 + 300)
    assert queue_wait_ms(prefill(running_reqs=1)) == pytest.approx(5)  # a prefill in progress
    # on a decode worker, requests waiting for their KV hold no prefill work: only queued local
    # prefill runs ahead of a local append (its tokens, one base per local request in flight)
    assert queue_wait_ms(decode(inflight=3, running_reqs=1, waiting_reqs=2), 100) == 0.0
    assert queue_wait_ms(decode(waiting_reqs=4, waiting_tokens=50, local_prefill_reqs=1)) == pytest.approx(5 + 50)
    # requests sent but not yet seen by the poll are priced like the new one on a prefill worker
    assert queue_wait_ms(prefill(inflight=2), 100) == pytest.approx(2 * prefill_ms(COEFS, 100))
    assert queue_wait_ms(unified("http://u0", inflight=1), 0) == pytest.approx(5)


def test_pd_prefills_what_p_lacks_and_ships_what_d_lacks():
    cl = cluster(prefill(), decode(**loaded(2)), link_gbps=8.0)
    c = estimate_pd(
        request(prompt=1100, out=32), cl, session(cached_d=1000, cached_p=800), cl.workers[0], cl.workers[1]
    )
    p_part = prefill_ms(COEFS, 300, 800)
    x_part = 100 * 100_000 * 8 / 8e9 * 1e3
    in_flight = decode_step_ms(COEFS, 2, 2000) / 2  # the first token goes out when D's iteration in flight ends
    assert c.ttft_ms == pytest.approx(p_part + x_part + in_flight)
    assert c.kv_bytes == 100 * 100_000
    assert c.tpot_ms == pytest.approx(decode_step_ms(COEFS, 3, 2000 + 1100 + 16))


def test_pd_ships_everything_to_a_decode_worker_without_radix_cache():
    cl = cluster(prefill(), decode(decode_radix_cache=False))
    c = estimate_pd(request(prompt=1100), cl, session(), cl.workers[0], cl.workers[1])
    assert c.kv_bytes == 1100 * 100_000


def test_an_idle_decode_worker_makes_no_request_wait():
    assert iteration_wait_ms(decode()) == 0.0
    busy = decode(**loaded(4))
    assert iteration_wait_ms(busy) == pytest.approx(decode_step_ms(COEFS, 4, 4000) / 2)
    # the router's own in-flight streams count when the poll has not seen them yet
    assert iteration_wait_ms(decode(inflight=2)) == pytest.approx(decode_step_ms(COEFS, 2, 0) / 2)


def test_local_pays_queue_append_and_chunk_mixing_and_taxes_running_streams():
    d = decode(**loaded(3), waiting_reqs=1, waiting_tokens=50, local_prefill_reqs=1)
    c = estimate_local(request(prompt=1600, out=50), session(cached_d=1000), d)
    append = prefill_ms(COEFS, 600, 1000)
    mixing = 3 * (3 * 3 + 3000 / 1000)  # ceil(600/256) = 3 chunks carry 3 decode rows each
    in_flight = decode_step_ms(COEFS, 3, 3000) / 2  # the prefill starts when D's iteration in flight ends
    assert c.ttft_ms == pytest.approx(in_flight + 5 + 50 + append + mixing)
    pd_tpot = decode_step_ms(COEFS, 4, 3000 + 1600 + 25)
    assert c.tpot_ms == pytest.approx(pd_tpot + 3 / 4 * append / 50)


def test_a_riding_prefill_costs_its_base_only_beyond_the_decode_steps():
    heavy = CostCoefficients(
        prefill_base_ms=12.0,
        prefill_per_token_ms=0.02,
        prefill_attn_ms_per_ktok2=0.0,
        decode_base_ms=8.0,
        decode_per_seq_ms=0.1,
        decode_per_kctx_ms=0.01,
    )
    assert riding_base_ms(heavy) == pytest.approx(4.0)
    assert riding_base_ms(COEFS) == 0.0  # never negative
    assert append_riding_ms(heavy, 500) == pytest.approx(4.0 + 10.0)
    assert append_riding_ms(heavy, 0) == 0.0
    d = decode(coefficients=heavy, local_prefill_reqs_per_step=0.5, local_prefill_tokens_per_step=100.0)
    # two locals in flight, answers of 4 tokens, 200 tokens each: (4 + 0.02*200) / 4 each, not (12 + 4) / 4
    assert committed_local_ms_per_step(d) == pytest.approx(0.5 * 4.0 + 100.0 * 0.02)


def test_local_on_an_idle_decode_worker_has_no_interference():
    c = estimate_local(request(prompt=1600), session(cached_d=1000), decode())
    assert c.tpot_ms == pytest.approx(decode_step_ms(COEFS, 1, 1600 + 16))


def test_cached_prefix_only_counts_on_the_sessions_own_worker():
    other = decode("http://d9")
    assert estimate_local(request(prompt=1100), session(), other).ttft_ms == pytest.approx(prefill_ms(COEFS, 1100, 0))
    u = unified("http://u0")
    warm = estimate_replica(request(prompt=1100), session(decode_url="http://u0"), u)
    cold = estimate_replica(request(prompt=1100), None, u)
    assert warm.ttft_ms == pytest.approx(prefill_ms(COEFS, 100, 1000))
    assert cold.ttft_ms == pytest.approx(prefill_ms(COEFS, 1100, 0))


@pytest.mark.parametrize("prompt", [500, 1000])
def test_a_cache_hit_always_leaves_the_last_token_to_compute(prompt):
    c = estimate_local(request(prompt=prompt), session(cached_d=1000), decode())
    assert c.ttft_ms == pytest.approx(prefill_ms(COEFS, 1, prompt - 1))


def test_the_tpot_budget_prices_the_append_without_a_second_base():
    heavy = CostCoefficients(
        prefill_base_ms=12.0,
        prefill_per_token_ms=0.02,
        prefill_attn_ms_per_ktok2=0.0,
        decode_base_ms=8.0,
        decode_per_seq_ms=0.1,
        decode_per_kctx_ms=0.0,
    )
    d = decode(coefficients=heavy, **loaded(4))
    need, budget = local_tpot_budget(request(prompt=1100, out=10), session(cached_d=1000), d, 15.0)
    # 100 new tokens over 10 answer tokens: (12 - 8 + 0.02 * 100) / 10, not (12 + 2) / 10
    assert need == pytest.approx((4.0 + 2.0) / 10)
    assert budget == pytest.approx(15.0 - (8.0 + 0.1 * 5))
