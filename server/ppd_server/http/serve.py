"""Serving the router app: OpenAI-shaped protocol errors and a draining shutdown.

``web.run_app`` leaves two gaps a production front door cannot have:

* errors aiohttp raises while *parsing* a request (a header or request line over the limit, a
  malformed request line, a bad chunked body) never reach the app's middlewares: aiohttp
  answers them itself with a ``text/plain`` body. :class:`RouterRunner` serves with a request
  handler whose ``handle_error`` answers the same status with the OpenAI error body
  (``{"error": {...}}``), and a header line over the limit is a 431;
* on SIGTERM the router must stop taking new connections, let every stream in flight finish
  (up to ``drain_timeout_s``), and only then stop: :func:`serve` closes the listening socket,
  lets aiohttp close idle keep-alive connections after their current request, and waits for
  in-flight handlers before the app's cleanup (and the embedded cluster's stop) runs.

The header limits are raised from aiohttp's 8 KiB to ``max_header_bytes`` so that a long but
legal header (a 20 KB conversation id) reaches the front door, which answers a 400 naming it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import signal
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from ppd_server.errors import RouterError

log = logging.getLogger("ppd_server")
_QUOTED_BYTES = re.compile(r":?\s*b['\"]")  # where aiohttp starts quoting the client's bytes


class _OpenAIErrorsRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own parse errors with OpenAI error bodies."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            plain = super().handle_error(request, status, exc, message)  # logs the traceback
            del plain
            text, code = "internal router error (see the router log)", "internal_error"
        else:
            # A client's malformed request is the client's problem: one debug line, no traceback
            # (a flood of garbage must not flood the log).
            # aiohttp's message quotes the offending bytes (a request line, an Authorization header):
            # only its first line, the kind of error, is logged and echoed - never the client's bytes
            what = _error_kind(exc, message)
            self.logger.debug("bad HTTP request from %s: %s", getattr(request, "remote", "?"), what)
            if request.writer.output_size > 0:
                raise ConnectionError("response already started; cannot send the error")
            if isinstance(exc, LineTooLong):
                status, code = 431, "request_header_fields_too_large"
                text = "a request header or the request line is over the router's size limit"
            else:
                code = "bad_http_request"
                text = f"malformed HTTP request: {what}"
        err = RouterError(status, text, code=code)
        resp = web.Response(status=status, body=json.dumps(err.body()).encode(), content_type="application/json")
        resp.force_close()
        return resp


def _error_kind(exc: BaseException | None, message: str | None) -> str:
    """'Invalid header value char' from aiohttp's 'Invalid header value char:\n\n  b'...'\n  ^'."""
    text = str(getattr(exc, "message", None) or message or (type(exc).__name__ if exc else "") or "bad request")
    first = text.strip().splitlines()[0] if text.strip() else "bad request"
    return _QUOTED_BYTES.split(first)[0].rstrip(": ")[:200] or "bad request"


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _OpenAIErrorsRequestHandler(self, loop=self._loop, **self._kwargs)


class RouterRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors with OpenAI bodies."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if type(server) is web.Server:  # aiohttp builds a plain Server; ours only adds __call__
            server.__class__ = _Server
        return server


def make_runner(app: web.Application, *, drain_timeout_s: float, max_header_bytes: int) -> RouterRunner:
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the worker
    # calls (aiohttp's default leaves a non-streamed turn generating to the end on the workers).
    return RouterRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=drain_timeout_s,
        max_line_size=max_header_bytes,
        max_field_size=max_header_bytes,
    )


def serve(
    app: web.Application,
    host: str,
    port: int,
    loop: asyncio.AbstractEventLoop,
    *,
    drain_timeout_s: float,
    max_header_bytes: int,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests (at most ``drain_timeout_s``)."""
    runner = make_runner(app, drain_timeout_s=drain_timeout_s, max_header_bytes=max_header_bytes)
    loop.run_until_complete(runner.setup())
    # What startup loaded (the app, and its imports: openai, pydantic, OpenTelemetry...) lives as
    # long as the process: out of the collector's generations, so the collections the request
    # path's short-lived objects trigger stop re-scanning it (benchmarks/router_overhead.py).
    gc.collect()
    gc.freeze()
    # A routed turn allocates a few hundred short-lived containers that reference counting frees:
    # at CPython's default (a young collection every 700 net allocations) the collector ran every
    # few turns for nothing. Every 50,000: 4-8% less CPU per request (benchmarks/router_overhead.py,
    # same run), and at most that many objects' worth of cyclic garbage waits for a collection.
    gc.set_threshold(50_000, 20, 20)
    stop = asyncio.Event()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=drain_timeout_s)
        loop.run_until_complete(site.start())
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows / not main thread
                pass
        loop.run_until_complete(stop.wait())
        inflight = sum(1 for _ in runner.server.connections) if runner.server else 0
        log.warning("shutting down: draining %d connection(s) for up to %.0f s", inflight, drain_timeout_s)
    finally:
        loop.run_until_complete(runner.cleanup())
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
