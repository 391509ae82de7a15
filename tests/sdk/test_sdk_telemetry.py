"""One CLIENT span per turn (GenAI conventions + ppd.*), traceparent injected, client metrics."""

from __future__ import annotations

from typing import Any

import pytest
from session_driver import Driver
from fake_openai import FakeOpenAI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import ppd_sdk
from ppd_sdk import SLO


@pytest.fixture
def otel() -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tracer_provider, exporter, MeterProvider(metric_readers=[reader]), reader


def _metrics(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


async def test_one_span_per_turn_with_genai_and_ppd_attributes(driver: Driver, fake: FakeOpenAI, otel: Any) -> None:
    tracer_provider, exporter, meter_provider, reader = otel
    s = driver.session(model="m", conversation_id="c1", slo=SLO(ttft_ms=300), preset="interactive",
                       tracer_provider=tracer_provider, meter_provider=meter_provider)
    await driver.send(s, "hi", max_tokens=8, temperature=0)
    await driver.stream(s, "more")
    spans = exporter.get_finished_spans()
    assert [sp.name for sp in spans] == ["chat m", "chat m"]
    first, second = spans
    assert first.kind == SpanKind.CLIENT
    a = dict(first.attributes or {})
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "ppd"
    assert a["gen_ai.conversation.id"] == "c1" and a["gen_ai.request.model"] == "m"
    assert a["gen_ai.request.stream"] is False and a["gen_ai.request.max_tokens"] == 8
    assert (a["server.address"], a["server.port"]) == ("fake.test", 8080)
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] == 2
    assert a["gen_ai.usage.cache_read.input_tokens"] == 0
    assert a["ppd.slo.ttft_ms"] == 300 and a["ppd.weights.ttft"] == 2.0 and a["ppd.weights.tpot"] == 1.0
    assert a["ppd.route"] == "pd" and a["ppd.prefill"] == "http://p0" and a["ppd.turn"] == 1
    assert a["ppd.candidate.local.ttft_ms"] == 10.0 and a["ppd.candidate.pd.ttft_ms"] == 30.0
    assert not [k for k in a if k.startswith(("ppd.route.", "ppd.slo.weight"))]  # the router's names, no others
    b = dict(second.attributes or {})
    assert b["gen_ai.request.stream"] is True and b["ppd.route"] == "local" and b["ppd.turn"] == 2
    assert b["gen_ai.usage.cache_read.input_tokens"] > 0 and b["gen_ai.response.time_to_first_chunk"] >= 0
    # Each request carried its own span's W3C traceparent.
    for span, request in zip(spans, fake.requests[-2:]):
        version, trace_id, span_id, _flags = request.headers["traceparent"].split("-")
        assert (int(trace_id, 16), int(span_id, 16)) == (span.context.trace_id, span.context.span_id)
    metrics = _metrics(reader)
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"]) == 2
    token_types = sorted(p.attributes["gen_ai.token.type"] for p in metrics["gen_ai.client.token.usage"])
    assert token_types == ["input", "output"]
    assert sum(p.count for p in metrics["gen_ai.client.operation.time_to_first_chunk"]) == 1


async def test_failed_turn_span_has_error_type(driver: Driver, fake: FakeOpenAI, otel: Any) -> None:
    tracer_provider, exporter, meter_provider, reader = otel
    s = driver.session(model="m", tracer_provider=tracer_provider, meter_provider=meter_provider)
    fake.failures = [400]
    with pytest.raises(ppd_sdk.BadRequestError):
        await driver.send(s, "hi")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "400"
    (point,) = _metrics(reader)["gen_ai.client.operation.duration"]
    assert point.attributes["error.type"] == "400"


async def test_plain_server_span_has_no_route_attributes(driver: Driver, fake: FakeOpenAI, otel: Any) -> None:
    tracer_provider, exporter, _, _ = otel
    fake.routing = False
    s = driver.session(model="m", tracer_provider=tracer_provider, provider_name="openai")
    await driver.send(s, "hi")
    (span,) = exporter.get_finished_spans()
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert not [k for k in span.attributes if k.startswith("ppd.route")]


def test_abandoned_stream_ends_its_span_and_keeps_history(fake: FakeOpenAI, otel: Any) -> None:
    tracer_provider, exporter, _, _ = otel
    s = ppd_sdk.ChatSession(model="m", client=fake.client(), tracer_provider=tracer_provider)
    with s.stream("hi") as stream:
        next(iter(stream))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert s.turn == 0 and s.messages == []
    with pytest.raises(RuntimeError):
        _ = stream.reply


async def test_a_retried_turn_is_still_one_span_and_one_trace(driver: Driver, fake: FakeOpenAI, otel: Any) -> None:
    tracer_provider, exporter, _, _ = otel
    s = driver.session(model="m", tracer_provider=tracer_provider)
    fake.failures = [503]
    await driver.send(s, "hi")
    (span,) = exporter.get_finished_spans()
    parents = {r.headers["traceparent"] for r in fake.requests if r.url.path.endswith("/chat/completions")}
    assert len(parents) == 1 and f"{span.context.trace_id:032x}" in parents.pop()
    assert span.status.status_code != StatusCode.ERROR
    (event,) = span.events
    assert event.name == "ppd.retry" and event.attributes["error.type"] == "503"
