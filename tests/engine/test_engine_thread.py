"""The engine thread with a fake runner (no model): requests flow through, the thread idles
instead of spinning while nothing is computable, aborts and KV arrival are applied."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

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
        assert sched.schedules - before <= 2  # blocked on its inbox, not spinning
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
        blocked = make_req(range(1, 200), max_new=50)  # cannot be admitted until req finishes
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
        req = make_req(range(1, 10), max_new=200, ignore_eos=True)  # ~2 s of steps
        handle = RequestHandle(req, asyncio.get_running_loop())
        engine.submit(handle)
        await asyncio.wait_for(handle.updates.get(), 10)
        engine.abort(req, "test")
        seen = await updates_until_final(handle, limit=300)
        assert seen[-1].finish_reason == {"type": "abort", "message": "test"}
        assert sched.num_running == 0
    finally:
        engine.stop()


# --- when the engine thread dies, requests submitted while its fatal step ran
# (still in the inbox) and requests submitted afterwards must be failed, not left waiting
# forever; ``Engine.call`` (``/flush_cache``) must fail too.


class FailingRunner:
    """Blocks in its first step until ``go`` is set, then raises (a broken engine)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def run(self, step) -> list[int]:
        self.entered.set()
        self.go.wait(10)
        raise RuntimeError("boom")

    def release(self, req) -> None:
        pass


async def final_update(handle: RequestHandle):
    # bounded so a hang fails the test instead of blocking the suite
    while True:
        update = await asyncio.wait_for(handle.updates.get(), 10)
        if update.finish_reason is not None:
            return update


async def test_requests_queued_during_and_after_the_fatal_step_are_failed():
    runner = FailingRunner()
    engine = Engine(Scheduler(64, 4, 16, 8), runner)
    engine.start()
    loop = asyncio.get_running_loop()
    try:
        first = RequestHandle(make_req(range(1, 10), max_new=5), loop)
        engine.submit(first)
        assert await loop.run_in_executor(None, runner.entered.wait, 10)
        queued = RequestHandle(make_req(range(1, 10), max_new=5), loop)
        engine.submit(queued)  # sits in the inbox while the step runs
        runner.go.set()
        for handle in (first, queued):
            update = await final_update(handle)
            assert update.finish_reason["type"] == "abort"
            assert "engine failure" in handle.req.error
        late = RequestHandle(make_req(range(1, 10), max_new=5), loop)
        engine.submit(late)
        assert (await final_update(late)).finish_reason["type"] == "abort"
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(engine.call(lambda: True), 10)
    finally:
        runner.go.set()
        engine.stop()


async def test_flush_cache_on_a_dead_engine_is_503_not_500():
    from .conftest import serve_worker

    async with serve_worker(warmup=False) as (client, worker):

        def broken(step):
            raise RuntimeError("boom")

        worker.runner.run = broken
        r = await client.post("/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 2}})
        assert r.status == 503
        r = await asyncio.wait_for(client.post("/flush_cache"), 10)
        assert r.status == 503, await r.text()
        assert "engine" in (await r.json())["error"]["message"]
