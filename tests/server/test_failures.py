"""Worker failures: prefill failure aborts the paired decode, retries pick a new pair with a new
bootstrap room, and nothing hangs."""

from __future__ import annotations

import asyncio

from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


async def test_prefill_failure_aborts_the_decode_and_returns_an_openai_error():
    p = FakeWorker(role="prefill", fail_status=500)
    d = FakeWorker(role="decode", hold=asyncio.Event())  # the decode would wait for KV forever
    async with router_over([p, d]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 502
        err = (await r.json())["error"]
        assert err["code"] == "prefill_error" and "fake prefill failure" in err["message"]
        assert set(err) == {"message", "type", "param", "code"}
        await asyncio.wait_for(d.aborted.wait(), timeout=10)  # the decode request was aborted
        assert state.registry.get(d.url).inflight == 0 and state.registry.get(p.url).inflight == 0


async def test_prefill_failure_on_a_stream_request_aborts_the_decode_too():
    p = FakeWorker(role="prefill", fail_status=500)
    d = FakeWorker(role="decode", hold=asyncio.Event())
    async with router_over([p, d]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        assert r.status == 502 and (await r.json())["error"]["code"] == "prefill_error"
        await asyncio.wait_for(d.aborted.wait(), timeout=10)


async def test_decode_503_is_retried_on_another_decode_with_a_fresh_room():
    p = FakeWorker(role="prefill")
    bad = FakeWorker(role="decode", fail_status=503)
    good = FakeWorker(role="decode", load={"num_running_reqs": 3})  # busier: the policy tries `bad` first
    async with router_over([p, bad, good]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 200 and r.headers["X-PPD-Decode"] == good.url
        assert len(bad.seen) == 1 and len(good.seen) == 1
        rooms = [s.body["bootstrap_room"] for s in p.seen]
        assert len(rooms) == 2 and rooms[0] != rooms[1]
        assert state.registry.get(bad.url).healthy is False
        # probed back in by the next poll once it answers again and its breaker's cooldown passed
        bad.fail_status = None
        state.registry.get(bad.url).down_until = 0.0
        await state.registry.poll_once(state.session, 2.0)
        assert state.registry.get(bad.url).healthy is True


async def test_connect_error_is_retried_on_another_worker():
    dead = FakeWorker(role="unified")
    alive = FakeWorker(role="unified", load={"num_running_reqs": 3})  # busier: the policy tries `dead` first
    async with router_over([dead, alive]) as (client, state):
        await dead.close()  # now nothing listens there
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=chat_body())
            assert r.status == 200 and r.headers["X-PPD-Decode"] == alive.url
        assert state.registry.get(dead.url).healthy is False and state.metrics.retries._value.get() == 1


async def test_all_workers_failing_ends_in_503_not_a_hang():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode", fail_status=503)
    async with router_over([p, d]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 503
        err = (await r.json())["error"]
        assert err["type"] == "server_error" and err["code"] in ("no_worker_available", "workers_unavailable")


async def test_decode_4xx_is_relayed_with_its_message():
    p = FakeWorker(role="prefill")
    d = FakeWorker(
        role="decode",
        fail_status=400,
        fail_body={
            "error": {
                "message": "The input (9999 tokens) is longer than the model's context length",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        },
    )
    async with router_over([p, d]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 400 and "context length" in (await r.json())["error"]["message"]
        assert state.registry.get(d.url).healthy, "a 400 is the request's fault, not the worker's"


async def test_load_falls_back_to_metrics_when_v1_loads_is_missing():
    u = FakeWorker(role="unified", loads_status=404, load={"num_running_reqs": 5})
    async with router_over([u]) as (client, state):
        w = state.registry.get(u.url)
        assert w.healthy and w.load_source == "metrics" and w.load.running_reqs == 5


async def test_a_worker_that_stops_answering_polls_is_taken_out_and_its_sessions_forgotten():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d]) as (client, state):
        await client.post("/v1/chat/completions", json=chat_body(), headers={"X-PPD-Conversation-Id": "gone"})
        d.loads_status = 500
        for _ in range(2):  # two failed polls in a row take it out
            await state.registry.poll_once(state.session, 2.0)
        assert state.registry.get(d.url).healthy is False
        view = state.turns.sessions.view("gone", now=__import__("time").monotonic())
        assert view is not None and view.decode_url is None, "its conversations re-place on their next turn"
        assert (await client.get("/health")).status == 503
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 503 and (await r.json())["error"]["code"] == "no_worker_available"


async def test_a_decode_giving_up_on_kv_that_never_came_takes_the_silent_prefill_out_too():
    """A prefill that hangs (its health still fine) while the decode, after waiting for the KV,
    answers 503: the pair is stuck, so the retry must not go through that prefill again (it goes
    D-local on the other decode) - not back to the hung prefill until every decode is out."""
    p = FakeWorker(role="prefill", hold=asyncio.Event())  # never answers
    gives_up = FakeWorker(role="decode", fail_status=503, hold=asyncio.Event())
    other = FakeWorker(role="decode", load={"num_running_reqs": 3})  # busier: `gives_up` is tried first
    async with router_over([p, gives_up, other]) as (client, state):
        asyncio.get_running_loop().call_later(1.2, gives_up.hold.set)  # 503 after waiting > 1 s
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 200, await r.text()
        assert r.headers["X-PPD-Route"] == "local" and r.headers["X-PPD-Decode"] == other.url
        assert state.registry.get(p.url).healthy is False and len(p.seen) == 1
        p.hold.set()


async def test_a_prefill_and_decode_timing_out_together_take_the_prefill_out_too():
    """Both legs of a P->D turn share one request timeout, so a hung prefill's leg times out in
    the same loop iteration as its decode's (waiting for the KV). The retry must not go through
    that prefill again: it goes D-local on the other decode, and the prefill is out. (Before the
    fix, a prefill leg that had already failed did not count as silent: only the decode was
    blamed, and every retry went P->D through the hung prefill - fresh-clone CI, prefill-hang.)"""
    p = FakeWorker(role="prefill", hold=asyncio.Event())  # never answers
    waits = FakeWorker(role="decode", hold=asyncio.Event())  # waits for KV that never comes
    other = FakeWorker(role="decode", load={"num_running_reqs": 3})  # busier: `waits` is tried first
    async with router_over([p, waits, other], request_timeout_s=0.5) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 200, await r.text()
        assert r.headers["X-PPD-Route"] == "local" and r.headers["X-PPD-Decode"] == other.url
        assert state.registry.get(p.url).healthy is False and len(p.seen) == 1
        assert state.registry.get(waits.url).healthy is False, "a timeout takes both legs of the pair out"
        p.hold.set()
        waits.hold.set()
