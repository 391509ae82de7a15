"""Sending one routed turn to the workers and relaying the answer (the DESIGN wire contract).

* ``pd``: the SAME body to the prefill and the decode worker, concurrently, with SGLang's
  ``bootstrap_host`` / ``bootstrap_port`` / ``bootstrap_room`` (a fresh random room < 2^63 per
  attempt). The decode answer is relayed; the prefill answer is drained. A prefill failure aborts
  the paired decode request (its connection is closed, so the worker aborts it) and the client
  gets an OpenAI-style error (or an SSE error event + ``[DONE]`` once a stream has started).
* ``local``: the body + ``do_local_prefill: true`` to the decode worker.
* ``replica``: the body to a unified worker.

:class:`RetryableFailure` is raised only before any byte reached the client (connect error,
502/503, a worker that dies or cuts its answer before the first byte was relayed: streams start
the client's response with their first relayed bytes); the caller takes the worker out,
re-decides and retries on a new pair.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from ppd_server.errors import RouterError, error_response, sse_error_event
from ppd_server.fleet.workers import WorkerRegistry
from ppd_server.request_path.relay import Kind, RouteInfoFn, SSEShaper, TurnUsage, shape_json
from ppd_server.request_path.upstream import UpstreamPool, UpstreamResponse
from ppd_server.routing.types import Decision

_CLIENT_GONE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
_UPSTREAM_BROKE = (asyncio.TimeoutError, OSError)  # UpstreamError is an OSError


class RetryableFailure(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(slots=True)
class Plan:
    """One attempt: where to send what, and how to answer."""

    kind: Kind
    path: str
    body: dict[str, Any]  # already without the ``ppd`` field
    decision: Decision
    stream: bool
    client_wants_usage: bool
    client_headers: dict[str, str]  # X-PPD-*, x-request-id
    worker_headers: dict[str, str]  # forwarded to the workers
    route_info: RouteInfoFn
    finish: Callable[[TurnUsage, float, bool], None]  # (usage, started_at, ok)
    parent_context: Any = None
    started_at: float = field(default_factory=time.perf_counter)
    # called once when a stream's first token arrives (for P->D: its KV has crossed the link)
    on_first_token: Callable[[], None] | None = None


@dataclass(slots=True)
class _Call:
    resp: UpstreamResponse
    span: trace.Span

    def close(self, ok: bool = True) -> None:
        """End the call: the connection goes back to the pool if its answer was read whole."""
        self.resp.release()
        if not ok:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


class Dispatcher:
    def __init__(
        self,
        pool: UpstreamPool,
        registry: WorkerRegistry,
        tracer: Tracer | None,
        background: set[asyncio.Task],
        first_byte_timeout_s: float = 0.0,
    ) -> None:
        """``tracer`` None = tracing off: no CLIENT spans, the caller's trace headers pass through.
        ``first_byte_timeout_s`` > 0: a stream whose worker sends nothing for that long after its
        headers (a hung worker) is abandoned and retried elsewhere, since the client has no byte yet."""
        self.first_byte_timeout_s = first_byte_timeout_s
        self.pool = pool
        self.registry = registry
        self.tracer = tracer
        self.background = background

    async def run(self, request: web.Request, plan: Plan) -> web.StreamResponse:
        d = plan.decision
        decode = self.registry.get(d.decode)
        if decode is None:
            raise RetryableFailure(str(d.decode), "unknown decode worker")
        decode.inflight += 1
        if d.route == "local":
            decode.local_load.commit(id(plan), d.prefill_tokens, d.output_tokens)
        try:
            if d.route == "pd":
                return await self._pd(request, plan)
            body = dict(plan.body, do_local_prefill=True) if d.route == "local" else plan.body
            call = await self._open(
                decode.url, plan, json.dumps(body).encode(), "decode" if d.route == "local" else "unified"
            )
            return await self._answer(request, plan, call, prefill=None)
        finally:
            decode.release(time.monotonic())
            decode.local_load.release(id(plan))

    # --- P->D ------------------------------------------------------------------------------

    async def _pd(self, request: web.Request, plan: Plan) -> web.StreamResponse:
        d = plan.decision
        prefill = self.registry.get(d.prefill)
        if prefill is None:
            raise RetryableFailure(str(d.prefill), "unknown prefill worker")
        n = batch_size(plan.kind, plan.body)
        if n == 1:
            body = dict(
                plan.body,
                bootstrap_host=prefill.host,
                bootstrap_port=prefill.bootstrap_port,
                bootstrap_room=secrets.randbits(63),
            )
        else:  # SGLang pairs each item of a batch through its own room
            body = dict(
                plan.body,
                bootstrap_host=[prefill.host] * n,
                bootstrap_port=[prefill.bootstrap_port] * n,
                bootstrap_room=[secrets.randbits(63) for _ in range(n)],
            )
        data = json.dumps(body).encode()
        prefill_task = asyncio.create_task(self._prefill(prefill.url, plan, data))
        decode_task = asyncio.create_task(self._open(str(d.decode), plan, data, "decode"))
        try:
            await asyncio.wait((prefill_task, decode_task), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (the client left): asyncio.wait does not cancel the legs
            await _discard(decode_task)
            await _discard(prefill_task)
            raise
        if prefill_task.done() and prefill_task.exception() is not None:
            e = prefill_task.exception()
            decode_ok = decode_task.done() and not decode_task.cancelled() and decode_task.exception() is None
            if isinstance(e, RetryableFailure) and "Timeout" in e.reason and not decode_ok:  # prod
                self.registry.record_failure(str(d.decode), "stuck P->D pair: " + e.reason)  # either may be stuck
            await _discard(decode_task)
            raise prefill_task.exception()  # type: ignore[misc]
        try:
            call = await decode_task
        except BaseException as e:
            if isinstance(e, RetryableFailure) and "Timeout" in e.reason and not prefill_task.done():  # prod
                self.registry.record_failure(prefill.url, "stuck P->D pair: " + e.reason)  # either may be stuck
            await _discard(prefill_task)
            raise
        if call.resp.status != 200:
            await _discard(prefill_task)
        return await self._answer(request, plan, call, prefill=prefill_task)

    async def _prefill(self, url: str, plan: Plan, data: bytes) -> None:
        """Send to the prefill worker and drain its answer; raise on failure."""
        worker = self.registry.get(url)
        if worker:
            worker.inflight += 1
        try:
            call = await self._open(url, plan, data, "prefill")
            try:
                raw = await call.resp.read()
            except _UPSTREAM_BROKE as e:
                call.close(ok=False)
                raise RetryableFailure(url, f"prefill answer broke off: {type(e).__name__}") from None
            except BaseException:  # cancelled
                call.close(ok=False)
                raise
            call.close(ok=call.resp.status == 200)
            if call.resp.status != 200:
                raise _worker_error(call.resp.status, raw, "prefill")
            if raw.lstrip()[:1] not in (b"{", b"[", b"d", b"e", b":", b""):  # prod: neither JSON nor SSE
                raise RetryableFailure(url, "prefill answered 200 with a body that is neither JSON nor SSE")
            self.registry.record_success(url)
        finally:
            if worker:
                worker.release(time.monotonic())

    # --- common ----------------------------------------------------------------------------

    async def _open(self, url: str, plan: Plan, data: bytes, role: str) -> _Call:
        if self.tracer is None:
            span: trace.Span = trace.INVALID_SPAN
            headers = plan.worker_headers
        else:
            host, _, port = url.split("//", 1)[-1].rpartition(":")
            span = self.tracer.start_span(
                f"POST {plan.path}",
                context=plan.parent_context,
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": "POST",
                    "server.address": host,
                    "server.port": int(port) if port.isdigit() else 80,
                    "url.full": url + plan.path,
                    "ppd.worker.role": role,
                },
            )
            headers = dict(plan.worker_headers)
            propagate.inject(headers, context=trace.set_span_in_context(span, plan.parent_context))
        try:
            resp = await self.pool.post(url, plan.path, data, headers)
        except _UPSTREAM_BROKE as e:
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            span.end()
            raise RetryableFailure(url, f"{type(e).__name__}: {e}") from None
        except BaseException:  # cancelled (the client left, or the paired leg failed)
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
            span.end()
            raise
        span.set_attribute("http.response.status_code", resp.status)
        call = _Call(resp, span)
        if resp.status in (502, 503):
            with suppress(*_UPSTREAM_BROKE):
                await resp.read()
            call.close(ok=False)
            raise RetryableFailure(url, f"answered HTTP {resp.status}")
        return call

    async def _answer(
        self, request: web.Request, plan: Plan, call: _Call, prefill: asyncio.Task | None
    ) -> web.StreamResponse:
        if call.resp.status != 200:
            raw = await _read_quietly(call.resp)
            call.close(ok=False)
            plan.finish(TurnUsage(), plan.started_at, False)
            return error_response(_worker_error(call.resp.status, raw, "decode"), plan.client_headers)
        prefill_error: list[BaseException] = []
        if prefill is not None:

            def on_prefill_done(t: asyncio.Task) -> None:
                if not t.cancelled() and t.exception() is not None:
                    prefill_error.append(t.exception())  # type: ignore[arg-type]
                    call.resp.close()  # abort the paired decode request

            prefill.add_done_callback(on_prefill_done)
            self.background.add(prefill)
            prefill.add_done_callback(self.background.discard)
        if plan.stream:
            return await self._relay_stream(request, plan, call, prefill_error, prefill)
        try:
            raw = await call.resp.read()
        except _UPSTREAM_BROKE as e:
            call.close(ok=False)
            if prefill_error and isinstance(prefill_error[0], RetryableFailure):
                raise prefill_error[0] from None
            if not prefill_error:  # nothing reached the client: the turn is retried on another pair
                if prefill is not None:
                    prefill.cancel()
                raise RetryableFailure(str(plan.decision.decode), f"failed mid-request: {type(e).__name__}") from None
            err = _as_router_error(prefill_error[0])
            plan.finish(TurnUsage(), plan.started_at, False)
            return error_response(err, plan.client_headers)
        except BaseException:  # cancelled: the client left
            call.close(ok=False)
            if prefill is not None:
                prefill.cancel()  # its turn is abandoned: abort the prefill request too
            raise
        call.close()
        body, usage = shape_json(plan.kind, raw, plan.route_info)
        if body is raw and not _is_json(raw):  # a garbled answer; the client has nothing yet
            if prefill is not None:
                prefill.cancel()
            raise RetryableFailure(str(plan.decision.decode), "answered 200 with a body that is not JSON")
        self.registry.record_success(plan.decision.decode)
        plan.finish(usage, plan.started_at, True)
        return web.Response(body=body, status=200, content_type="application/json", headers=plan.client_headers)

    async def _relay_stream(
        self,
        request: web.Request,
        plan: Plan,
        call: _Call,
        prefill_error: list[BaseException],
        prefill: asyncio.Task | None,
    ) -> web.StreamResponse:
        """Relay the worker's SSE. The client's response starts with the first bytes to send, not
        before: a worker that dies before that (killed, stream cut, prefill lost) raises
        RetryableFailure and the turn is re-dispatched on another pair, invisibly to the client.
        Once bytes went out, a failure (a cut, a malformed event: relay.py) ends the stream with an
        SSE error event and ``[DONE]``."""
        out = _RelayResponse(
            status=200,
            headers={**plan.client_headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        shaper = SSEShaper(plan.kind, plan.client_wants_usage, plan.route_info)
        finished = False

        def finish(ok: bool) -> None:
            # Record the turn BEFORE the client can see the stream's end: a client that sends
            # its next turn right after [DONE] must find this one in the session table.
            nonlocal finished
            if not finished:
                finished = True
                plan.finish(shaper.usage, plan.started_at, ok)

        ok = False
        retry: RetryableFailure | None = None
        chunks = _first_within(call.resp.iter_chunks(), self.first_byte_timeout_s)
        last = b""
        try:
            broke: RouterError | None = None
            try:
                async for chunk in chunks:
                    data = shaper.feed(chunk)
                    if plan.on_first_token is not None and shaper.usage.first_token_at is not None:
                        plan.on_first_token()
                        plan.on_first_token = None
                    if shaper.saw_done:
                        finish(not shaper.saw_error and not prefill_error)
                        # nothing may follow [DONE]: it goes out with the response's end, in one
                        # write, now; the worker's own end is read after (see below)
                        last = data
                        break
                    if data:
                        if not out.prepared:
                            await out.prepare(request)
                        await out.write(data)
                    if shaper.malformed is not None:
                        break  # closing the call below aborts the worker's request
                tail = shaper.flush()
                if tail:
                    if not out.prepared:
                        await out.prepare(request)
                    await out.write(tail)
                if shaper.malformed is not None:
                    broke = RouterError(
                        502,
                        f"worker {plan.decision.decode} sent a malformed stream: {shaper.malformed}",
                        code="worker_failed",
                        retryable=True,
                    )
                    if out.prepared:  # (not yet: the retry below takes the worker out)
                        self.registry.record_failure(str(plan.decision.decode), broke.message)
                elif not shaper.saw_done:
                    broke = RouterError(
                        502,
                        f"worker {plan.decision.decode} ended the stream early",
                        code="worker_failed",
                        retryable=True,
                    )
            except _CLIENT_GONE:
                raise
            except _UPSTREAM_BROKE as e:
                # after [DONE] the client has the whole answer and nothing may follow it
                broke = (
                    None
                    if shaper.saw_done
                    else RouterError(
                        502,
                        f"worker {plan.decision.decode} failed mid-stream: {type(e).__name__}",
                        code="worker_failed",
                        retryable=True,
                    )
                )
            if prefill_error and not shaper.saw_done:
                broke = _as_router_error(prefill_error[0])
            if broke is not None and not out.prepared:
                # Nothing reached the client: retry elsewhere when the fault is a worker's.
                if prefill_error and isinstance(prefill_error[0], RetryableFailure):
                    retry = prefill_error[0]
                elif not prefill_error and broke.retryable:
                    retry = RetryableFailure(str(plan.decision.decode), broke.message)
                    if prefill is not None and not prefill.done() and "Timeout" in broke.message:  # prod: either
                        # leg of a silent P->D pair may be the stuck one (a decode that died is not a stuck pair)
                        self.registry.record_failure(str(plan.decision.prefill), "stuck P->D pair: " + broke.message)
                if retry is None:
                    finish(False)
                    return error_response(broke, plan.client_headers)
                raise retry
            ok = broke is None and not shaper.saw_error
            if ok:
                self.registry.record_success(plan.decision.decode)
            if not out.prepared:
                await out.prepare(request)
            if broke is not None and not shaper.saw_error:
                finish(False)
                await out.write(sse_error_event(broke))
            await out.write_eof(last)
            if shaper.saw_done:  # the worker's end of the stream: its connection can then be reused
                with suppress(*_UPSTREAM_BROKE):
                    async for _ in chunks:
                        pass
        except _CLIENT_GONE:
            pass  # client went away: closing the worker call below aborts its request
        finally:
            call.close(ok=ok)
            if not ok and prefill is not None:
                prefill.cancel()  # the turn failed or its client left: abort the prefill request too
            if retry is None:
                finish(ok)
        return out


class _RelayResponse(web.StreamResponse):
    """The client's side of a relayed stream. Its headers go out with its first bytes, in one
    write, instead of a write of their own at ``prepare()`` (aiohttp's ``web.Response`` does the
    same): the relay prepares only right before it writes."""

    _send_headers_immediately = False


def batch_size(kind: Kind, body: dict[str, Any]) -> int:
    """How many sequences one request carries (SGLang wants one bootstrap room per sequence):
    ``/generate`` text lists and ``input_ids`` lists of lists, completion prompt lists, chat ``n``."""
    if kind == "chat":
        n = body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    items = body.get("prompt") if kind == "completion" else body.get("text", body.get("input_ids"))
    if kind == "generate" and items is None:
        items = body.get("input_ids")
    if isinstance(items, list) and items and isinstance(items[0], (str, list)):
        return len(items)
    return 1


async def _discard(task: asyncio.Task) -> None:
    """Cancel a leg that is no longer needed; close its connection if it already answered."""
    if not task.done():
        task.cancel()
    with suppress(BaseException):
        result = await task
        if isinstance(result, _Call):
            result.close(ok=False)


def _first_within(chunks: AsyncIterator[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    """``chunks``, raising asyncio.TimeoutError when the first one takes over ``timeout_s`` (0 = no
    limit: ``chunks`` itself, one async-generator hop per chunk less)."""
    return _with_first_timeout(chunks, timeout_s) if timeout_s > 0 else chunks


async def _with_first_timeout(chunks: AsyncIterator[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    try:
        first = await asyncio.wait_for(chunks.__anext__(), timeout_s)
    except StopAsyncIteration:
        return
    yield first
    async for chunk in chunks:
        yield chunk


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


async def _read_quietly(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read()
    except _UPSTREAM_BROKE:
        return b""


def _worker_error(status: int, raw: bytes, role: str) -> RouterError:
    """A worker's non-200 answer as the client sees it (its own message kept when OpenAI-style)."""
    message = raw.decode("utf-8", "replace")[:2000]
    param = code = None
    try:
        obj = json.loads(raw)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message", message))
            param, code = err.get("param"), err.get("code")
        elif isinstance(obj, dict) and isinstance(obj.get("message"), str):
            message = obj["message"]
    except ValueError:
        pass
    if 400 <= status < 500:
        return RouterError(status, message, param=param, code=code)
    return RouterError(502, f"{role} worker error (HTTP {status}): {message}", code=f"{role}_error")


def _as_router_error(exc: BaseException) -> RouterError:
    if isinstance(exc, RouterError):
        return exc
    if isinstance(exc, RetryableFailure):
        return RouterError(502, f"prefill worker failed: {exc.reason}", code="prefill_error", retryable=True)
    return RouterError(502, f"prefill worker failed: {type(exc).__name__}", code="prefill_error")
