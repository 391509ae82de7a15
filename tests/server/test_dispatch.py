"""Dispatch over fake SGLang workers: bootstrap fields, D-local, replica, the ppd field, headers."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web
from fake_sglang import FakeWorker, HeadersThenHold
from router_harness import chat_body, eventually, router_over

from ppd_sdk import wire
from ppd_server.config import RouterConfig
from ppd_server.http.app import STATE, create_app


async def test_turn1_goes_pd_with_identical_body_and_bootstrap_fields(pd_pair):
    client, state, p, d = pd_pair
    body = chat_body(ppd={"weights": {"ttft": 2, "tpot": 1}}, custom_field_xyz=5)
    r = await client.post("/v1/chat/completions", json=body, headers={"X-PPD-Conversation-Id": "c1"})
    assert r.status == 200, await r.text()
    assert r.headers[wire.HEADER_ROUTE] == "pd"
    assert r.headers[wire.HEADER_PREFILL] == p.url and r.headers[wire.HEADER_DECODE] == d.url
    assert r.headers[wire.HEADER_TURN] == "1"
    (ps,), (ds,) = p.seen, d.seen
    assert ps.body == ds.body, "prefill and decode must get the same body"
    assert ps.body["bootstrap_host"] == "127.0.0.1" and ps.body["bootstrap_port"] == 31998
    assert 0 <= ps.body["bootstrap_room"] < 2**63
    assert "ppd" not in ps.body and ps.body["custom_field_xyz"] == 5 and "do_local_prefill" not in ps.body
    info = wire.RouteInfo.model_validate((await r.json())["ppd"])
    assert (info.route, info.turn, info.conversation_id, info.decode, info.prefill) == ("pd", 1, "c1", d.url, p.url)
    assert info.predicted["pd"].ttft_ms > 0


async def test_turn2_goes_local_with_do_local_prefill_when_decode_idle(pd_pair):
    client, state, p, d = pd_pair
    d.cached_tokens = 7
    for turn in (1, 2):
        r = await client.post(
            "/v1/chat/completions", json=chat_body(f"turn {turn}"), headers={"X-PPD-Conversation-Id": "c2"}
        )
        assert r.status == 200
    assert r.headers[wire.HEADER_ROUTE] == "local" and r.headers[wire.HEADER_TURN] == "2"
    assert wire.HEADER_PREFILL not in r.headers
    last = d.seen[-1].body
    assert last["do_local_prefill"] is True and "bootstrap_room" not in last
    assert len(p.seen) == 1, "a D-local turn must not touch the prefill worker"
    body = await r.json()
    assert body["ppd"]["route"] == "local" and body["ppd"]["cached_tokens"] == 7
    assert "local" in body["ppd"]["predicted"] and body["ppd"]["reason"].startswith("local")


async def test_policy_pd_keeps_every_turn_on_pd():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d], policy="pd") as (client, state):
        for turn in (1, 2, 3):
            r = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-PPD-Conversation-Id": "c"})
            assert r.headers[wire.HEADER_ROUTE] == "pd" and r.headers[wire.HEADER_TURN] == str(turn)
        rooms = {s.body["bootstrap_room"] for s in d.seen}
        assert len(rooms) == 3, "a fresh bootstrap room per request"


async def test_replica_route_forwards_body_untouched_except_ppd():
    u = FakeWorker(role="unified")
    async with router_over([u]) as (client, state):
        body = chat_body(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            n=1,
            prompt_cache_key="conv-x",
            ppd={"turn": 1},
        )
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status == 200 and r.headers[wire.HEADER_ROUTE] == "replica"
        sent = u.seen[0].body
        expected = {k: v for k, v in body.items() if k != "ppd"}
        assert sent == expected
        assert (await r.json())["ppd"]["conversation_id"] == "conv-x"


async def test_completions_and_generate_paths():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d]) as (client, state):
        r = await client.post("/v1/completions", json={"model": "fake-model", "prompt": "Once", "max_tokens": 2})
        assert r.status == 200 and (await r.json())["ppd"]["route"] == "pd"
        r = await client.post(
            "/generate", json={"text": "Hello", "sampling_params": {"max_new_tokens": 2}, "rid": "r1"}
        )
        out = await r.json()
        assert r.status == 200 and out["ppd"]["route"] == "pd" and out["meta_info"]["prompt_tokens"] > 0
        assert d.seen[-1].body["rid"] == "r1" and d.seen[-1].path == "/generate"


async def test_request_id_forwarded_and_returned(pd_pair):
    client, state, p, d = pd_pair
    r = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-Request-Id": "my-req-1"})
    assert r.headers["x-request-id"] == "my-req-1"
    assert p.seen[0].headers["x-request-id"] == "my-req-1" == d.seen[0].headers["x-request-id"]
    r = await client.post("/v1/chat/completions", json=chat_body())
    assert r.headers["x-request-id"].startswith("ppd-")


async def test_models_health_and_admin_workers(pd_pair):
    client, state, p, d = pd_pair
    models = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["fake-model"]
    assert (await client.get("/health")).status == 200
    workers = (await (await client.get("/admin/workers")).json())["workers"]
    roles = {w["url"]: (w["role"], w["healthy"], w["can_local_prefill"]) for w in workers}
    assert roles == {p.url: ("prefill", True, False), d.url: ("decode", True, True)}
    json.dumps(workers)


async def test_fork_starts_on_the_parents_decode_worker_as_a_continuation(pd_pair):
    client, state, p, d = pd_pair
    d.cached_tokens = 5
    await client.post(
        "/v1/chat/completions", json=chat_body("parent turn"), headers={"X-PPD-Conversation-Id": "parent"}
    )
    r = await client.post(
        "/v1/chat/completions",
        json=chat_body("parent turn, then a branch"),
        headers={"X-PPD-Conversation-Id": "child", "X-PPD-Parent-Conversation-Id": "parent"},
    )
    info = (await r.json())["ppd"]
    assert info["conversation_id"] == "child" and info["decode"] == d.url
    assert info["route"] == "local", info["reason"]
    assert d.seen[-1].body["do_local_prefill"] is True


async def test_without_tracing_the_callers_traceparent_is_forwarded_verbatim(pd_pair):
    client, state, p, d = pd_pair
    assert state.tracing is False
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await client.post("/v1/chat/completions", json=chat_body(), headers={"traceparent": tp, "tracestate": "k=v"})
    assert p.seen[0].headers["traceparent"] == tp == d.seen[0].headers["traceparent"]
    assert d.seen[0].headers["tracestate"] == "k=v"


async def test_batches_get_one_bootstrap_room_per_sequence(pd_pair):
    client, state, p, d = pd_pair
    r = await client.post(
        "/generate", json={"input_ids": [[1, 2, 3], [4, 5]], "sampling_params": {"max_new_tokens": 1}}
    )
    assert r.status == 200
    body = d.seen[0].body
    assert body == p.seen[0].body
    assert body["bootstrap_host"] == ["127.0.0.1"] * 2 and body["bootstrap_port"] == [31998] * 2
    assert len(set(body["bootstrap_room"])) == 2 and all(0 <= x < 2**63 for x in body["bootstrap_room"])


async def test_every_completed_turn_feeds_the_cost_model_streamed_or_not(pd_pair, monkeypatch):
    client, state, p, d = pd_pair
    seen = []
    monkeypatch.setattr(state.turns.cost_model, "observe", seen.append)
    await client.post("/v1/chat/completions", json=chat_body(), headers={"X-PPD-Conversation-Id": "cm"})
    r = await client.post("/v1/chat/completions", json=chat_body(stream=True), headers={"X-PPD-Conversation-Id": "cm"})
    await r.read()
    plain, streamed = seen
    assert plain.route == "pd" and plain.ttft_ms is None and plain.e2e_ms > 0 and plain.completion_tokens == 3
    assert streamed.route == "local" and streamed.ttft_ms is not None and streamed.predicted_ttft_ms > 0


# ------------------------------------------------------------------------------------------------
# A client that leaves while a P->D turn waits on its workers aborts both worker requests
# (the handler is cancelled - aiohttp's handler_cancellation - and must not orphan the two legs).


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


# ------------------------------------------------------------------------------------------------
# A client that leaves after both P->D legs answered their headers (the router is reading the
# decode answer) aborts the prefill request too, not only the decode one: the prefill leg was left
# running in the background for a turn nobody waits for.


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


# ------------------------------------------------------------------------------------------------
# Served as ``web.run_app`` serves it (no handler cancellation), a streaming client that left
# before the worker's first byte makes ``out.prepare`` fail: that is a client gone, not an
# unexpected router error - the worker call is closed (its request aborted) and the turn is
# recorded as failed, with no traceback.


async def test_stream_client_gone_before_the_first_byte_closes_the_worker_call(caplog):
    u = FakeWorker(role="unified", n_tokens=200, hold=asyncio.Event())
    await u.start()
    app = create_app(RouterConfig(worker=(u.url,), load_interval_s=3600.0))
    runner = web.AppRunner(app)  # web.run_app's default: handler_cancellation=False
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(
            {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "stream": True}
        ).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        await eventually(lambda: u.seen)
        assert u.seen
        writer.close()  # the client leaves while the worker has not answered yet
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.ERROR, logger="ppd_server"):
            u.hold.set()  # the worker starts streaming to a router whose client is gone
            st = app[STATE]
            await eventually(lambda: st.metrics.errors.labels("worker")._value.get() == 1)
        assert st.metrics.errors.labels("worker")._value.get() == 1, "the turn was recorded as failed"
        assert st.registry.get(u.url).inflight == 0
        assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    finally:
        u.hold.set()
        await runner.cleanup()
        await u.close()
