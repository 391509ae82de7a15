"""A worker that answers 200 and then sends garbage inside its SSE stream (issue 8, section 1).

Whatever the garbage (binary, a line that is no SSE field, a data line that is not JSON, an
event that never ends), the client gets either the whole answer from another worker (nothing
had been relayed yet: the turn is retried) or the tokens relayed so far, then a clean SSE error
event and ``[DONE]`` - never a truncated body, never a hang, never the garbage itself. In-process
fake workers; the shaper's own rules are tested at the bottom."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest
from aiohttp import web
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_server.request_path.relay import MAX_EVENT_BYTES, SSEShaper

GARBAGE = {
    "binary": b"\xff\xfe\x00garbage\n\n",
    "not an SSE field": b"garbage line without a colon\n\n",
    "data not JSON": b"data: not json at all\n\n",
    "truncated JSON": b'data: {"choices": [{"delta": {"content": "x"\n\n',
    "usage not JSON": b'data: {"usage": {"prompt_tokens": }\n\n',
    "never ends": b"data: {" + b"x" * (MAX_EVENT_BYTES + 10),
}


@dataclass
class GarblesMidStream(FakeWorker):
    """Healthy to the poller; streams ``good_events`` token events, then ``garbage``, then holds
    the connection open (so only the router's check, not a closed connection, ends the stream)."""

    garbage: bytes = b""
    good_events: int = 2

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(self.good_events):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": "ok "}}],
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(self.garbage)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.aborted.set()  # the router dropped the request
            raise
        return resp


def events(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode("utf-8", "replace").split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize("kind", list(GARBAGE))
async def test_garbage_after_tokens_ends_the_stream_with_an_error_event_and_done(kind):
    bad = GarblesMidStream(role="unified", garbage=GARBAGE[kind])
    bad.aborted = asyncio.Event()
    async with router_over([bad], breaker_cooldown_s=30.0) as (client, state):
        r = await asyncio.wait_for(client.post("/v1/chat/completions", json=chat_body(stream=True)), 10)
        assert r.status == 200
        raw = await asyncio.wait_for(r.read(), 10)  # never a hang
        evs = events(raw)
        assert evs[-1] == "[DONE]", raw[-200:]
        err = json.loads(evs[-2])["error"]
        assert err["code"] == "worker_failed" and err["retryable"] is True
        assert "malformed stream" in err["message"]
        assert [json.loads(e)["choices"][0]["delta"]["content"] for e in evs[:-2]] == ["ok ", "ok "]
        assert len(evs) == 4 and len(raw) < 2000  # tokens, error, [DONE]: the garbage itself is not relayed
        assert await asyncio.wait_for(bad.aborted.wait(), 5) is True  # the worker's request was dropped
        w = state.registry.get(bad.url)
        assert not w.healthy and w.request_failures == 1  # the breaker keeps it out


async def test_garbage_before_any_token_is_retried_on_another_worker():
    bad = GarblesMidStream(role="unified", garbage=GARBAGE["data not JSON"], good_events=0)
    good = FakeWorker(role="unified", n_tokens=3, load={"num_running_reqs": 40, "num_waiting_reqs": 20})
    async with router_over([bad, good], policy="replica", breaker_cooldown_s=30.0) as (client, state):
        for i in range(8):
            r = await client.post(
                "/v1/chat/completions", json=chat_body(stream=True), headers={"X-PPD-Conversation-Id": f"g{i}"}
            )
            assert r.status == 200
            evs = events(await asyncio.wait_for(r.read(), 10))
            assert evs[-1] == "[DONE]" and not any('"error"' in e for e in evs)
            assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in evs[:-1]) == "tok " * 3
        assert len(bad.seen) == 1  # tried once, then kept out
        assert not state.registry.get(bad.url).healthy


async def test_the_openai_client_sees_an_api_error_not_a_parse_failure():
    openai = pytest.importorskip("openai")
    bad = GarblesMidStream(role="unified", garbage=GARBAGE["truncated JSON"])
    async with router_over([bad]) as (client, state):
        oa = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="x", max_retries=0)
        tokens = []
        with pytest.raises(openai.APIError) as exc:
            stream = await oa.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            async for chunk in stream:
                tokens.append(chunk.choices[0].delta.content)
        assert tokens == ["ok ", "ok "]
        assert "malformed stream" in str(exc.value)
        await oa.close()


# --- the shaper's rules -------------------------------------------------------------------


def _feed_all(shaper: SSEShaper, raw: bytes, size: int) -> bytes:
    return b"".join(shaper.feed(raw[i : i + size]) for i in range(0, len(raw), size)) + shaper.flush()


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_crlf_multiline_data_and_comments_are_well_formed(size):
    raw = (
        b": keep-alive\r\n\r\n"
        b'event: message\r\ndata: {"choices": [{"delta":\r\ndata:  {"content": "a"}}]}\r\n\r\n'
        b'data: {"choices": []}\r\n\r\ndata: [DONE]\r\n\r\n'
    )
    shaper = SSEShaper("chat", False, lambda u: {})
    out = _feed_all(shaper, raw, size)
    assert shaper.malformed is None and shaper.saw_done
    assert out.endswith(b"data: [DONE]\n\n") and b"\r" not in out


def test_nothing_after_done_is_relayed():
    shaper = SSEShaper("chat", False, lambda u: {})
    out = shaper.feed(b'data: {"choices": []}\n\ndata: [DONE]\n\ndata: {"late": 1}\n\ngarbage\n\n')
    assert out == b'data: {"choices": []}\n\ndata: [DONE]\n\n'
    assert shaper.feed(b"more garbage\n\n") == b"" and shaper.malformed is None


@pytest.mark.parametrize("kind", ["chat", "generate"])
def test_a_malformed_event_stops_the_relay_and_says_why(kind):
    shaper = SSEShaper(kind, False, lambda u: {})
    good = b'data: {"text": "a", "meta_info": {}}\n\n'
    out = shaper.feed(good + b"data: [1, 2]\n\n" + good)
    assert out == good and "not a JSON object" in (shaper.malformed or "")
    assert shaper.feed(good) == b"" and shaper.flush() == b""


async def test_garbage_from_the_decode_of_a_pd_pair_ends_the_stream_cleanly():
    prefill = FakeWorker(role="prefill")
    bad = GarblesMidStream(role="decode", garbage=GARBAGE["data not JSON"])
    bad.aborted = asyncio.Event()
    async with router_over([prefill, bad], policy="pd") as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        assert r.status == 200 and r.headers["X-PPD-Route"] == "pd"
        evs = events(await asyncio.wait_for(r.read(), 10))
        assert evs[-1] == "[DONE]" and json.loads(evs[-2])["error"]["code"] == "worker_failed"
        assert len(evs) == 4 and len(prefill.seen) == 1
        assert await asyncio.wait_for(bad.aborted.wait(), 5) is True
        assert not state.registry.get(bad.url).healthy and state.registry.get(prefill.url).healthy
