"""OpenTelemetry wiring for the router.

Tracer provider: an explicit one (tests pass one with an InMemorySpanExporter), else one built
from the standard ``OTEL_*`` environment: an OTLP/HTTP exporter when ``OTEL_TRACES_EXPORTER``
names ``otlp`` or ``OTEL_EXPORTER_OTLP(_TRACES)_ENDPOINT`` is set, and no tracing otherwise
(a no-op tracer costs nothing on the hot path). Never the process-global provider: several apps
(tests) can live in one process.

Spans: ``ppd.route`` (SERVER, the parent taken from the request's W3C ``traceparent``) per request,
carrying the hints and the decision under the attribute names of ``ppd_sdk.wire`` (the SDK's span
uses the same); a CLIENT span per worker call (``POST /v1/chat/completions``) whose context
is injected into that call's headers.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from opentelemetry import propagate, trace
from opentelemetry.trace import NoOpTracerProvider, SpanKind, Tracer, TracerProvider

from ppd_sdk import wire
from ppd_server.routing.types import Decision

TRACER_NAME = "ppd_server"


def tracer_provider_from_env(environ: Mapping[str, str] | None = None) -> TracerProvider:
    env = os.environ if environ is None else environ
    exporters = {e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if "none" in exporters or not (exporters & {"otlp", "otlp_proto_http", "console"} or endpoint):
        return NoOpTracerProvider()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "ppd-server")})
    provider = SdkTracerProvider(resource=resource)
    if "console" in exporters:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if endpoint or exporters & {"otlp", "otlp_proto_http"}:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def make_tracer(provider: TracerProvider | None) -> tuple[Tracer, bool]:
    """The app's tracer and whether it records (a no-op one lets the hot path skip propagation:
    the caller's ``traceparent`` is then forwarded to the workers verbatim)."""
    provider = provider or tracer_provider_from_env()
    return provider.get_tracer(TRACER_NAME), not isinstance(provider, NoOpTracerProvider)


def extract_context(headers: Mapping[str, str]) -> Any:
    return propagate.extract(headers)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add ``traceparent``/``tracestate`` of the current span to ``headers`` (in place)."""
    propagate.inject(headers)
    return headers


def decision_attributes(decision: Decision) -> dict[str, Any]:
    """The decision's span attributes: the names the SDK's span uses too (``ppd_sdk.wire``), plus
    the weights the policy traded with (``ppd.policy.weights.*``)."""
    attrs = wire.route_attributes(
        decision.route, policy=decision.policy, reason=decision.reason, decode=decision.decode,
        prefill=decision.prefill, score=decision.score,
        predicted=((c.route, c.ttft_ms, c.tpot_ms, c.score) for c in decision.candidates))
    if decision.weights is not None:
        attrs[wire.ATTR_POLICY_WEIGHT_TTFT] = decision.weights.ttft
        attrs[wire.ATTR_POLICY_WEIGHT_TPOT] = decision.weights.tpot
    return attrs


__all__ = ["SpanKind", "trace", "make_tracer", "extract_context", "inject_headers", "decision_attributes",
           "tracer_provider_from_env"]
