"""A fault-injecting HTTP proxy in front of a real worker, for the fault e2e tests.

Run as its own process (``python tests/faultproxy.py --port P --upstream http://127.0.0.1:W``): the
router is given the proxy's URL instead of the worker's, so every router -> worker call goes through
it, while a prefill worker's KV transfer (its bootstrap port) still goes straight to the worker.
Polls (``/health``, ``/server_info``, ``/v1/loads``...) always pass through untouched, so a faulted
worker looks healthy to the router's poller - the case only per-request timeouts, retries and the
circuit breaker can catch.

Control, on the proxy itself: ``POST /_fault`` with ``{"mode": ..., "delay_s": x, "count": n}``
(``count``: how many generation requests to fault, then back to ``pass``; absent = all), and
``GET /_fault`` -> ``{"mode", "requests", "faulted"}``. Modes, applied to generation requests
(``POST /v1/chat/completions``, ``/v1/completions``, ``/generate``) only:

- ``pass``: relay as is.
- ``delay``: wait ``delay_s`` before forwarding (a slow prefill, a queue).
- ``slow``: relay the answer with ``delay_s`` before every chunk (a slow decode: TPOT up).
- ``hang``: never answer, never forward (a wedged worker; ends when the caller gives up).
- ``hang_after_headers``: answer ``200 text/event-stream`` headers, then nothing.
- ``garbage``: answer ``200 application/json`` with bytes that are not JSON.
- ``reset``: close the connection without answering (a crash before the first byte).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import aiohttp
from aiohttp import web

GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions", "/generate")
MODES = ("pass", "delay", "slow", "hang", "hang_after_headers", "garbage", "reset")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode, self.delay_s, self.count = "pass", 0.0, None
        self.requests = self.faulted = 0
        self.session: aiohttp.ClientSession | None = None

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            spec = await request.json()
            if spec.get("mode") not in MODES:
                return web.json_response({"error": f"mode must be one of {MODES}"}, status=400)
            self.mode, self.delay_s = spec["mode"], float(spec.get("delay_s", 0.0))
            self.count = spec.get("count")
        return web.json_response(
            {"mode": self.mode, "delay_s": self.delay_s, "requests": self.requests, "faulted": self.faulted}
        )

    def _take_fault(self) -> str:
        self.requests += 1
        if self.mode == "pass":
            return "pass"
        mode = self.mode
        self.faulted += 1
        if self.count is not None:
            self.count -= 1
            if self.count <= 0:
                self.mode, self.count = "pass", None
        return mode

    async def relay(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        mode = self._take_fault() if request.method == "POST" and request.path in GENERATION_PATHS else "pass"
        body = await request.read()
        if mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if mode == "hang":
            await asyncio.Event().wait()  # until the caller disconnects (the handler is cancelled)
        if mode == "garbage":
            return web.Response(status=200, body=b"\x00\xffnot json{{", content_type="application/json")
        if mode == "hang_after_headers":
            out = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            await asyncio.Event().wait()
        if mode == "delay":
            await asyncio.sleep(self.delay_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as up:
            out = web.StreamResponse(
                status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            )
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                if mode == "slow":
                    await asyncio.sleep(self.delay_s)
                await out.write(chunk)
            await out.write_eof()
            return out


async def _main(port: int, upstream: str) -> None:
    proxy = FaultProxy(upstream)
    proxy.session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), auto_decompress=False
    )
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/_fault", proxy.control)
    app.router.add_route("*", "/{tail:.*}", proxy.relay)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(json.dumps({"listening": port, "upstream": upstream}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await proxy.session.close()
        await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="the worker's base URL")
    a = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(a.port, a.upstream))
