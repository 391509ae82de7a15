"""The SGLang router endpoints benchmark tools expect beside the OpenAI ones.

``POST /flush_cache`` fans out to every healthy worker (``bench_multiturn.py`` calls it before
each rate; 200 only if all flushed), ``GET /model_info`` (+ ``/get_model_info``) answers from the
first healthy worker, ``GET /get_server_info`` describes the router and its workers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from ppd_server.errors import RouterError, error_response

if TYPE_CHECKING:
    from ppd_server.http.state import AppState

_TIMEOUT = aiohttp.ClientTimeout(total=30)


def add_sglang_routes(app: web.Application, state: AppState) -> None:
    async def flush_cache(request: web.Request) -> web.Response:
        session = state.session
        assert session is not None
        workers = [w for w in state.registry if w.healthy]

        async def flush(url: str) -> tuple[str, int]:
            try:
                async with session.post(url + "/flush_cache", timeout=_TIMEOUT) as r:
                    await r.read()
                    return url, r.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                return url, 502

        results = dict(await asyncio.gather(*(flush(w.url) for w in workers)))
        ok = bool(results) and all(s == 200 for s in results.values())
        return web.json_response({"flushed": ok, "workers": results}, status=200 if ok else 400)

    async def model_info(request: web.Request) -> web.Response:
        assert state.session is not None
        for w in state.registry:
            if not w.healthy:
                continue
            try:
                async with state.session.get(w.url + "/model_info", timeout=_TIMEOUT) as r:
                    if r.status == 200:
                        return web.json_response(await r.json(content_type=None))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                continue
        return error_response(RouterError(503, "no healthy worker answered /model_info", code="no_worker_available"))

    async def server_info(request: web.Request) -> web.Response:
        cfg = state.config
        return web.json_response(
            {
                "router": "ppd-server",
                "policy": state.turns.policy.spec,
                "policy_params": state.turns.policy.params,
                "load_interval_s": cfg.load_interval_s,
                "max_retries": cfg.max_retries,
                "token_count": "exact" if state.turns.tokens.exact else "learned bytes/token",
                "workers": [w.as_dict() for w in state.registry],
            }
        )

    app.router.add_post("/flush_cache", flush_cache)
    app.router.add_get("/model_info", model_info)
    app.router.add_get("/get_model_info", model_info)
    app.router.add_get("/get_server_info", server_info)
