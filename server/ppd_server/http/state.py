"""What one router app owns, in one object (``app[STATE]``): the handlers (front door, admin,
SGLang compatibility) receive it, and ``app.py`` builds it. Its own module so that the handlers
depend on the state and the app on the handlers, with no cycle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from opentelemetry.trace import Tracer

from ppd_server.config import RouterConfig
from ppd_server.fleet.workers import WorkerRegistry
from ppd_server.metrics import RouterMetrics
from ppd_server.request_path.dispatch import Dispatcher
from ppd_server.request_path.turns import TurnRouter
from ppd_server.request_path.upstream import UpstreamPool


@dataclass
class AppState:
    config: RouterConfig
    registry: WorkerRegistry
    turns: TurnRouter
    tracer: Tracer
    tracing: bool  # False: no-op tracer, skip context propagation work on the hot path
    metrics: RouterMetrics
    dispatcher: Dispatcher = None  # type: ignore[assignment]  # set on startup (needs the loop)
    session: aiohttp.ClientSession | None = None  # polling and probes
    pool: UpstreamPool | None = None  # worker calls on the request path
    background: set[asyncio.Task] = field(default_factory=set)
    poller: asyncio.Task | None = None


STATE = web.AppKey("ppd_state", AppState)
