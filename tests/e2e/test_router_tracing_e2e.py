"""The span tree of a real routed conversation: create_app in-process (InMemorySpanExporter)
over the real prefill/decode worker processes of the shared ``ppd_router`` cluster."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from processes import http_json

from ppd_server.config import PrefillSpec, RouterConfig
from ppd_server.http.app import create_app

pytestmark = pytest.mark.e2e


async def test_span_tree_of_a_two_turn_conversation_has_the_decision(ppd_router):
    status, listing = http_json("GET", f"{ppd_router}/admin/workers")
    assert status == 200
    workers = listing["workers"]
    prefill = next(w for w in workers if w["role"] == "prefill")
    decode = next(w for w in workers if w["role"] == "decode")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = RouterConfig(
        prefill=(PrefillSpec(prefill["url"], prefill["bootstrap_port"]),), decode=(decode["url"],), load_interval_s=0.5
    )
    client = TestClient(TestServer(create_app(cfg, tracer_provider=provider), host="127.0.0.1"))
    await client.start_server()
    try:
        model = (await (await client.get("/v1/models")).json())["data"][0]["id"]
        messages = [{"role": "user", "content": "Name a colour."}]
        for _turn in (1, 2):
            r = await client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": messages, "max_tokens": 8, "temperature": 0, "stream": True},
                headers={"X-PPD-Conversation-Id": "trace-e2e"},
            )
            assert r.status == 200
            await r.read()
            messages += [{"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one."}]
    finally:
        await client.close()
    spans = exporter.get_finished_spans()
    routes = sorted((s for s in spans if s.name == "ppd.route"), key=lambda s: s.attributes["ppd.turn"])
    assert [s.attributes["ppd.route"] for s in routes] == ["pd", "local"]
    for s in routes:
        a = s.attributes
        assert s.kind == SpanKind.SERVER and a["gen_ai.conversation.id"] == "trace-e2e"
        assert a["ppd.policy"] == "ppd" and a["ppd.decode"] == decode["url"] and a["ppd.reason"]
        assert a["ppd.candidate.pd.ttft_ms"] > 0 and a["ppd.observed.ttft_ms"] > 0
    assert routes[0].attributes["ppd.prefill"] == prefill["url"] and routes[0].attributes["ppd.kv_bytes"] > 0
    assert routes[1].attributes["ppd.cached_tokens"] > 0 and "ppd.candidate.local.score" in routes[1].attributes
    children = [s for s in spans if s.kind == SpanKind.CLIENT]
    by_parent = {
        r.context.span_id: [c.attributes["ppd.worker.role"] for c in children if c.parent.span_id == r.context.span_id]
        for r in routes
    }
    assert sorted(by_parent[routes[0].context.span_id]) == ["decode", "prefill"]
    assert by_parent[routes[1].context.span_id] == ["decode"]
