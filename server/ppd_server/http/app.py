"""``create_app(config)``: the router as an aiohttp application, with no module globals.

Everything one app owns lives in its :class:`~ppd_server.http.state.AppState` (``app[STATE]``): the worker registry and
its poller, the brain (policy, sessions, cost model, token counter, via :class:`TurnRouter`),
ONE shared ``aiohttp.ClientSession`` (polling) and ONE upstream connection pool (worker
calls on the request path, see ``upstream.py``), the tracer and a per-app Prometheus registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import web
from opentelemetry.trace import TracerProvider

from ppd_server.config import RouterConfig
from ppd_server.errors import make_error_middleware
from ppd_server.fleet.workers import Worker, WorkerRegistry
from ppd_server.http.admin import add_admin_routes
from ppd_server.http.auth import make_auth_middleware
from ppd_server.http.front_door import FrontDoor
from ppd_server.http.openapi import openapi_document
from ppd_server.http.sglang_compat import add_sglang_routes
from ppd_server.http.state import STATE, AppState
from ppd_server.metrics import RouterMetrics
from ppd_server.request_path.dispatch import Dispatcher
from ppd_server.request_path.token_count import TokenCounter
from ppd_server.request_path.turns import TurnRouter
from ppd_server.request_path.upstream import UpstreamPool
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.policies import make_policy
from ppd_server.sessions import SessionTable
from ppd_server.telemetry import make_tracer

log = logging.getLogger("ppd_server")


def workers_from_config(config: RouterConfig) -> list[Worker]:
    out = [Worker(p.url.rstrip("/"), "prefill", bootstrap_port=p.bootstrap_port) for p in config.prefill]
    out += [Worker(u.rstrip("/"), "decode") for u in config.decode]
    out += [Worker(u.rstrip("/"), "unified") for u in config.worker]
    return out


def _load_profile(path: str | None) -> dict | None:
    if not path:
        return None
    from ppd_server.profiling import load_profile

    return load_profile(path)


def create_app(
    config: RouterConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    tokens: TokenCounter | None = None,
    default_profile: dict | None = None,
) -> web.Application:
    """Build the app. ``tracer_provider`` (tests: an SDK provider with an in-memory exporter)
    overrides the OTEL_* environment; ``tokens`` overrides the token counter;
    ``default_profile`` is the cost profile to start from when ``config.profile`` names none
    (the embedded launcher passes the built-in SmolLM2 profile)."""
    config.validate()
    registry = WorkerRegistry(
        workers_from_config(config),
        breaker_cooldown_s=config.breaker_cooldown_s,
        breaker_max_cooldown_s=config.breaker_max_cooldown_s,
    )
    cost_model = CostModel(_load_profile(config.profile) or default_profile)
    sessions = SessionTable(max_sessions=config.max_sessions, idle_ttl_s=config.session_ttl_s)
    counter = tokens or TokenCounter.from_source(config.tokenizer)
    turns = TurnRouter(registry, sessions, cost_model, counter, make_policy(config.policy), config.link_gbps)
    tracer, tracing = make_tracer(tracer_provider)
    state = AppState(
        config=config,
        registry=registry,
        turns=turns,
        tracer=tracer,
        tracing=tracing,
        metrics=RouterMetrics(registry, lambda: turns.cost_model.error_summary()),
    )
    # read when /metrics is scraped, not set on every turn
    state.metrics.sessions.set_function(lambda: len(turns.sessions))
    app = web.Application(
        middlewares=[make_error_middleware(log), make_auth_middleware(config.api_keys(), config.admin_key)],
        client_max_size=64 * 1024 * 1024,
    )
    app[STATE] = state
    front = FrontDoor(state)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await front.handle(request, "chat")

    async def completions(request: web.Request) -> web.StreamResponse:
        return await front.handle(request, "completion")

    async def generate(request: web.Request) -> web.StreamResponse:
        return await front.handle(request, "generate")

    async def models(request: web.Request) -> web.Response:
        names = sorted({w.served_model_name for w in registry if w.served_model_name})
        return web.json_response(
            {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "ppd"} for n in names]}
        )

    async def health(request: web.Request) -> web.Response:
        up = {
            role: sum(1 for w in registry if w.healthy and w.role == role) for role in ("prefill", "decode", "unified")
        }
        ok = (up["prefill"] and up["decode"]) or up["unified"]
        return web.json_response(
            {"status": "ok" if ok else "unavailable", "healthy_workers": up}, status=200 if ok else 503
        )

    openapi = openapi_document()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(openapi)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=state.metrics.render(), content_type="text/plain", charset="utf-8")

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/generate", generate)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    add_admin_routes(app, state)
    add_sglang_routes(app, state)
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    return app


async def _startup(app: web.Application) -> None:
    st = app[STATE]
    cfg = st.config
    st.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    st.pool = UpstreamPool(connect_timeout=cfg.connect_timeout_s, read_timeout=cfg.request_timeout_s)
    st.dispatcher = Dispatcher(
        st.pool,
        st.registry,
        st.tracer if st.tracing else None,
        st.background,
        first_byte_timeout_s=cfg.first_byte_timeout_s,
        header_timeout_s=cfg.header_timeout_s,
    )
    await st.registry.poll_once(st.session, timeout_s=max(2.0, cfg.connect_timeout_s))
    if cfg.tokenizer is None and not st.turns.tokens.exact:
        task = asyncio.create_task(_adopt_worker_tokenizer(st))
        st.background.add(task)
        task.add_done_callback(st.background.discard)
    st.poller = asyncio.create_task(st.registry.poll_forever(st.session, cfg.load_interval_s))


async def _adopt_worker_tokenizer(st: AppState) -> None:
    """Count tokens exactly with the workers' own tokenizer when their model is a local file/dir.
    Loaded off the event loop while the router already serves (with the learned ratio meanwhile)."""
    import os

    for w in st.registry:
        if w.model_path and os.path.exists(w.model_path):
            try:
                st.turns.tokens = await asyncio.to_thread(TokenCounter.from_source, w.model_path)
                log.info("token counts from the tokenizer of %s", w.model_path)
            except ValueError as e:  # a tokenizer that fails to load leaves the learned ratio
                log.warning(
                    "could not load the tokenizer of %s (%s); using a learned bytes/token ratio", w.model_path, e
                )
            return


async def _cleanup(app: web.Application) -> None:
    st = app[STATE]
    if st.poller is not None:
        st.poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await st.poller
    if st.background:
        await asyncio.wait(list(st.background), timeout=5.0)
        for t in st.background:
            t.cancel()
    if st.pool is not None:
        await st.pool.close()
    if st.session is not None:
        await st.session.close()


def state_of(app: web.Application) -> AppState:
    return app[STATE]


__all__ = ["create_app", "AppState", "STATE", "state_of", "workers_from_config"]
