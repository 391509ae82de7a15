"""Worker faults seen by the router (in-process fake workers; the real-process versions are in
tests/e2e/test_faults_workers.py): a worker that dies before the first byte reached the client
is retried on another worker, invisibly; one that dies after ends the stream with an SSE error
event and ``[DONE]``; with no worker left the answer is a 503 with ``Retry-After``."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from fake_sglang import FakeWorker, HeadersThenHold
from router_harness import chat_body, router_over


def events(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


class DiesMidRequest(FakeWorker):
    """Reads the request, then drops the connection without a byte of answer (a SIGKILLed worker)."""

    async def _serve(self, request):
        self.seen.append(await request.json())
        request.transport.close()
        return web.Response()


@pytest.mark.parametrize("stream", [True, False])
async def test_a_worker_dying_before_the_first_byte_is_retried_on_another(stream):
    dying = (
        DiesMidRequest(role="unified", n_tokens=5)
        if not stream
        else FakeWorker(role="unified", n_tokens=5, die_after_chunks=0)
    )
    healthy = FakeWorker(
        role="unified", n_tokens=5, load={"num_running_reqs": 40, "num_waiting_reqs": 20}
    )  # looks busy
    async with router_over([dying, healthy], policy="replica") as (client, state):
        for i in range(40):  # the tie-break hashes conversation id and URLs: some go to the dying one first
            if dying.seen and i >= 4:
                break
            r = await client.post(
                "/v1/chat/completions", json=chat_body(stream=stream), headers={"X-PPD-Conversation-Id": f"conv-{i}"}
            )
            assert r.status == 200
            if stream:
                evs = events(await r.read())
                assert evs[-1] == "[DONE]" and not any("error" in e for e in evs[:-1])
            else:
                assert (await r.json())["choices"][0]["message"]["content"]
        assert dying.seen, "the dying worker was never tried: the test proves nothing"
        assert state.registry.get(dying.url).healthy is False


async def test_a_stream_cut_after_tokens_ends_with_an_error_event_and_done():
    cut = FakeWorker(role="unified", n_tokens=6, die_after_chunks=2)
    async with router_over([cut]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        assert r.status == 200
        evs = events(await r.read())
        assert evs[-1] == "[DONE]"
        err = json.loads(evs[-2])["error"]
        assert err["code"] == "worker_failed" and err["retryable"] is True
        assert [json.loads(e)["choices"][0]["delta"]["content"] for e in evs[:2]] == ["tok ", "tok "]


async def test_no_worker_left_is_a_503_with_retry_after():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d], retry_after_s=3) as (client, state):
        state.registry.mark_down(p.url, "test")
        state.registry.mark_down(d.url, "test")
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 503 and r.headers["Retry-After"] == "3"
        assert (await r.json())["error"]["type"] == "server_error"


class Garbles(FakeWorker):
    """Healthy to the poller, but answers generations with 200 and a body that is not JSON."""

    async def _serve(self, request):
        self.seen.append(await request.json())
        return web.Response(body=b"\xff garbage {", content_type="application/json")


async def test_a_garbling_worker_is_retried_around_and_kept_out_by_the_breaker():
    bad = Garbles(role="unified")
    good = FakeWorker(role="unified", n_tokens=3, load={"num_running_reqs": 40, "num_waiting_reqs": 20})
    async with router_over([bad, good], policy="replica", breaker_cooldown_s=30.0) as (client, state):
        for i in range(6):
            r = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-PPD-Conversation-Id": f"g{i}"})
            assert r.status == 200
            assert (await r.json())["choices"][0]["message"]["content"] == "tok tok tok "
        assert len(bad.seen) == 1  # tried once, then out
        w = state.registry.get(bad.url)
        assert not w.healthy and w.request_failures == 1
        # Its polls succeed, but the open breaker keeps it out until the cooldown passed ...
        await state.registry.poll_once(state.session, timeout_s=2.0)
        assert not w.healthy
        # ... then it is half-open (back in); a second failure doubles the cooldown.
        w.down_until = 0.0
        await state.registry.poll_once(state.session, timeout_s=2.0)
        assert w.healthy
        state.registry.record_failure(bad.url, "again", now=1000.0)
        assert w.request_failures == 2 and w.down_until == 1000.0 + 60.0
        state.registry.record_success(bad.url)
        assert w.request_failures == 0


async def test_garbage_with_no_other_worker_is_a_503_never_relayed():
    async with router_over([Garbles(role="unified")], max_retries=0) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 503 and "not JSON" in (await r.json())["error"]["message"]


class HeadersThenSilence(FakeWorker):
    """Answers 200 + SSE headers, then never a byte (a hung worker)."""

    async def _serve(self, request):
        self.seen.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await self.hold.wait()  # set by the test when done
        return resp


async def test_a_hung_stream_is_retried_elsewhere_after_the_first_byte_timeout():
    hung = HeadersThenSilence(role="unified", hold=asyncio.Event())
    good = FakeWorker(role="unified", n_tokens=3, load={"num_running_reqs": 40, "num_waiting_reqs": 20})
    async with router_over([hung, good], policy="replica", first_byte_timeout_s=0.3) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        evs = events(await r.read())
        assert r.status == 200 and evs[-1] == "[DONE]" and not any("error" in e for e in evs)
        assert len(hung.seen) == 1 and not state.registry.get(hung.url).healthy
        hung.hold.set()


class GarblingPrefill(FakeWorker):
    """A prefill worker answering 200 with bytes that are neither JSON nor SSE."""

    async def _serve(self, request):
        self.seen.append(await request.json())
        return web.Response(status=200, body=b"\x00\xffgarbage", content_type="application/json")


class NeverAnswers(FakeWorker):
    """Takes the request and never sends a byte (a wedged worker, before its headers)."""

    async def _serve(self, request):
        self.seen.append(await request.json())
        await asyncio.Event().wait()


@pytest.mark.parametrize("stream", [True, False])
async def test_a_prefill_answering_garbage_is_a_prefill_failure(stream):
    p, d = GarblingPrefill(role="prefill"), FakeWorker(role="decode", n_tokens=4)
    async with router_over([p, d], policy="pd") as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=stream))
        # the retry has no prefill left: the decode worker serves it whole (or a clean 503 with pd)
        assert r.status in (200, 503)
        assert state.registry.get(p.url).healthy is False, "the garbling prefill is taken out"
        assert state.registry.get(d.url).healthy is True, "the decode worker is not blamed"


class Trickles(FakeWorker):
    """Answers its headers, then a blank line every 0.1 s, never finishing (a prefill still "running")."""

    async def _serve(self, request):
        self.seen.append(await request.json())
        out = web.StreamResponse(headers={"Content-Type": "application/json"})
        await out.prepare(request)
        while True:
            await out.write(b"\n")
            await asyncio.sleep(0.1)


async def test_a_stuck_pd_pair_takes_out_the_prefill_too():
    """Decode silent past the request timeout while its paired prefill still runs: either leg may
    be the stuck one (each waits for the other's KV), so both breakers open and the retry goes
    D-local on the other decode worker instead of into the same stuck prefill."""
    p, stuck_d = Trickles(role="prefill"), NeverAnswers(role="decode")
    good = FakeWorker(role="decode", n_tokens=4, load={"num_running_reqs": 30})  # looks busy: tried second
    async with router_over([p, stuck_d, good], request_timeout_s=0.5) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-PPD-Conversation-Id": "c"})
        assert stuck_d.seen, "the stuck pair was tried: the test proves nothing otherwise"
        assert r.status == 200, await r.text()
        assert state.registry.get(p.url).healthy is False and state.registry.get(stuck_d.url).healthy is False
        assert r.headers["X-PPD-Route"] == "local" and r.headers["X-PPD-Decode"] == good.url


async def test_a_silent_stream_with_its_prefill_still_running_takes_out_both():
    """First-byte timeout on the decode leg while the paired prefill still runs: both breakers open."""
    p, silent = Trickles(role="prefill"), HeadersThenHold(role="decode", hold=asyncio.Event())
    good = FakeWorker(role="decode", n_tokens=4, load={"num_running_reqs": 30})
    async with router_over([p, silent, good], first_byte_timeout_s=0.3) as (client, state):
        r = await client.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"X-PPD-Conversation-Id": "c"}
        )
        assert silent.seen and r.status == 200
        assert events(await r.read())[-1] == "[DONE]"
        assert not state.registry.get(p.url).healthy and not state.registry.get(silent.url).healthy
        assert r.headers["X-PPD-Route"] == "local" and r.headers["X-PPD-Decode"] == good.url


async def test_a_decode_dying_before_a_byte_does_not_take_out_its_prefill():
    p, dying = Trickles(role="prefill"), FakeWorker(role="decode", n_tokens=4, die_after_chunks=0)
    good = FakeWorker(role="decode", n_tokens=4, load={"num_running_reqs": 30})
    async with router_over([p, dying, good]) as (client, state):
        r = await client.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"X-PPD-Conversation-Id": "c"}
        )
        assert dying.seen and r.status == 200
        assert state.registry.get(p.url).healthy, "a decode that died is not a stuck pair"
        assert not state.registry.get(dying.url).healthy
