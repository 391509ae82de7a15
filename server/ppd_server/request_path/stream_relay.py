"""Relaying one worker's SSE answer to the client (``Dispatcher`` calls :func:`relay_stream`).

The client's response starts with the first bytes to send, not before: a worker that dies before
that raises :class:`~ppd_server.request_path.attempt.RetryableFailure` and the turn is retried on
another pair, invisibly to the client. Once bytes went out, a failure ends the stream with an SSE
error event and ``[DONE]`` (relay.py checks every event's framing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress

from aiohttp import web

from ppd_server.errors import RouterError, error_response, sse_error_event
from ppd_server.fleet.workers import WorkerRegistry
from ppd_server.request_path.attempt import (
    CLIENT_GONE,
    UPSTREAM_BROKE,
    Call,
    Plan,
    RetryableFailure,
    as_router_error,
    prefill_silent,
)
from ppd_server.request_path.relay import SSEShaper


async def relay_stream(
    registry: WorkerRegistry,
    first_byte_timeout_s: float,
    request: web.Request,
    plan: Plan,
    call: Call,
    prefill_error: list[BaseException],
    prefill: asyncio.Task | None,
) -> web.StreamResponse:
    """Relay the worker's SSE. The client's response starts with the first bytes to send, not
    before: a worker that dies before that (killed, stream cut, prefill lost) raises
    RetryableFailure and the turn is re-dispatched on another pair, invisibly to the client.
    Once bytes went out, a failure (a cut, a malformed event: relay.py) ends the stream with an
    SSE error event and ``[DONE]``."""
    out = RelayResponse(
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
    chunks = first_within(call.resp.iter_chunks(), first_byte_timeout_s)
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
                    registry.record_failure(str(plan.decision.decode), broke.message)
            elif not shaper.saw_done:
                broke = RouterError(
                    502,
                    f"worker {plan.decision.decode} ended the stream early",
                    code="worker_failed",
                    retryable=True,
                )
        except CLIENT_GONE:
            raise
        except UPSTREAM_BROKE as e:
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
            broke = as_router_error(prefill_error[0])
        if broke is not None and not out.prepared:
            # Nothing reached the client: retry elsewhere when the fault is a worker's.
            if prefill_error and isinstance(prefill_error[0], RetryableFailure):
                retry = prefill_error[0]
            elif not prefill_error and broke.retryable:
                retry = RetryableFailure(str(plan.decision.decode), broke.message)
                if prefill is not None and prefill_silent(prefill) and "Timeout" in broke.message:  # prod: either
                    # leg of a silent P->D pair may be the stuck one (a decode that died is not a stuck pair)
                    registry.record_failure(str(plan.decision.prefill), "stuck P->D pair: " + broke.message)
            if retry is None:
                finish(False)
                return error_response(broke, plan.client_headers)
            raise retry
        ok = broke is None and not shaper.saw_error
        if ok:
            registry.record_success(plan.decision.decode)
        if not out.prepared:
            await out.prepare(request)
        if broke is not None and not shaper.saw_error:
            finish(False)
            await out.write(sse_error_event(broke))
        await out.write_eof(last)
        if shaper.saw_done:  # the worker's end of the stream: its connection can then be reused
            with suppress(*UPSTREAM_BROKE):
                async for _ in chunks:
                    pass
    except CLIENT_GONE:
        pass  # client went away: closing the worker call below aborts its request
    finally:
        call.close(ok=ok)
        if not ok and prefill is not None:
            prefill.cancel()  # the turn failed or its client left: abort the prefill request too
        if retry is None:
            finish(ok)
    return out


class RelayResponse(web.StreamResponse):
    """The client's side of a relayed stream. Its headers go out with its first bytes, in one
    write, instead of a write of their own at ``prepare()`` (aiohttp's ``web.Response`` does the
    same): the relay prepares only right before it writes."""

    _send_headers_immediately = False


def first_within(chunks: AsyncIterator[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    """``chunks``, raising asyncio.TimeoutError when the first one takes over ``timeout_s`` (0 = no
    limit: ``chunks`` itself, one async-generator hop per chunk less)."""
    return with_first_timeout(chunks, timeout_s) if timeout_s > 0 else chunks


async def with_first_timeout(chunks: AsyncIterator[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    try:
        first = await asyncio.wait_for(chunks.__anext__(), timeout_s)
    except StopAsyncIteration:
        return
    yield first
    async for chunk in chunks:
        yield chunk
