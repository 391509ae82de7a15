"""A client that leaves while a P->D turn waits on its workers aborts both worker requests
(the handler is cancelled - aiohttp's handler_cancellation - and must not orphan the two legs)."""

from __future__ import annotations

import asyncio

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


@pytest.mark.parametrize("stream", [False, True])
async def test_client_leaving_during_pd_aborts_prefill_and_decode(stream):
    p = FakeWorker(role="prefill", hold=asyncio.Event())
    d = FakeWorker(role="decode", hold=asyncio.Event())
    async with router_over([p, d]) as (client, state):
        try:
            await _leave_and_check(client, state, p, d, stream)
        finally:  # let any still-held worker request end, so the fakes can shut down
            p.hold.set()
            d.hold.set()


async def _leave_and_check(client, state, p: FakeWorker, d: FakeWorker, stream: bool) -> None:
    post = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body(stream=stream)))
    for _ in range(200):  # both legs reached their workers
        if p.seen and d.seen:
            break
        await asyncio.sleep(0.01)
    assert p.seen and d.seen
    post.cancel()  # the client goes away: its connection is closed
    with pytest.raises(asyncio.CancelledError):
        await post
    await asyncio.wait_for(d.aborted.wait(), timeout=5)
    await asyncio.wait_for(p.aborted.wait(), timeout=5)
    for _ in range(200):
        if state.registry.get(d.url).inflight == 0 and state.registry.get(p.url).inflight == 0:
            break
        await asyncio.sleep(0.01)
    assert state.registry.get(d.url).inflight == 0 and state.registry.get(p.url).inflight == 0
