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
    seen = {}
    monkeypatch.setattr(web, "run_app", lambda app, **kw: seen.update(kw))
    loop = asyncio.new_event_loop()
    try:
        cli._run_app(web.Application(), RouterConfig(port=1), loop)
    finally:
        loop.close()
    assert seen["handler_cancellation"] is True
    assert seen["host"] == "127.0.0.1" and seen["port"] == 1
