"""Served as ``web.run_app`` serves it (no handler cancellation), a streaming client that left
before the worker's first byte makes ``out.prepare`` fail: that is a client gone, not an
unexpected router error - the worker call is closed (its request aborted) and the turn is
recorded as failed, with no traceback."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from fake_sglang import FakeWorker
from router_harness import eventually

from ppd_server.http.app import STATE, create_app
from ppd_server.config import RouterConfig


async def test_stream_client_gone_before_the_first_byte_closes_the_worker_call(caplog):
    u = FakeWorker(role="unified", n_tokens=200, hold=asyncio.Event())
    await u.start()
    app = create_app(RouterConfig(worker=(u.url,), load_interval_s=3600.0))
    runner = web.AppRunner(app)  # web.run_app's default: handler_cancellation=False
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 200, "stream": True}).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await eventually(lambda: u.seen)
        assert u.seen
        writer.close()  # the client leaves while the worker has not answered yet
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.ERROR, logger="ppd_server"):
            u.hold.set()  # the worker starts streaming to a router whose client is gone
            st = app[STATE]
            await eventually(lambda: st.metrics.errors.labels("worker")._value.get() == 1)
        assert st.metrics.errors.labels("worker")._value.get() == 1, "the turn was recorded as failed"
        assert st.registry.get(u.url).inflight == 0
        assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    finally:
        u.hold.set()
        await runner.cleanup()
        await u.close()
