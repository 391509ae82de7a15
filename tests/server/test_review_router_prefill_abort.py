"""A client that leaves after both P->D legs answered their headers (the router is reading the
decode answer) aborts the prefill request too, not only the decode one: the prefill leg was left
running in the background for a turn nobody waits for."""

from __future__ import annotations

import asyncio

import pytest
from fake_sglang import HeadersThenHold
from router_harness import chat_body, eventually, router_over


@pytest.mark.parametrize("stream", [False, True])
async def test_client_leaving_mid_answer_aborts_the_prefill_leg(stream):
    p = HeadersThenHold(role="prefill", hold=asyncio.Event())
    d = HeadersThenHold(role="decode", hold=asyncio.Event())
    async with router_over([p, d]) as (client, state):
        try:
            post = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body(stream=stream)))
            await eventually(lambda: p.seen and d.seen)
            assert p.seen and d.seen
            await asyncio.sleep(0.05)  # both headers reached the router
            # A stream's response starts with its first relayed bytes (so a worker lost before
            # then is retried invisibly): the client is still waiting for headers when it leaves.
            post.cancel()
            with pytest.raises(asyncio.CancelledError):
                await post
            await asyncio.wait_for(d.aborted.wait(), timeout=5)
            await asyncio.wait_for(p.aborted.wait(), timeout=5)
        finally:
            p.hold.set()
            d.hold.set()
