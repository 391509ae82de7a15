"""The OpenAI / SGLang front door: ``/v1/chat/completions``, ``/v1/completions``, ``/generate``.

Parses only what routing needs (model, messages/prompt for the token count, max tokens,
stream flags, PPD hints), validates it (OpenAI-style 4xx), asks the TurnRouter for a decision,
and hands the body - untouched apart from removing ``ppd``, forcing ``include_usage`` on streams
and the dispatcher's bootstrap / ``do_local_prefill`` fields - to the Dispatcher, retrying on a
new pair when a worker fails before any byte reached the client.
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

from ppd_sdk import wire
from ppd_server.errors import RouterError, bad_request, error_response
from ppd_server.http.auth import TENANT, tenant_cache_salt
from ppd_server.metrics import turn_bucket
from ppd_server.request_path.attempt import Plan, RetryableFailure
from ppd_server.request_path.relay import Kind, TurnUsage
from ppd_server.request_path.turns import Turn
from ppd_server.routing.types import NoWorkerAvailable
from ppd_server.telemetry import decision_attributes, extract_context

if TYPE_CHECKING:
    from ppd_server.http.state import AppState

_FORWARDED_HEADERS = ("x-correlation-id",)  # x-request-id is always set (the client's or ours)
_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
_PROMPT_PARAM = {"chat": "messages", "completion": "prompt", "generate": "text"}


# Far above any real request's max_tokens; a bigger integer is a client bug, and some workers
# (C++/Rust parsers) fail on it instead of answering 400.
MAX_TOKENS_LIMIT = 2**31 - 1


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as e:  # includes invalid UTF-8 (UnicodeDecodeError)
        raise bad_request(f"could not parse the JSON body: {e}", code="invalid_json") from None
    except RecursionError:  # '[' x 100,000: the stdlib parser recurses per level
        raise bad_request("could not parse the JSON body: nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the JSON body must be an object", code="invalid_json")
    return body


def _positive_int(value: Any, param: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"{param} must be a positive integer, got {_short(value)}", param=param)
    if value > MAX_TOKENS_LIMIT:
        raise bad_request(f"{param} must be at most {MAX_TOKENS_LIMIT}, got {_short(value)}", param=param)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_header_safe(value: str | None, param: str) -> None:
    """Conversation ids are echoed in response headers: a control character (CR/LF header
    injection, NUL...) is a 400 here, not a broken response later."""
    if value is not None and not value.isprintable():
        raise bad_request(f"{param} must not contain control characters", param=param, code="invalid_ppd_hints")


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "replace"))
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_bytes(v) for k, v in value.items() if k in ("content", "text", "name", "arguments"))
    return 0


class FrontDoor:
    def __init__(self, state: AppState) -> None:
        self.state = state
        # prometheus ``labels()`` takes a lock and builds a key on every call: the few children
        # of the hot path (policies x routes x turn buckets) are looked up once and kept
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # request ids need to be unique, not secret: a seeded PRNG (from os.urandom) instead of
        # uuid4's system call per request; same shape (32 hex digits)
        self._ids = random.Random()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- parsing -------------------------------------------------------------------------

    def _check_model(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model is None:
            return
        if not isinstance(model, str):  # a list/object is unhashable: the set lookup would raise
            raise bad_request(f"'model' must be a string, got {model!r}", param="model")
        registry = self.state.registry
        if not registry.accepts_model(model):
            raise RouterError(
                404,
                f"The model `{model[:200]}` does not exist. Available: {', '.join(sorted(registry.model_names()))}",
                param="model",
                code="model_not_found",
            )

    def _measure(self, kind: Kind, body: dict[str, Any]) -> tuple[int, int, int]:
        """(prompt tokens, prompt bytes, max new tokens); raises 400 on a malformed prompt."""
        tc = self.state.turns.tokens
        if kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise bad_request("'messages' must be a non-empty array of message objects", param="messages")
            tools = body.get("tools")
            tools = tools if isinstance(tools, list) else None
            nbytes = tc.chat_bytes(messages, tools)
            tokens = tc.count_chat(messages, tools, nbytes)
            limit_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
            max_new = _positive_int(body.get(limit_param), limit_param, 128)
            return tokens, nbytes, max_new
        if kind == "completion":
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                tokens = tc.count_text(prompt)
            elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
                tokens = len(prompt)
            elif isinstance(prompt, list) and prompt and all(isinstance(t, str) for t in prompt):
                tokens = sum(tc.count_text(p) for p in prompt)
            else:
                raise bad_request(
                    "'prompt' must be a non-empty string, array of strings or array of token ids", param="prompt"
                )
            return tokens, _text_bytes(prompt), _positive_int(body.get("max_tokens"), "max_tokens", 16)
        text, ids = body.get("text"), body.get("input_ids")
        if isinstance(text, str) and text:
            tokens = tc.count_text(text)
        elif isinstance(text, list) and text and all(isinstance(t, str) for t in text):
            tokens = sum(tc.count_text(t) for t in text)
        elif isinstance(ids, list) and ids and all(isinstance(t, int) for t in ids):
            tokens = len(ids)
        elif isinstance(ids, list) and ids and all(isinstance(t, list) for t in ids):
            tokens = sum(len(t) for t in ids)
        else:
            raise bad_request("/generate needs 'text' or 'input_ids'", param="text")
        sp = body.get("sampling_params")
        if sp is not None and not isinstance(sp, dict):
            raise bad_request("'sampling_params' must be an object", param="sampling_params")
        max_new = _positive_int((sp or {}).get("max_new_tokens"), "sampling_params.max_new_tokens", 128)
        return tokens, _text_bytes(text), max_new

    def _check_capacity(self, kind: Kind, prompt_tokens: int) -> None:
        """Exact counts are checked against the smallest worker KV capacity; an estimate (learned
        bytes/token) only when it is over twice the capacity, since it can be off by tens of
        percent - in between, the worker's own 400 is relayed."""
        cap = self.state.registry.capacity_tokens()
        exact = self.state.turns.tokens.exact
        if cap and (prompt_tokens >= cap if exact else prompt_tokens > 2 * cap):
            about = "" if exact else "about "
            raise bad_request(
                f"This prompt has {about}{prompt_tokens} tokens; the workers hold at most {cap} tokens of context.",
                param=_PROMPT_PARAM[kind],
                code="context_length_exceeded",
            )

    # --- the handler ---------------------------------------------------------------------

    async def handle(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        st = self.state
        request_id = request.headers.get("x-request-id") or f"ppd-{self._ids.getrandbits(128):032x}"
        if st.tracing:
            span = st.tracer.start_span(
                "ppd.route",
                context=extract_context(request.headers),
                kind=SpanKind.SERVER,
                attributes={"http.route": request.path, "http.request.method": "POST"},
            )
        else:  # tracing off: the no-op span every call below throws away, without building one
            span = INVALID_SPAN
        try:
            return await self._handle(request, kind, request_id, span)
        except RouterError as e:
            span.set_status(Status(StatusCode.ERROR, e.message))
            span.set_attribute("error.type", e.code or str(e.status))
            st.metrics.errors.labels(str(e.status)).inc()
            return error_response(e, {"x-request-id": request_id})
        finally:
            span.end()

    async def _handle(self, request: web.Request, kind: Kind, request_id: str, span: Any) -> web.StreamResponse:
        st = self.state
        received = await request.read()
        body = _parse_body(received)
        raw: bytes | None = received  # None once the body is changed: the workers get it re-serialised
        if kind != "generate":
            self._check_model(body)
        prompt_tokens, prompt_bytes, max_new = self._measure(kind, body)
        try:
            hints = wire.parse_hints(request.headers, body)  # the one parse: Hints flow as they are from here
        except wire.WireError as e:
            raise bad_request(e.message, param=e.param, code="invalid_ppd_hints") from None
        for value, header, field in (
            (hints.conversation_id, wire.HEADER_CONVERSATION_ID, "conversation_id"),
            (hints.parent_conversation_id, wire.HEADER_PARENT_CONVERSATION_ID, "parent_conversation_id"),
        ):
            _check_header_safe(value, header if header in request.headers else f"{wire.BODY_FIELD}.{field}")
        self._check_capacity(kind, prompt_tokens)

        if wire.BODY_FIELD in body:
            del body[wire.BODY_FIELD]
            raw = None  # the workers get the body without it: re-serialised (worker_body.py)
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):  # "yes" must not silently mean either
            raise bad_request(f"'stream' must be a boolean, got {_short(stream)}", param="stream")
        so = body.get("stream_options")
        client_wants_usage = isinstance(so, dict) and bool(so.get("include_usage"))
        if stream and kind != "generate" and not (isinstance(so, dict) and so.get("include_usage") is True):
            body["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
            raw = None
        salt = body.get("cache_salt")
        if salt is not None and not isinstance(salt, str):
            raise bad_request(f"'cache_salt' must be a string, got {_short(salt)}", param="cache_salt")
        tenant = request.get(TENANT)
        if tenant is not None and not st.config.shared_prefix_cache:  # prod: per-tenant prefix caches
            body["cache_salt"] = tenant_cache_salt(tenant, salt)
            raw = None

        turn = st.turns.begin(hints, prompt_tokens, prompt_bytes, max_new, tenant)  # prod: tenant
        if st.tracing:  # the attribute dicts cost microseconds a no-op span would throw away
            span.set_attributes(wire.hint_attributes(hints, turn.request.turn))
            if st.config.log_content:  # prod: the operator's opt-in (--log-content); never on by default
                span.set_attribute("gen_ai.input.messages", json.dumps(body.get(_PROMPT_PARAM[kind])))
        worker_headers = {"Content-Type": "application/json", "x-request-id": request_id}
        # with tracing on, the dispatcher injects its own CLIENT span's context instead
        for h in _FORWARDED_HEADERS if st.tracing else _FORWARDED_HEADERS + _TRACE_HEADERS:
            if h in request.headers:
                worker_headers[h] = request.headers[h]

        last_failure: RetryableFailure | None = None
        for attempt in range(st.config.max_retries + 1):
            try:
                decision = st.turns.decide(turn)
            except NoWorkerAvailable as e:
                msg = str(e) + (f" (last failure: {last_failure})" if last_failure else "")
                raise RouterError(
                    503, msg or "no worker available", code="no_worker_available", retry_after_s=st.config.retry_after_s
                ) from None
            if st.tracing:
                span.set_attributes(decision_attributes(decision))
            if st.tracing:
                span.set_attribute("ppd.attempt", attempt)
            self._admit(decision)
            self._child(st.metrics.decisions, decision.policy, decision.route).inc()
            plan = self._plan(
                kind, request.path, body, turn, stream, client_wants_usage, request_id, worker_headers, span
            )
            plan.raw_body = raw
            # the link backlog counts this turn's KV until it has crossed: its first token (or its end)
            release = st.turns.link_backlog.hold(st.turns.predicted_kv_bytes(turn) if decision.route == "pd" else 0)
            plan.on_first_token = release
            try:
                return await st.dispatcher.run(request, plan)
            except RetryableFailure as f:
                last_failure = f
                st.registry.record_failure(f.url, f.reason)
                st.metrics.retries.inc()
            finally:
                release()
        raise RouterError(
            503,
            f"no worker could serve the request after {st.config.max_retries + 1} attempts: {last_failure}",
            code="workers_unavailable",
            retry_after_s=st.config.retry_after_s,
        )

    def _admit(self, decision: Any) -> None:
        """Admission control: a bounded queue per worker (the router's own in-flight count).
        Past it the request is refused early - 429 with Retry-After, which the SDK and the
        openai client honour - instead of queueing without bound and missing every SLO."""
        limit = self.state.config.max_queue_per_worker
        if not limit:
            return
        for url in (decision.decode, decision.prefill):
            w = self.state.registry.get(url)
            if w is not None and w.inflight >= limit:
                raise RouterError(
                    429,
                    f"the router's queue for worker {w.url} is full ({limit} requests in flight); retry later",
                    code="queue_full",
                    retry_after_s=self.state.config.retry_after_s,
                )

    def _plan(
        self,
        kind: Kind,
        path: str,
        body: dict[str, Any],
        turn: Turn,
        stream: bool,
        client_wants_usage: bool,
        request_id: str,
        worker_headers: dict[str, str],
        span: Any,
    ) -> Plan:
        st = self.state
        d = turn.decision
        assert d is not None
        client_headers = wire.route_headers(d.route, turn.request.turn, d.decode, d.prefill)
        client_headers["x-request-id"] = request_id
        if turn.conversation_id:
            client_headers[wire.HEADER_CONVERSATION_ID] = turn.conversation_id

        def finish(usage: TurnUsage, started_at: float, ok: bool) -> None:
            figures = st.turns.finish(turn, usage, started_at, ok)
            self._child(st.metrics.requests, d.route, turn_bucket(turn.request.turn)).inc()
            st.metrics.kv_bytes.inc(figures["kv_bytes"])
            if figures["ttft_ms"] is not None:
                self._child(st.metrics.ttft, d.route).observe(figures["ttft_ms"] / 1000.0)
            if figures["tpot_ms"] is not None:
                self._child(st.metrics.tpot, d.route).observe(figures["tpot_ms"] / 1000.0)
            if st.tracing:
                _record_figures(span, figures, usage)
            if not ok:
                span.set_status(Status(StatusCode.ERROR))
                st.metrics.errors.labels("worker").inc()

        return Plan(
            kind=kind,
            path=path,
            body=body,
            decision=d,
            stream=stream,
            client_wants_usage=client_wants_usage,
            client_headers=client_headers,
            worker_headers=worker_headers,
            route_info=lambda usage: st.turns.route_info(turn, usage),
            finish=finish,
            parent_context=_span_context(span) if st.tracing else None,
            started_at=time.perf_counter(),
        )


def _span_context(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def _record_figures(span: Any, figures: dict[str, Any], usage: TurnUsage) -> None:
    """The observed figures of a finished turn on its ``ppd.route`` span (tracing on only)."""
    if figures["ttft_ms"] is not None:
        span.set_attribute("ppd.observed.ttft_ms", figures["ttft_ms"])
    if figures["tpot_ms"] is not None:
        span.set_attribute("ppd.observed.tpot_ms", figures["tpot_ms"])
    span.set_attribute("ppd.cached_tokens", figures["cached_tokens"])
    span.set_attribute("ppd.kv_bytes", figures["kv_bytes"])
    span.set_attribute("gen_ai.usage.input_tokens", figures["prompt_tokens"])
    span.set_attribute("gen_ai.usage.cache_read.input_tokens", figures["cached_tokens"])
    if usage.completion_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
