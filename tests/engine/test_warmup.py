"""Startup warmup (synthetic model, in-process): it runs each role's real paths, leaves
nothing behind (cache, metrics, last step), holds /health at 503 and requests until done,
and --no-warmup skips it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ppd_engine import warmup as warmup_module
from ppd_engine.cli import parse_config
from ppd_engine.config import EngineConfig
from ppd_engine.http_api import create_app
from ppd_engine.request import Mode, Req
from ppd_engine.worker import Worker, build_worker

from .conftest import SYNTHETIC

DECODE_AGG = dict(
    disaggregation_mode="decode",
    disaggregation_decode_enable_radix_cache=True,
    disaggregation_decode_enable_conditional_agg=True,
)


@asynccontextmanager
async def spied_worker(**overrides: Any) -> AsyncIterator[tuple[TestClient, Worker, list[Req]]]:
    """A started worker whose submitted requests are recorded from the very first one."""
    worker = build_worker(EngineConfig(**{**SYNTHETIC, **overrides}).validate())
    submitted: list[Req] = []
    submit = worker.engine.submit

    def record(handle) -> None:
        submitted.append(handle.req)
        submit(handle)

    worker.engine.submit = record
    client = TestClient(TestServer(create_app(worker), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, worker, submitted
    finally:
        await client.close()


def assert_nothing_left(worker: Worker) -> None:
    assert worker.scheduler.num_used_tokens == 0 and worker.scheduler.num_running == 0
    cache = worker.scheduler.cache
    assert cache is None or cache.num_pages == 0
    assert worker.metrics.prompt_tokens == 0 and worker.metrics.cached_tokens == 0
    assert worker.metrics.kv_transfer_bytes_total == 0
    assert worker.metrics.gen_throughput() == 0.0
    assert worker.engine.last_step_time == 0.0


@pytest.mark.parametrize(
    "overrides, modes, transfers, appends",
    [
        ({}, [Mode.LOCAL, Mode.LOCAL], [False, False], True),
        ({"disaggregation_mode": "prefill"}, [Mode.PREFILL_SEND, Mode.PREFILL_SEND], [True, True], True),
        (DECODE_AGG, [Mode.DECODE_RECV, Mode.LOCAL], [True, False], True),
        ({"disaggregation_mode": "decode"}, [Mode.DECODE_RECV, Mode.LOCAL], [True, False], False),
    ],
    ids=["unified", "prefill", "decode-agg", "decode-plain"],
)
async def test_warmup_runs_the_roles_paths_and_leaves_nothing_behind(overrides, modes, transfers, appends):
    async with spied_worker(**overrides) as (client, worker, submitted):
        await asyncio.wait_for(worker.ready.wait(), 60)
        assert [r.mode for r in submitted] == modes
        assert all(r.error is None and r.finish_reason["type"] == "length" for r in submitted)
        assert [r.kv_transfer_bytes > 0 for r in submitted] == transfers
        assert (submitted[1].num_prefix_tokens > 0) == appends  # append over the cached first turn
        assert submitted[1].sampling.temperature > 0 and submitted[1].sampling.seed is not None
        assert_nothing_left(worker)
        metrics = await (await client.get("/metrics")).text()
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith(
                ("sglang:num_requests_total{", "sglang:prompt_tokens_total{", "sglang:forward_step_seconds_count{")
            )
        ]
        assert all(line.endswith(" 0.0") for line in counted), counted
        loads = (await (await client.get("/v1/loads")).json())["loads"][0]
        assert loads["last_step_ms"] == 0 and loads["disaggregation"]["kv_transfer_total_bytes"] == 0


async def test_first_real_request_with_the_warmup_prompt_gets_no_cache_hit():
    async with spied_worker() as (client, worker, _):
        body = {"messages": warmup_module._MESSAGES, "max_tokens": 2, "temperature": 0}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status == 200
        usage = (await r.json())["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0
        assert worker.metrics.prompt_tokens == usage["prompt_tokens"]  # only the real request counted


async def test_decode_local_prefill_after_warmup_gets_no_cache_hit():
    async with spied_worker(**DECODE_AGG) as (client, worker, _):
        body = {"messages": warmup_module._MESSAGES, "max_tokens": 2, "temperature": 0, "do_local_prefill": True}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status == 200
        assert (await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


async def test_health_is_503_and_requests_wait_until_warm(monkeypatch):
    release = asyncio.Event()
    real_warm_up = warmup_module.warm_up

    async def gated(worker: Worker) -> None:
        await release.wait()
        await real_warm_up(worker)

    monkeypatch.setattr(warmup_module, "warm_up", gated)
    async with spied_worker() as (client, worker, submitted):
        for path in ("/health", "/health_generate"):
            r = await client.get(path)
            assert r.status == 503 and (await r.json())["error"]["message"] == "warming up"
        pending = asyncio.ensure_future(
            client.post("/generate", json={"text": "held", "sampling_params": {"temperature": 0, "max_new_tokens": 2}})
        )
        for _ in range(20):
            await asyncio.sleep(0)
        assert not pending.done() and submitted == []  # held before reaching the engine
        release.set()
        r = await asyncio.wait_for(pending, 60)
        assert r.status == 200
        assert [req.prompt_ids for req in submitted][-1] == worker.tokenizer.encode("held")
        assert len(submitted) == 3  # two warmup requests, then the held one
        assert (await client.get("/health")).status == 200


async def test_no_warmup_serves_at_once_and_runs_nothing():
    async with spied_worker(warmup=False) as (client, worker, submitted):
        assert worker.ready.is_set() and (await client.get("/health")).status == 200
        assert submitted == []
    assert parse_config(["--no-warmup"]).warmup is False and parse_config([]).warmup is True


async def test_a_failing_warmup_still_serves(monkeypatch, caplog):
    async def broken(worker: Worker) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(warmup_module, "warm_up", broken)
    async with spied_worker() as (client, worker, _):
        await asyncio.wait_for(worker.ready.wait(), 10)
        assert (await client.get("/health")).status == 200
        assert "warmup failed: RuntimeError: boom" in caplog.text
