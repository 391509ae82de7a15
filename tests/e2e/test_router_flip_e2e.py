"""ppd flips with load, over the REAL prefill/decode workers of the shared cluster: an in-process
router (create_app) whose view of the decode worker's load is injected - no racing sleeps, no
synthetic traffic. Idle -> local; loaded -> pd; idle again -> local."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from processes import http_json

from ppd_server.config import PrefillSpec, RouterConfig
from ppd_server.fleet.loads import LoadReport
from ppd_server.http.app import STATE, create_app

pytestmark = pytest.mark.e2e

# a decode worker with a full batch AND a backed-up queue of prefills waiting for it
HEAVY = LoadReport(
    running_reqs=48, waiting_reqs=16, waiting_tokens=16_000, used_tokens=40_000, running_context_tokens=40_000
)


async def test_ppd_flips_to_pd_when_the_real_decode_is_loaded_and_back(ppd_router):
    status, listing = http_json("GET", f"{ppd_router}/admin/workers")
    assert status == 200
    prefill = next(w for w in listing["workers"] if w["role"] == "prefill")
    decode = next(w for w in listing["workers"] if w["role"] == "decode")
    # no background polls: the load the policy sees is exactly what the test sets
    cfg = RouterConfig(
        prefill=(PrefillSpec(prefill["url"], prefill["bootstrap_port"]),),
        decode=(decode["url"],),
        load_interval_s=3600.0,
    )
    app = create_app(cfg)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    state = app[STATE]
    model = (await (await client.get("/v1/models")).json())["data"][0]["id"]
    messages = [
        {"role": "system", "content": "You are a terse assistant. flip-e2e"},
        {"role": "user", "content": "List three colours."},
    ]

    async def turn(text: str | None = None) -> dict:
        if text:
            messages.append({"role": "user", "content": text})
        r = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": messages, "max_tokens": 4, "temperature": 0},
            headers={"X-PPD-Conversation-Id": "flip-e2e"},
        )
        assert r.status == 200, await r.text()
        body = await r.json()
        messages.append(body["choices"][0]["message"])
        return body["ppd"]

    question = "Now explain, in plain words and with an example for each one, why people like them. " * 6
    try:
        assert (await turn())["route"] == "pd"
        idle = await turn(question)
        assert idle["route"] == "local", idle["reason"]
        state.registry.get(decode["url"]).load = HEAVY
        loaded = await turn(question)
        assert loaded["route"] == "pd", loaded["reason"]
        assert loaded["predicted"]["local"]["ttft_ms"] > loaded["predicted"]["pd"]["ttft_ms"]
        state.registry.get(decode["url"]).load = LoadReport()
        again = await turn(question)
        assert again["route"] == "local", again["reason"]
        assert again["cached_tokens"] > 0
    finally:
        await client.close()
