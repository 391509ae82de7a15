"""OTel: a ppd.route SERVER span per request with the decision attributes, CLIENT child spans per
worker call, the caller's traceparent honoured and forwarded; Prometheus /metrics."""

from __future__ import annotations

import asyncio
import functools

import pytest
from fake_sglang import FakeWorker, HeadersThenHold
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from router_harness import chat_body, eventually, router_over

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-03"


async def test_route_span_carries_the_decision_and_parents_the_worker_calls():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode", cached_tokens=9)
    async with router_over([p, d], tracer_provider=provider) as (client, state):
        for turn in (1, 2):
            r = await client.post(
                "/v1/chat/completions",
                json=chat_body(f"turn {turn}", ppd={"slo": {"ttft_ms": 900}}),
                headers={"X-PPD-Conversation-Id": "t1", "traceparent": TRACEPARENT},
            )
            assert r.status == 200
    spans = exporter.get_finished_spans()
    routes = [s for s in spans if s.name == "ppd.route"]
    assert len(routes) == 2 and all(s.kind == SpanKind.SERVER for s in routes)
    first, second = routes
    assert format(first.context.trace_id, "032x") == TRACE_ID, "the caller's traceparent is honoured"
    a = first.attributes
    assert a["gen_ai.conversation.id"] == "t1" and a["ppd.turn"] == 1 and a["ppd.route"] == "pd"
    assert a["ppd.policy"] == "ppd" and a["ppd.decode"] == d.url and a["ppd.prefill"] == p.url
    assert a["ppd.slo.ttft_ms"] == 900 and a["ppd.cached_tokens"] == 9 and a["ppd.kv_bytes"] > 0
    assert a["ppd.candidate.pd.ttft_ms"] > 0 and "ppd.reason" in a
    b = second.attributes
    assert b["ppd.route"] == "local" and b["ppd.turn"] == 2
    assert b["ppd.candidate.local.ttft_ms"] > 0 and "ppd.candidate.local.score" in b and "ppd.score" in b
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert {s.attributes["ppd.worker.role"] for s in clients} == {"prefill", "decode"}
    assert all(s.parent.span_id in {r.context.span_id for r in routes} for s in clients)
    assert all(s.name == "POST /v1/chat/completions" and s.attributes["server.address"] == "127.0.0.1" for s in clients)
    # the worker received the CLIENT span's context, in the caller's trace
    sent = d.seen[0].headers["traceparent"]
    assert sent.split("-")[1] == TRACE_ID
    assert sent.split("-")[2] in {format(s.context.span_id, "016x") for s in clients}


async def test_prometheus_metrics_count_routes_decisions_and_worker_health(pd_pair):
    client, state, p, d = pd_pair
    for _ in range(2):
        await client.post(
            "/v1/chat/completions",
            json=chat_body(stream=True, stream_options={"include_usage": True}),
            headers={"X-PPD-Conversation-Id": "m1"},
        )
    text = await (await client.get("/metrics")).text()
    assert 'ppd_requests_total{route="pd",turn_bucket="1"} 1.0' in text
    assert 'ppd_requests_total{route="local",turn_bucket="2-3"} 1.0' in text
    assert 'ppd_decisions_total{policy="ppd",route="local"} 1.0' in text
    assert 'ppd_ttft_seconds_count{route="pd"} 1.0' in text
    assert f'ppd_worker_healthy{{role="decode",worker="{d.url}"}} 1.0' in text
    assert "ppd_kv_bytes_total" in text and "ppd_prediction_error_ratio" in text


async def test_prediction_error_metric_reflects_the_cost_models_summary(pd_pair, monkeypatch):
    client, state, p, d = pd_pair
    monkeypatch.setattr(
        state.turns.cost_model,
        "error_summary",
        lambda: {"local": {"count": 4.0, "ttft_abs_pct_err": 25.0, "ttft_obs_over_pred": 1.2}},
    )
    text = await (await client.get("/metrics")).text()
    assert 'ppd_prediction_error_ratio{quantity="ttft_abs_err",route="local"} 0.25' in text
    assert 'ppd_prediction_error_ratio{quantity="ttft_obs_over_pred",route="local"} 1.2' in text
    assert 'quantity="count"' not in text


def test_tracer_provider_follows_the_standard_otel_env():
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.trace import NoOpTracerProvider

    from ppd_server.telemetry import make_tracer, tracer_provider_from_env

    assert isinstance(tracer_provider_from_env({}), NoOpTracerProvider)
    assert isinstance(
        tracer_provider_from_env(
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
        ),
        NoOpTracerProvider,
    )
    otlp = tracer_provider_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert isinstance(otlp, SdkProvider)
    otlp.shutdown()
    assert make_tracer(NoOpTracerProvider())[1] is False
    assert make_tracer(SdkProvider())[1] is True


# ------------------------------------------------------------------------------------------------
# A client that leaves while the router waits on a worker still ends every CLIENT span it
# started (an unended span is never exported: the trace would lack the worker call that hung).

# a non-streamed answer whose body never comes: the router waits in read()
JsonHeadersThenHold = functools.partial(
    HeadersThenHold, answer_headers={"Content-Type": "application/json", "Content-Length": "100"}
)


LAYOUTS = {  # which fake answers each role: held before its headers, or held after them (in read())
    "replica": (("unified", FakeWorker),),
    "replica-body": (("unified", JsonHeadersThenHold),),
    "pd": (("prefill", FakeWorker), ("decode", FakeWorker)),
    "pd-prefill-body": (("prefill", JsonHeadersThenHold), ("decode", FakeWorker)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_client_spans_end_when_the_client_leaves(layout):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    workers = [kind(role=role, hold=asyncio.Event()) for role, kind in LAYOUTS[layout]]
    async with router_over(workers, tracer_provider=provider) as (client, state):
        try:
            post = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
            await eventually(lambda: all(w.seen for w in workers))
            assert all(w.seen for w in workers)
            post.cancel()
            with pytest.raises(asyncio.CancelledError):
                await post
            await eventually(lambda: any(s.name == "ppd.route" for s in exporter.get_finished_spans()))
            await asyncio.sleep(0.05)
            calls = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
            assert len(calls) == len(workers), [s.name for s in exporter.get_finished_spans()]
            assert all(s.status.status_code == StatusCode.ERROR for s in calls)
        finally:
            for w in workers:
                w.hold.set()
