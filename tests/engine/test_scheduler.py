"""Scheduler decisions without a model: chunked prefill mixing, admission, prefix reuse,
P/D states, aborts, and page conservation."""

from __future__ import annotations

from ppd_engine.request import Mode, State
from ppd_engine.scheduler import Scheduler

from .bookkeeping import make_req, pages_accounted, run_step

P = 4


def sched(num_pages=64, chunk=16, max_running=8, radix=True) -> Scheduler:
    return Scheduler(num_pages, P, chunk, max_running, enable_radix_cache=radix)


def test_long_prefill_is_chunked_and_interleaved_with_decode_rows():
    s = sched(chunk=16)
    a = make_req(range(1, 9), max_new=10)
    s.add(a)
    run_step(s)
    assert a.state is State.DECODING and len(a.output_ids) == 1
    b = make_req(range(1, 41), max_new=2)
    s.add(b)
    chunks = []
    for _ in range(3):
        step = run_step(s)
        kinds = {row.req.rid: row.num_new for row in step.rows}
        assert kinds[a.rid] == 1  # the decode stream advances every step
        chunks.append(kinds.get(b.rid, 0))
    assert chunks == [16, 16, 8]
    assert len(a.output_ids) == 4 and b.state is State.DECODING and len(b.output_ids) == 1


def test_several_prefills_share_the_chunk_budget_fcfs():
    s = sched(chunk=10)
    a, b = make_req(range(1, 8)), make_req(range(1, 9))
    s.add(a)
    s.add(b)
    step = s.schedule()
    assert [(r.req.rid, r.num_new) for r in step.rows] == [(a.rid, 7), (b.rid, 3)]


def test_admission_waits_for_capacity_then_proceeds():
    s = sched(num_pages=6, radix=False)
    big = make_req(range(1, 13), max_new=9)  # 20 tokens -> 5 pages
    s.add(big)
    run_step(s)
    other = make_req(range(1, 9), max_new=1)  # 8 tokens -> 2 pages: does not fit
    s.add(other)
    run_step(s)
    assert other.state is State.WAITING and s.num_waiting == 1
    while not big.finished:
        run_step(s)
    run_step(s)
    assert other.state in (State.DECODING, State.FINISHED)
    assert pages_accounted(s) == 6


def test_max_running_requests_caps_admission():
    s = sched(max_running=2)
    reqs = [make_req(range(1, 5), max_new=5) for _ in range(3)]
    for r in reqs:
        s.add(r)
    run_step(s)
    assert [r.state for r in reqs] == [State.DECODING, State.DECODING, State.WAITING]


def test_finished_prompt_and_output_are_cached_for_the_next_turn():
    s = sched()
    turn1 = make_req(range(1, 11), max_new=7)
    s.add(turn1)
    while not turn1.finished:
        run_step(s)
    history = turn1.all_ids()  # 10 prompt + 7 output tokens
    turn2 = make_req(history + [5, 6, 7], max_new=2)
    s.add(turn2)
    step = run_step(s)
    assert turn2.num_prefix_tokens == 16  # prompt+output[:-1] = 16 tokens = 4 pages
    assert step.rows[0].start == 16 and step.rows[0].num_new == 4
    assert turn2.cached_tokens == 16


def test_full_prompt_hit_still_computes_the_last_token():
    s = sched()
    first = make_req(range(1, 9), max_new=1)
    s.add(first)
    run_step(s)
    again = make_req(range(1, 9), max_new=1)
    s.add(again)
    step = run_step(s)
    assert again.num_prefix_tokens == 4 and step.rows[0].num_new == 4


def test_cache_pages_are_evicted_to_admit_new_requests():
    s = sched(num_pages=8, chunk=32)
    for base in (100, 200):
        r = make_req(range(base, base + 12), max_new=1)
        s.add(r)
        run_step(s)
    assert s.cache.num_pages == 6 and s.allocator.num_free == 2
    big = make_req(range(300, 320), max_new=5)  # 24 tokens -> 6 pages
    s.add(big)
    run_step(s)
    assert big.state is State.DECODING
    assert pages_accounted(s) == 8


def test_decode_recv_waits_for_kv_then_decodes():
    s = sched()
    r = make_req(range(1, 11), max_new=3, mode=Mode.DECODE_RECV)
    s.add(r)
    step = s.schedule()
    assert step.admitted_awaiting_kv == [r] and step.rows == []
    assert r.state is State.AWAITING_KV
    assert s.on_kv_received(r, 42)
    assert r.state is State.DECODING and r.output_ids == [42] and r.num_computed == 10
    step = run_step(s)
    assert step.rows[0].start == 10 and step.rows[0].num_new == 1


def test_decode_recv_matches_the_whole_prompt_in_its_cache():
    s = sched()
    warm = make_req(range(1, 9), max_new=2)
    s.add(warm)
    while not warm.finished:
        run_step(s)
    r = make_req(range(1, 9), max_new=3, mode=Mode.DECODE_RECV)
    s.add(r)
    s.schedule()
    assert r.num_prefix_tokens == 8  # all of it: only the first token comes over


def test_prefill_send_holds_pages_until_released():
    s = sched()
    r = make_req(range(1, 10), max_new=1, mode=Mode.PREFILL_SEND)
    s.add(r)
    run_step(s)
    assert r.state is State.SENDING and r.output_ids == [1]
    assert s.schedule().rows == []  # nothing to compute while it waits to send
    s.finish(r)
    assert r.finished and s.cache.num_pages == 2 and pages_accounted(s) == 64


def test_abort_waiting_and_running_requests_frees_pages():
    s = sched(max_running=1)
    running, waiting = make_req(range(1, 9), max_new=50), make_req(range(1, 9))
    s.add(running)
    s.add(waiting)
    run_step(s)
    s.abort(waiting, {"type": "abort"})
    s.abort(running, {"type": "abort"})
    assert waiting.finished and running.finished
    assert running.finish_reason == {"type": "abort"}
    assert s.num_running == 0 and pages_accounted(s) == 64


def test_stop_token_finishes_and_radix_disabled_frees_everything():
    s = sched(radix=False)
    r = make_req(range(1, 9), max_new=20)
    s.add(r)
    run_step(s, token=0)  # EOS
    assert r.finished and r.finish_reason == {"type": "stop", "matched": 0}
    assert s.allocator.num_free == 64


def test_flush_cache_refused_while_requests_run():
    s = sched()
    r = make_req(range(1, 9), max_new=3)
    s.add(r)
    run_step(s)
    assert s.flush_cache() is False
    while not r.finished:
        run_step(s)
    assert s.flush_cache() is True and s.cache.num_pages == 0 and s.allocator.num_free == 64


def test_a_request_gets_one_contiguous_run_of_pages():
    s = sched()
    r = make_req(range(1, 30), max_new=20)
    s.add(r)
    s.schedule()
    assert r.pages == list(range(r.pages[0], r.pages[0] + len(r.pages)))
