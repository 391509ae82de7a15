"""The engine thread with a fake runner (no model): requests flow through, the thread idles
instead of spinning while nothing is computable, aborts and KV arrival are applied."""

from __future__ import annotations

import asyncio
import time

from ppd_engine.engine import Engine, RequestHandle
from ppd_engine.request import Mode
from ppd_engine.scheduler import Scheduler

from .bookkeeping import make_req


class CountingRunner:
    def __init__(self, step_seconds: float = 0.0) -> None:
        self.steps = 0
        self.step_seconds = step_seconds

    def run(self, step) -> list[int]:
        self.steps += 1
        time.sleep(self.step_seconds)
        return [1] * len(step.rows)

    def release(self, req) -> None:
        pass


class CountingScheduler(Scheduler):
    schedules = 0

    def schedule(self):
        self.schedules += 1
        return super().schedule()


async def updates_until_final(handle: RequestHandle, limit: int = 100) -> list:
    seen = []
    for _ in range(limit):
        update = await asyncio.wait_for(handle.updates.get(), 10)
        seen.append(update)
        if update.finish_reason is not None:
            break
    return seen


async def test_request_runs_to_completion_and_thread_idles_after():
    sched = CountingScheduler(64, 4, 16, 8)
    runner = CountingRunner()
    engine = Engine(sched, runner)
    engine.start()
    try:
        handle = RequestHandle(make_req(range(1, 10), max_new=5), asyncio.get_running_loop())
        engine.submit(handle)
        seen = await updates_until_final(handle)
        assert [len(u.output_ids) for u in seen] == [1, 2, 3, 4, 5]
        assert seen[-1].finish_reason == {"type": "length", "length": 5}
        before = sched.schedules
        await asyncio.sleep(0.3)
        assert sched.schedules - before <= 2           # blocked on its inbox, not spinning
    finally:
        engine.stop()
    assert not engine.alive


async def test_awaiting_kv_does_not_spin_and_kv_arrival_resumes_decoding():
    sched = CountingScheduler(64, 4, 16, 8)
    engine = Engine(sched, CountingRunner())
    engine.start()
    try:
        req = make_req(range(1, 10), max_new=3, mode=Mode.DECODE_RECV)
        handle = RequestHandle(req, asyncio.get_running_loop())
        engine.submit(handle)
        first = await asyncio.wait_for(handle.updates.get(), 10)
        assert first.kind == "need_kv"
        blocked = make_req(range(1, 200), max_new=50)     # cannot be admitted until req finishes
        engine.submit(RequestHandle(blocked, asyncio.get_running_loop()))
        await asyncio.sleep(0.05)
        before = sched.schedules
        await asyncio.sleep(0.3)
        assert sched.schedules - before <= 2
        engine.kv_received(req, 7)
        seen = await updates_until_final(handle)
        assert seen[0].output_ids == [7] and seen[-1].output_ids == [7, 1, 1]
    finally:
        engine.stop()


async def test_abort_finishes_a_running_request():
    sched = Scheduler(64, 4, 16, 8)
    engine = Engine(sched, CountingRunner(step_seconds=0.01))
    engine.start()
    try:
        req = make_req(range(1, 10), max_new=200, ignore_eos=True)   # ~2 s of steps
        handle = RequestHandle(req, asyncio.get_running_loop())
        engine.submit(handle)
        await asyncio.wait_for(handle.updates.get(), 10)
        engine.abort(req, "test")
        seen = await updates_until_final(handle, limit=300)
        assert seen[-1].finish_reason == {"type": "abort", "message": "test"}
        assert sched.num_running == 0
    finally:
        engine.stop()
