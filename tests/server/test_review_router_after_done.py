"""A worker connection that breaks AFTER the stream's ``data: [DONE]`` (before the chunked
terminator) must not append an error event and a second [DONE]: the client already has the whole
answer, and nothing may follow [DONE] in an OpenAI stream."""

from __future__ import annotations

import json

from aiohttp import web
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


class DropsAfterDone(FakeWorker):
    """A unified worker that streams a whole answer, then drops the connection instead of ending it."""

    async def _stream(self, request: web.Request, body, n: int, prompt: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            chunk = {"id": "c1", "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        request.transport.close()  # no terminating zero-length chunk
        return resp


async def test_a_connection_lost_after_done_adds_nothing_after_done():
    u = DropsAfterDone(role="unified", n_tokens=3)
    async with router_over([u]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True),
                              headers={"X-PPD-Conversation-Id": "after-done"})
        assert r.status == 200
        raw = (await r.read()).decode()
        evs = [e[len("data: "):] for e in raw.split("\n\n") if e.startswith("data: ")]
        assert evs.count("[DONE]") == 1 and evs[-1] == "[DONE]", raw
        assert not any('"error"' in e for e in evs), raw
        assert state.metrics.errors.labels("worker")._value.get() == 0
