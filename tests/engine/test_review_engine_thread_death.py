"""Review finding: when the engine thread dies, requests submitted while its fatal step ran
(still in the inbox) and requests submitted afterwards must be failed, not left waiting
forever; ``Engine.call`` (``/flush_cache``) must fail too."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ppd_engine.engine import Engine, RequestHandle
from ppd_engine.scheduler import Scheduler

from .bookkeeping import make_req


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
        engine.submit(queued)          # sits in the inbox while the step runs
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
