"""OpenTelemetry for sessions: one CLIENT span per turn following the GenAI semantic
conventions, plus the session's hints and the server's routing decision under the same
attribute names the router's ``ppd.route`` span uses (:mod:`ppd_sdk.wire`: ``ppd.turn``,
``ppd.weights.*``, ``ppd.slo.*``, ``ppd.route``, ``ppd.candidate.*``...); the W3C
``traceparent`` of that span is injected into the request headers so the router's
``ppd.route`` span joins the same trace; and the three GenAI client metrics. Only
``opentelemetry-api`` is used: with no SDK installed everything is a no-op, and nothing is
ever configured globally (explicit providers win, else the global ones).

Content: prompts and completions are never put on a span unless the application opts in with
the OpenTelemetry GenAI convention's switch, ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``
(read when a session is created); then the turn's span carries ``gen_ai.input.messages`` and
``gen_ai.output.messages`` (JSON).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from ._exceptions import PPDError
from ._types import Reply
from ._version import __version__
from .wire import ATTR_CONVERSATION_ID, route_attributes

# GenAI semantic-convention names, hard-coded like other SDKs do (the semconv package
# marks them deprecated while they move to semantic-conventions-genai).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
CONVERSATION_ID = ATTR_CONVERSATION_ID
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TTFC = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
TOKEN_TYPE = "gen_ai.token.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def capture_content_from_env() -> bool:
    """The GenAI instrumentations' opt-in for recording message content (off unless ``true``)."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("true", "1")


METRIC_DURATION = "gen_ai.client.operation.duration"
METRIC_TOKENS = "gen_ai.client.token.usage"
METRIC_TTFC = "gen_ai.client.operation.time_to_first_chunk"
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 .. 81.92 s
_TOKEN_BUCKETS = [float(4**i) for i in range(14)]  # 1 .. 67108864


class Telemetry:
    """Tracer and instruments of one session (shared by its forks)."""

    def __init__(
        self,
        provider_name: str,
        server_address: str | None,
        server_port: int | None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.provider_name = provider_name
        self.server_address = server_address
        self.server_port = server_port
        self.tracer = trace.get_tracer("ppd_sdk", __version__, tracer_provider=tracer_provider)
        self.capture_content = capture_content_from_env()
        meter = get_meter("ppd_sdk", __version__, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            METRIC_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            METRIC_TOKENS,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.ttfc = meter.create_histogram(
            METRIC_TTFC,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )

    def start_turn(self, model: str, conversation_id: str, stream: bool, request: Mapping[str, Any]) -> TurnSpan:
        attrs: dict[str, Any] = {
            OPERATION: "chat",
            PROVIDER: self.provider_name,
            REQUEST_MODEL: model,
            CONVERSATION_ID: conversation_id,
            REQUEST_STREAM: stream,
        }
        if self.server_address:
            attrs[SERVER_ADDRESS] = self.server_address
        if self.server_port:
            attrs[SERVER_PORT] = self.server_port
        max_tokens = request.get("max_tokens", request.get("max_completion_tokens"))
        if isinstance(max_tokens, int):
            attrs[REQUEST_MAX_TOKENS] = max_tokens
        if isinstance(request.get("temperature"), (int, float)):
            attrs[REQUEST_TEMPERATURE] = float(request["temperature"])
        if self.capture_content and request.get("messages") is not None:
            attrs[INPUT_MESSAGES] = json.dumps(request["messages"], default=str)
        span = self.tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs)
        return TurnSpan(self, span, attrs)


class TurnSpan:
    """The span of one turn. ``inject`` adds its traceparent to outgoing headers;
    exactly one of ``finish`` / ``fail`` ends it."""

    def __init__(self, telemetry: Telemetry, span: trace.Span, base_attrs: Mapping[str, Any]) -> None:
        self._t = telemetry
        self.span = span
        self._metric_attrs = {
            k: v
            for k, v in base_attrs.items()
            if k in (OPERATION, PROVIDER, REQUEST_MODEL, SERVER_ADDRESS, SERVER_PORT)
        }

    def inject(self, headers: dict[str, str]) -> None:
        propagate.inject(headers, context=trace.set_span_in_context(self.span))

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.span.set_attributes(attributes)

    def retried(self, error: PPDError, wait_s: float) -> None:
        """Record that an attempt failed before any token and is being retried."""
        status = getattr(error, "status_code", None)
        self.span.add_event(
            "ppd.retry", {ERROR_TYPE: str(status) if status else type(error).__name__, "ppd.retry.wait_s": wait_s}
        )

    def finish(self, reply: Reply, duration_s: float) -> None:
        span = self.span
        span.set_attribute(RESPONSE_MODEL, reply.model)
        if reply.response_id:
            span.set_attribute(RESPONSE_ID, reply.response_id)
        if reply.finish_reason:
            span.set_attribute(RESPONSE_FINISH_REASONS, [reply.finish_reason])
        span.set_attribute(USAGE_INPUT, reply.usage.prompt_tokens)
        span.set_attribute(USAGE_OUTPUT, reply.usage.completion_tokens)
        if reply.usage.cached_tokens is not None:
            span.set_attribute(USAGE_CACHE_READ, reply.usage.cached_tokens)
        if reply.ttft_s is not None:
            span.set_attribute(RESPONSE_TTFC, reply.ttft_s)
        if self._t.capture_content:
            span.set_attribute(OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": reply.text}]))
        if reply.route is not None:
            for key, value in _route_attributes(reply).items():
                span.set_attribute(key, value)
        span.end()
        attrs = {**self._metric_attrs, RESPONSE_MODEL: reply.model}
        self._t.duration.record(duration_s, attrs)
        self._t.tokens.record(reply.usage.prompt_tokens, {**attrs, TOKEN_TYPE: "input"})
        self._t.tokens.record(reply.usage.completion_tokens, {**attrs, TOKEN_TYPE: "output"})
        if reply.ttft_s is not None:
            self._t.ttfc.record(reply.ttft_s, attrs)

    def fail(self, error: PPDError, duration_s: float) -> None:
        status = getattr(error, "status_code", None)
        error_type = str(status) if status else type(error).__name__
        self.span.set_attribute(ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, error.message))
        self.span.end()
        self._t.duration.record(duration_s, {**self._metric_attrs, ERROR_TYPE: error_type})


def _route_attributes(reply: Reply) -> dict[str, Any]:
    route = reply.route
    assert route is not None
    return route_attributes(
        route.route,
        policy=route.policy,
        reason=route.reason,
        decode=route.decode,
        prefill=route.prefill,
        score=(route.predicted["local"].score if "local" in route.predicted else None),
        cached_tokens=route.cached_tokens,
        predicted=((name, p.ttft_ms, p.tpot_ms, p.score) for name, p in route.predicted.items()),
    )
