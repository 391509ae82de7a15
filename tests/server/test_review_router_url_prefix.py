"""A worker URL with a path prefix (a worker behind a path-routing proxy, e.g.
http://host:port/w1 - accepted by the config, and kept by the poller's /server_info and load
calls) keeps that prefix on the request path too; it was dropped, so requests hit /v1/... and 404'd."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer

from ppd_server.request_path.upstream import UpstreamPool


async def test_the_worker_urls_path_prefix_is_kept():
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/w1/v1/chat/completions", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    pool = UpstreamPool(connect_timeout=5, read_timeout=5)
    try:
        base = str(server.make_url("/w1"))
        for url in (base, base + "/"):
            resp = await pool.post(url, "/v1/chat/completions", b"{}", {"Content-Type": "application/json"})
            assert resp.status == 200, await resp.read()
            assert await resp.read() == b'{"ok": true}'
            resp.release()
        assert seen == ["/w1/v1/chat/completions"] * 2
    finally:
        await pool.close()
        await server.close()
