"""One dispatch attempt's vocabulary, shared by the dispatcher (``dispatch.py``) and the stream
relay (``stream_relay.py``): the :class:`Plan` of an attempt, an open worker :class:`Call`, and
:class:`RetryableFailure`, raised only before any byte reached the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ppd_server.errors import RouterError
from ppd_server.request_path.relay import Kind, RouteInfoFn, TurnUsage
from ppd_server.request_path.upstream import UpstreamResponse
from ppd_server.routing.types import Decision

CLIENT_GONE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
UPSTREAM_BROKE = (asyncio.TimeoutError, OSError)  # UpstreamError is an OSError


class RetryableFailure(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(slots=True)
class Plan:
    """One attempt: where to send what, and how to answer."""

    kind: Kind
    path: str
    body: dict[str, Any]  # already without the ``ppd`` field
    decision: Decision
    stream: bool
    client_wants_usage: bool
    client_headers: dict[str, str]  # X-PPD-*, x-request-id
    worker_headers: dict[str, str]  # forwarded to the workers
    route_info: RouteInfoFn
    finish: Callable[[TurnUsage, float, bool], None]  # (usage, started_at, ok)
    parent_context: Any = None
    started_at: float = field(default_factory=time.perf_counter)
    # called once when a stream's first token arrives (for P->D: its KV has crossed the link)
    on_first_token: Callable[[], None] | None = None
    # the client's body bytes when they are ``body`` unchanged (``worker_body.py``), else None
    raw_body: bytes | None = None


@dataclass(slots=True)
class Call:
    resp: UpstreamResponse
    span: trace.Span

    def close(self, ok: bool = True) -> None:
        """End the call: the connection goes back to the pool if its answer was read whole."""
        self.resp.release()
        if not ok:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


def as_router_error(exc: BaseException) -> RouterError:
    if isinstance(exc, RouterError):
        return exc
    if isinstance(exc, RetryableFailure):
        return RouterError(502, f"prefill worker failed: {exc.reason}", code="prefill_error", retryable=True)
    return RouterError(502, f"prefill worker failed: {type(exc).__name__}", code="prefill_error")


def prefill_silent(prefill_leg: asyncio.Task) -> bool:
    """The prefill leg of a P->D attempt never answered: still waiting, or failed itself. Both
    legs share one request timeout, so a hung prefill's leg often times out in the same loop
    iteration as the decode's, before its done-callbacks ran: "already failed" must count as
    silent too, or the decode alone was blamed and every retry went through the hung prefill
    again (fresh-clone CI, prefill-hang). A silent prefill under a decode timeout: both go out."""
    return not prefill_leg.done() or (not prefill_leg.cancelled() and prefill_leg.exception() is not None)
