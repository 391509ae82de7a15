"""Admin API: workers, sessions, policy read/change at run time (validated), admin key."""

from __future__ import annotations

from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


async def test_policy_can_be_changed_at_run_time_and_is_validated():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d], admin_key="adm") as (client, state):
        auth = {"Authorization": "Bearer adm"}
        assert (await client.get("/admin/policy")).status == 401
        got = await (await client.get("/admin/policy", headers=auth)).json()
        assert got["spec"] == "ppd" and "pd" in got["available"]
        r = await client.put("/admin/policy", json={"params": {"w_tpot": 3.0}}, headers=auth)
        assert r.status == 200 and (await r.json())["params"]["w_tpot"] == 3.0
        r = await client.put("/admin/policy", json={"spec": "nonsense"}, headers=auth)
        assert r.status == 400 and (await r.json())["error"]["param"] == "spec"
        r = await client.put("/admin/policy", json={"params": {"w_tpot": -1}}, headers=auth)
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_policy"
        r = await client.put("/admin/policy", json={"spec": "pd"}, headers=auth)
        assert (await r.json())["spec"] == "pd"
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=chat_body(), headers={"X-PPD-Conversation-Id": "a"})
            assert r.headers["X-PPD-Route"] == "pd"


async def test_sessions_and_workers_listing():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d]) as (client, state):
        await client.post("/v1/chat/completions", json=chat_body(), headers={"X-PPD-Conversation-Id": "conv-1"})
        s = await (await client.get("/admin/sessions")).json()
        assert s["count"] == 1 and s["sessions"][0]["conversation_id"] == "conv-1"
        assert s["sessions"][0]["decode_url"] == d.url
        assert (await client.get("/admin/sessions?limit=x")).status == 400
        w = await (await client.get("/admin/workers")).json()
        assert {x["role"] for x in w["workers"]} == {"prefill", "decode"}
        cm = await (await client.get("/admin/cost_model")).json()
        assert set(cm["coefficients"]) == {p.url, d.url}


async def test_sglang_router_endpoints_for_benchmark_tools():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d]) as (client, state):
        r = await client.post("/flush_cache")
        assert r.status == 200 and (await r.json())["flushed"] and (p.flushes, d.flushes) == (1, 1)
        d.fail_status = 400
        assert (await client.post("/flush_cache")).status == 400
        assert (await (await client.get("/model_info")).json())["architectures"] == ["LlamaForCausalLM"]
        info = await (await client.get("/get_server_info")).json()
        assert info["policy"] == "ppd" and len(info["workers"]) == 2
