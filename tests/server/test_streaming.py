"""Streaming relay: SSE passes through, usage observed, ``ppd`` on the final usage chunk, and a
worker dying mid-stream ends the client's stream with a valid error event and [DONE]."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from fake_sglang import FakeWorker, HeadersThenHold
from router_harness import chat_body, eventually, router_over


def events(raw: bytes) -> list[str]:
    return [e[len("data: ") :] for e in raw.decode().split("\n\n") if e.startswith("data: ")]


async def test_chat_stream_with_usage_carries_ppd_on_the_usage_chunk(pd_pair):
    client, state, p, d = pd_pair
    d.n_tokens, d.cached_tokens = 4, 2
    r = await client.post(
        "/v1/chat/completions",
        json=chat_body(stream=True, stream_options={"include_usage": True}),
        headers={"X-PPD-Conversation-Id": "s1"},
    )
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["X-PPD-Route"] == "pd"
    evs = events(await r.read())
    assert evs[-1] == "[DONE]"
    chunks = [json.loads(e) for e in evs[:-1]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:-1]] == ["tok "] * 4
    final = chunks[-1]
    assert final["choices"] == [] and final["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
    assert final["ppd"]["route"] == "pd" and final["ppd"]["cached_tokens"] == 2 and final["ppd"]["turn"] == 1


async def test_stream_without_include_usage_drops_the_extra_usage_chunk(pd_pair):
    client, state, p, d = pd_pair
    r = await client.post("/v1/chat/completions", json=chat_body(stream=True), headers={"X-PPD-Conversation-Id": "s2"})
    evs = events(await r.read())
    assert evs[-1] == "[DONE]" and len(evs) == d.n_tokens + 1
    assert all(json.loads(e)["choices"] for e in evs[:-1]), "no usage-only chunk the client did not ask for"
    assert d.seen[0].body["stream_options"] == {"include_usage": True}, "the router always asks the worker for usage"
    # the router still observed the usage: the session knows the turn completed
    view = state.turns.sessions.view("s2", now=1e12 * 0 + __import__("time").monotonic())
    assert view is not None and view.turns == 1


async def test_generate_stream_final_chunk_carries_ppd():
    u = FakeWorker(role="unified", n_tokens=3)
    async with router_over([u]) as (client, state):
        r = await client.post(
            "/generate", json={"input_ids": [1, 2, 3, 4], "stream": True, "sampling_params": {"max_new_tokens": 3}}
        )
        evs = events(await r.read())
        chunks = [json.loads(e) for e in evs[:-1]]
        assert evs[-1] == "[DONE]" and "ppd" not in chunks[0] and chunks[-1]["ppd"]["route"] == "replica"
        assert chunks[-1]["text"] == "xxx", "cumulative text passes through untouched"


async def test_worker_dying_mid_stream_gives_a_valid_error_event_then_done(pd_pair):
    client, state, p, d = pd_pair
    d.n_tokens, d.die_after_chunks = 5, 2
    r = await client.post("/v1/chat/completions", json=chat_body(stream=True, stream_options={"include_usage": True}))
    assert r.status == 200
    evs = events(await r.read())
    assert evs[-1] == "[DONE]"
    error = json.loads(evs[-2])["error"]
    assert error["code"] == "worker_failed" and d.url in error["message"] and error["type"] == "server_error"
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in evs[:2]] == ["tok ", "tok "]


async def test_worker_dying_before_answering_non_streaming_is_a_clean_error():
    u = FakeWorker(role="unified", n_tokens=5, die_after_chunks=0)
    async with router_over([u], max_retries=0) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        # Nothing was relayed yet, so the stream never started: a plain 503 the client may retry
        # (with more than one worker the router retries it itself, see test_faults_router.py).
        assert r.status == 503 and "Retry-After" in r.headers
        assert (await r.json())["error"]["code"] == "workers_unavailable"


# ------------------------------------------------------------------------------------------------
# A worker connection that breaks AFTER the stream's ``data: [DONE]`` (before the chunked
# terminator) must not append an error event and a second [DONE]: the client already has the whole
# answer, and nothing may follow [DONE] in an OpenAI stream.


class DropsAfterDone(FakeWorker):
    """A unified worker that streams a whole answer, then drops the connection instead of ending it."""

    async def _stream(self, request: web.Request, body, n: int, prompt: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(n):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}],
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        request.transport.close()  # no terminating zero-length chunk
        return resp


async def test_a_connection_lost_after_done_adds_nothing_after_done():
    u = DropsAfterDone(role="unified", n_tokens=3)
    async with router_over([u]) as (client, state):
        r = await client.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"X-PPD-Conversation-Id": "after-done"}
        )
        assert r.status == 200
        raw = (await r.read()).decode()
        evs = [e[len("data: ") :] for e in raw.split("\n\n") if e.startswith("data: ")]
        assert evs.count("[DONE]") == 1 and evs[-1] == "[DONE]", raw
        assert not any('"error"' in e for e in evs), raw
        assert state.metrics.errors.labels("worker")._value.get() == 0


class FirstTokenThenHold(FakeWorker):
    """Streams one token, then holds the rest of the answer until ``hold`` is set."""

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delta = {"index": 0, "delta": {"content": "tok "}, "finish_reason": None}
        await resp.write(b"data: " + json.dumps({"id": "c1", "choices": [delta]}).encode() + b"\n\n")
        assert self.hold is not None
        await self.hold.wait()
        done = {"index": 0, "delta": {}, "finish_reason": "length"}
        await resp.write(b"data: " + json.dumps({"id": "c1", "choices": [done]}).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.mark.parametrize("decode_cls", [HeadersThenHold, FirstTokenThenHold])
async def test_a_pd_turn_counts_as_link_backlog_until_its_first_token(decode_cls):
    """The policy prices a new transfer behind the KV still crossing the link: a P->D turn's bytes
    count from its decision until its first token (the decode worker had the KV), not to its end."""
    p, d = FakeWorker(role="prefill"), decode_cls(role="decode", hold=asyncio.Event())
    async with router_over([p, d]) as (client, state):
        body = chat_body("x" * 400, stream=True)
        task = asyncio.create_task(
            client.post("/v1/chat/completions", json=body, headers={"X-PPD-Conversation-Id": "c"})
        )
        await eventually(lambda: len(d.seen) == 1 if decode_cls is HeadersThenHold else bool(p.seen))
        await asyncio.sleep(0.05)  # the first token, if any, has reached the router
        held = state.turns.link_backlog.bytes
        d.hold.set()
        r = await task
        await r.read()
        assert (held > 0) is (decode_cls is HeadersThenHold)
        assert state.turns.link_backlog.bytes == 0


class DoneThenHold(FakeWorker):
    """Sends a token and ``[DONE]``, then keeps its own stream open until ``hold`` is set."""

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delta = {"index": 0, "delta": {"content": "tok "}, "finish_reason": "length"}
        await resp.write(b"data: " + json.dumps({"id": "c1", "choices": [delta]}).encode() + b"\n\ndata: [DONE]\n\n")
        assert self.hold is not None
        await self.hold.wait()
        await resp.write_eof()
        return resp


async def test_the_clients_stream_ends_at_done_even_while_the_worker_keeps_its_own_open():
    """Nothing may follow [DONE]: the client's stream ends with it, not when the worker ends its."""
    u = DoneThenHold(role="unified", hold=asyncio.Event())
    async with router_over([u]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        raw = (await asyncio.wait_for(r.read(), 5)).decode()
        assert raw.endswith("data: [DONE]\n\n") and raw.count("[DONE]") == 1, raw
        assert not u.hold.is_set()
        u.hold.set()
        assert state.metrics.errors.labels("worker")._value.get() == 0
