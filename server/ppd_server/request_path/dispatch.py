"""Sending one routed turn to the workers and relaying the answer (the DESIGN wire contract).

* ``pd``: the SAME body to the prefill and the decode worker, concurrently, with SGLang's
  ``bootstrap_host`` / ``bootstrap_port`` / ``bootstrap_room`` (a fresh random room < 2^63 per
  attempt). The decode answer is relayed; the prefill answer is drained. A prefill failure aborts
  the paired decode request (its connection is closed, so the worker aborts it) and the client
  gets an OpenAI-style error (or an SSE error event + ``[DONE]`` once a stream has started).
* ``local``: the body + ``do_local_prefill: true`` to the decode worker.
* ``replica``: the body to a unified worker.

``RetryableFailure`` (``attempt.py``) is raised only before any byte reached the client (connect
error, 502/503, a streamed call without response headers within ``header_timeout_s``, a worker
that dies or cuts its answer before the first byte was relayed: streams
start the client's response with their first relayed bytes, ``stream_relay.py``); the caller takes
the worker out, re-decides and retries on a new pair.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from contextlib import suppress
from typing import Any, NoReturn

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from ppd_server.errors import RouterError, error_response
from ppd_server.fleet.workers import WorkerRegistry
from ppd_server.request_path.attempt import (
    UPSTREAM_BROKE,
    Call,
    Plan,
    RetryableFailure,
    as_router_error,
    prefill_silent,
)
from ppd_server.request_path.relay import Kind, TurnUsage, shape_json
from ppd_server.request_path.stream_relay import relay_stream
from ppd_server.request_path.upstream import UpstreamPool, UpstreamResponse
from ppd_server.request_path.worker_body import members_prefix, worker_body

# A decode worker that gives up on a P->D turn (HTTP 5xx) after waiting this long while the
# prefill leg has not answered was most likely waiting for KV that never came: the pair is
# stuck, so the prefill worker is taken out too (as on a timeout). Quicker 5xx answers are the
# decode's own failure (overloaded, dying) and leave a working prefill in.
STUCK_PAIR_AFTER_S = 1.0


class Dispatcher:
    def __init__(
        self,
        pool: UpstreamPool,
        registry: WorkerRegistry,
        tracer: Tracer | None,
        background: set[asyncio.Task],
        first_byte_timeout_s: float = 0.0,
        header_timeout_s: float = 0.0,
    ) -> None:
        """``tracer`` None = tracing off: no CLIENT spans, the caller's trace headers pass through.
        ``first_byte_timeout_s`` > 0: a stream whose worker sends nothing for that long after its
        headers (a hung worker) is abandoned and retried elsewhere, since the client has no byte yet."""
        self.first_byte_timeout_s = first_byte_timeout_s
        # streams only: a non-streamed answer's headers come with the whole answer
        self.header_timeout_s = header_timeout_s or None
        self.pool = pool
        self.registry = registry
        self.tracer = tracer
        self.background = background
        # bootstrap rooms need to be distinct, not secret: a seeded PRNG (from os.urandom) instead
        # of a system call per room (``secrets``)
        self._rooms = random.Random()
        # per (bootstrap host, port): '"bootstrap_host": ..., "bootstrap_port": ..., "' (worker_body.py)
        self._bootstrap_members: dict[tuple[str, Any], bytes] = {}

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
            local = d.route == "local"
            data = worker_body(plan.body, plan.raw_body, {"do_local_prefill": True} if local else None)
            call = await self._open(decode.url, plan, data, "decode" if local else "unified")
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
        rooms = self._rooms
        members = None
        if n == 1:
            host, port, room = prefill.host, prefill.bootstrap_port, rooms.getrandbits(63)
            extra: dict[str, Any] = {"bootstrap_host": host, "bootstrap_port": port, "bootstrap_room": room}
            prefix = self._bootstrap_members.get((host, port))
            if prefix is None:
                prefix = self._bootstrap_members[(host, port)] = members_prefix(
                    {"bootstrap_host": host, "bootstrap_port": port}
                )
            members = b'%sbootstrap_room": %d' % (prefix, room)
        else:  # SGLang pairs each item of a batch through its own room
            extra = {
                "bootstrap_host": [prefill.host] * n,
                "bootstrap_port": [prefill.bootstrap_port] * n,
                "bootstrap_room": [rooms.getrandbits(63) for _ in range(n)],
            }
        data = worker_body(plan.body, plan.raw_body, extra, members)
        # The prefill leg runs in a task of its own; the decode leg opens in this one (a task and
        # an asyncio.wait less per turn). A prefill that fails while the decode leg is still
        # waiting for its headers cancels this task: the decode request is aborted (its
        # connection closed) and the prefill's error is what the turn fails with, as before.
        prefill_task = asyncio.create_task(self._prefill(prefill.url, plan, data))
        me = asyncio.current_task()
        opening, cancelled_it = True, False

        def on_prefill_done(t: asyncio.Task) -> None:
            nonlocal cancelled_it
            if opening and me is not None and not t.cancelled() and t.exception() is not None:
                cancelled_it = True
                me.cancel()

        prefill_task.add_done_callback(on_prefill_done)
        try:
            await asyncio.sleep(0)  # the prefill leg's request goes out first, as it always did
            opened_at = time.monotonic()
            call = await self._open(str(d.decode), plan, data, "decode")
        except asyncio.CancelledError:
            opening = False
            if not cancelled_it or _uncancel(me):  # the client left (too): abort the prefill leg as well
                await _discard(prefill_task)
                raise
            self._prefill_failed(prefill_task, str(d.decode), decode_ok=False)
        except BaseException as e:
            opening = False
            if isinstance(e, RetryableFailure) and prefill_silent(prefill_task):
                waited = time.monotonic() - opened_at >= STUCK_PAIR_AFTER_S
                if e.reason.startswith("answered HTTP 5") and waited:
                    # the decode gave up waiting for a KV the prefill never sent: the prefill's failure,
                    # not the decode's (blaming both let a hung prefill, probed back in after each
                    # cooldown, take out one decode per probe until none was left)
                    await _discard(prefill_task)
                    raise RetryableFailure(
                        prefill.url, f"stuck P->D pair: decode {e.url} {e.reason} while the prefill was silent"
                    ) from None
                if "Timeout" in e.reason or e.reason.startswith("answered HTTP 5"):  # prod
                    # either may be stuck (a timeout), or a decode refused at once while its prefill was
                    # silent: which is at fault is unknown, and retrying through the same prefill can
                    # walk every decode out (fresh-clone CI, prefill-hang): both go out
                    self.registry.record_failure(prefill.url, "stuck P->D pair: " + e.reason)
            await _discard(prefill_task)
            raise
        opening = False
        if prefill_task.done() and not prefill_task.cancelled() and prefill_task.exception() is not None:
            call.close(ok=False)
            self._prefill_failed(prefill_task, str(d.decode), decode_ok=True)
        if call.resp.status != 200:
            await _discard(prefill_task)
        return await self._answer(request, plan, call, prefill=prefill_task)

    def _prefill_failed(self, prefill_task: asyncio.Task, decode_url: str, decode_ok: bool) -> NoReturn:
        """Raise the prefill leg's error; a timeout while the decode leg still waited also takes
        the decode worker out (either leg of a silent pair may be the stuck one)."""
        e = prefill_task.exception()
        assert e is not None
        if isinstance(e, RetryableFailure) and "Timeout" in e.reason and not decode_ok:  # prod
            self.registry.record_failure(str(decode_url), "stuck P->D pair: " + e.reason)
        raise e

    async def _prefill(self, url: str, plan: Plan, data: bytes) -> None:
        """Send to the prefill worker and drain its answer; raise on failure."""
        worker = self.registry.get(url)
        if worker:
            worker.inflight += 1
            chosen = plan.decision.predicted("pd")  # what the router sent there: the queue it prices
            if chosen is not None:
                worker.prefill_load.commit(id(plan), chosen.prefill_tokens, chosen.cached_tokens)
        try:
            call = await self._open(url, plan, data, "prefill")
            try:
                raw = await call.resp.read()
            except UPSTREAM_BROKE as e:
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
                worker.prefill_load.release(id(plan))

    # --- common ----------------------------------------------------------------------------

    async def _open(self, url: str, plan: Plan, data: bytes, role: str) -> Call:
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
            resp = await self.pool.post(
                url, plan.path, data, headers, header_timeout=self.header_timeout_s if plan.stream else None
            )
        except UPSTREAM_BROKE as e:
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            span.end()
            raise RetryableFailure(url, f"{type(e).__name__}: {e}") from None
        except BaseException:  # cancelled (the client left, or the paired leg failed)
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
            span.end()
            raise
        span.set_attribute("http.response.status_code", resp.status)
        call = Call(resp, span)
        if resp.status in (502, 503):
            with suppress(*UPSTREAM_BROKE):
                await resp.read()
            call.close(ok=False)
            raise RetryableFailure(url, f"answered HTTP {resp.status}")
        return call

    async def _answer(
        self, request: web.Request, plan: Plan, call: Call, prefill: asyncio.Task | None
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
            return await relay_stream(
                self.registry, self.first_byte_timeout_s, request, plan, call, prefill_error, prefill
            )
        try:
            raw = await call.resp.read()
        except UPSTREAM_BROKE as e:
            call.close(ok=False)
            if prefill_error and isinstance(prefill_error[0], RetryableFailure):
                raise prefill_error[0] from None
            if not prefill_error:  # nothing reached the client: the turn is retried on another pair
                if prefill is not None:
                    prefill.cancel()
                raise RetryableFailure(str(plan.decision.decode), f"failed mid-request: {type(e).__name__}") from None
            err = as_router_error(prefill_error[0])
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


def _uncancel(task: asyncio.Task | None) -> bool:
    """Withdraw this module's own cancel of ``task``; True when it is still being cancelled by
    someone else (its client left). Python 3.10 has no count of cancel requests: always False."""
    uncancel = getattr(task, "uncancel", None)
    return bool(uncancel is not None and uncancel() > 0)


async def _discard(task: asyncio.Task) -> None:
    """Cancel a leg that is no longer needed; close its connection if it already answered."""
    if not task.done():
        task.cancel()
    with suppress(BaseException):
        result = await task
        if isinstance(result, Call):
            result.close(ok=False)


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


async def _read_quietly(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.read()
    except UPSTREAM_BROKE:
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
