"""Overload: a bounded queue per worker (``max_queue_per_worker``, the router's own in-flight
count). Past it the router refuses early with 429 + ``Retry-After`` (OpenAI-shaped), and the SDK
waits that long and retries once, so a short burst costs the client latency, not an error."""

from __future__ import annotations

import asyncio

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, eventually, router_over

from ppd_sdk import AsyncChatSession
from ppd_server.config import ConfigError, RouterConfig


async def test_a_full_worker_queue_is_a_429_with_retry_after():
    hold = asyncio.Event()
    w = FakeWorker(role="unified", hold=hold)
    async with router_over([w], max_queue_per_worker=2, retry_after_s=2) as (client, state):
        held = [asyncio.create_task(client.post("/v1/chat/completions", json=chat_body())) for _ in range(2)]
        await eventually(lambda: len(w.seen) == 2)
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 429 and r.headers["Retry-After"] == "2"
        err = (await r.json())["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"
        assert len(w.seen) == 2  # refused before reaching the worker
        hold.set()
        assert [(await t).status for t in held] == [200, 200]
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 200  # the queue drained: admitted again


async def test_the_sdk_honours_retry_after_and_the_turn_succeeds():
    hold = asyncio.Event()
    w = FakeWorker(role="unified", hold=hold)
    async with router_over([w], max_queue_per_worker=1, retry_after_s=1) as (client, state):
        blocker = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
        await eventually(lambda: len(w.seen) == 1)
        asyncio.get_running_loop().call_later(0.3, hold.set)  # the burst ends before Retry-After
        base = str(client.make_url("/v1"))
        async with AsyncChatSession(base_url=base, model="fake-model", max_retries=1) as chat:
            reply = await chat.send("hello", max_tokens=3)
        assert reply.text and chat.turn == 1
        assert (await blocker).status == 200
        assert len(w.seen) == 2  # the refused attempt never reached the worker; the retry did
        assert 'ppd_request_errors_total{status="429"} 1.0' in state.metrics.render().decode()


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_queue_per_worker", -1),
        ("retry_after_s", 0),
        ("drain_timeout_s", -1.0),
        ("max_header_bytes", 100),
        ("first_byte_timeout_s", -0.5),
        ("breaker_cooldown_s", 120.0),
    ],
)
def test_bad_hardening_knobs_are_config_errors_naming_the_field(field, value):
    with pytest.raises(ConfigError) as e:
        RouterConfig(**{field: value}).validate()
    assert e.value.field == field
