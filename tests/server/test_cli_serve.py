"""How the CLI serves the app: the settings that only the real server (not the test server) uses."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ppd_server import cli
from ppd_server.config import RouterConfig


def test_served_handlers_are_cancelled_when_the_client_disconnects(monkeypatch):
    # aiohttp's run_app default leaves a handler running after its client left: a non-streamed
    # turn would keep both workers generating to the end. The dispatcher's abort paths rely on
    # the cancellation reaching the handler.
    from ppd_server.http import serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda app, host, port, loop, **kw: seen.update(kw, host=host, port=port))
    loop = asyncio.new_event_loop()
    try:
        cli._run_app(web.Application(), RouterConfig(port=1), loop)
    finally:
        loop.close()
    assert seen["host"] == "127.0.0.1" and seen["port"] == 1
    assert seen["drain_timeout_s"] == RouterConfig().drain_timeout_s
    runner = serve.make_runner(web.Application(), drain_timeout_s=1.0, max_header_bytes=16384)
    assert runner._kwargs["handler_cancellation"] is True
