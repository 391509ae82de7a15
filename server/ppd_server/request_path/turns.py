"""One turn's routing: from a parsed request to a Decision, and from the observed answer back
into the session table, the cost model and the token counter.

This is the only place that talks to the brain (policy, SessionTable, CostModel, TokenCounter);
the HTTP layer (``front_door``) and the network layer (``dispatch``) stay ignorant of it.
Time is ``time.monotonic()`` read here and passed in, so the brain stays clock-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ppd_sdk import wire
from ppd_sdk.wire import Hints
from ppd_server.fleet.workers import WorkerRegistry
from ppd_server.request_path.relay import TurnUsage
from ppd_server.request_path.token_count import TokenCounter
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.observation import Observation
from ppd_server.routing.policies import Policy
from ppd_server.routing.types import ClusterView, Decision, RequestView, SessionView
from ppd_server.sessions import SessionTable

_NOT_DECIDED = ClusterView(workers=())  # a Turn's view until decide() takes the real one


@dataclass(slots=True)
class Turn:
    """A request as the router understood it, plus the decision taken for it."""

    request: RequestView
    session: SessionView | None
    cluster: ClusterView
    prompt_bytes: int
    decision: Decision | None = None
    tenant: str | None = None  # prod: the API key's id when several keys scope the sessions (http/auth.py)

    @property
    def conversation_id(self) -> str | None:
        return self.request.conversation_id


class LinkBacklog:
    """Predicted KV bytes of the P->D turns whose KV has not crossed the link yet (what the policy
    prices a new transfer behind). A turn's bytes are held from its decision until its first token
    (the decode worker had its KV) or its end, whichever comes first: holding them for the whole
    answer counted transfers long done, and priced P->D off the table on busy fleets."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0

    def hold(self, kv_bytes: int) -> Callable[[], None]:
        """Count ``kv_bytes``; the returned release takes them off once, however often it is called."""
        held = max(int(kv_bytes), 0)
        self.bytes += held

        def release() -> None:
            nonlocal held
            self.bytes -= held
            held = 0

        return release


class TurnRouter:
    def __init__(
        self,
        registry: WorkerRegistry,
        sessions: SessionTable,
        cost_model: CostModel,
        tokens: TokenCounter,
        policy: Policy,
        link_gbps: float,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.cost_model = cost_model
        self.tokens = tokens
        self.policy = policy  # swapped whole by the admin API (policies are immutable)
        self.link_gbps = link_gbps
        self.link_backlog = LinkBacklog()
        self._last_view = _NOT_DECIDED
        registry.on_down.append(sessions.forget_worker)

    def cluster_view(self) -> ClusterView:
        """The fleet now; the last one again when no worker's view and no link figure changed
        (each worker keeps its view between changes: ``Worker.view``)."""
        cm = self.cost_model
        workers = tuple(w.view(cm.coefficients(w.url, w.role, w.served_model_name)) for w in self.registry)
        last = self._last_view
        backlog = self.link_backlog.bytes
        if (
            last.link_backlog_bytes == backlog
            and last.link_gbps == self.link_gbps
            and len(last.workers) == len(workers)
            and all(a is b for a, b in zip(last.workers, workers))
        ):
            return last
        self._last_view = ClusterView(workers=workers, link_gbps=self.link_gbps, link_backlog_bytes=backlog)
        return self._last_view

    def begin(
        self, hints: Hints, prompt_tokens: int, prompt_bytes: int, max_new_tokens: int, tenant: str | None = None
    ) -> Turn:
        request, session = self.sessions.admit(hints, prompt_tokens, max_new_tokens, time.monotonic(), tenant)
        # the cluster view is taken by decide(), right before the policy reads it (once per attempt)
        return Turn(request=request, session=session, cluster=_NOT_DECIDED, prompt_bytes=prompt_bytes, tenant=tenant)

    def decide(self, turn: Turn) -> Decision:
        """Raises NoWorkerAvailable. Called again (fresh cluster view) on a retry."""
        turn.cluster = self.cluster_view()
        turn.decision = self.policy.decide(turn.request, turn.cluster, turn.session)
        return turn.decision

    def predicted_kv_bytes(self, turn: Turn) -> int:
        d = turn.decision
        chosen = d.predicted(d.route) if d else None
        return chosen.kv_bytes if chosen is not None else 0

    def route_info(self, turn: Turn, usage: TurnUsage) -> dict[str, Any]:
        """The ``ppd`` body field (``ppd_sdk.wire.RouteInfo``), as a plain dict on the hot path."""
        d = turn.decision
        assert d is not None
        return wire.route_body(
            d.route,
            turn.request.turn,
            turn.conversation_id,
            d.policy,
            d.decode,
            d.prefill,
            usage.cached_tokens,
            d.reason,
            ((c.route, c.ttft_ms, c.tpot_ms, c.score) for c in d.candidates),
        )

    def finish(self, turn: Turn, usage: TurnUsage, started_at: float, ok: bool) -> dict[str, Any]:
        """Feed what was observed back into the brain; returns the figures for traces/metrics."""
        d = turn.decision
        assert d is not None
        now = time.monotonic()
        prompt = usage.prompt_tokens if usage.prompt_tokens is not None else turn.request.prompt_tokens
        cached = usage.cached_tokens or 0
        ttft = usage.ttft_ms(started_at)
        tpot = usage.tpot_ms()
        kv_bytes = usage.kv_transfer_bytes
        if kv_bytes is None:
            kv_bytes = self.predicted_kv_bytes(turn) if d.route == "pd" else 0
        if ok:
            if turn.conversation_id is not None:
                self.sessions.record(
                    turn.conversation_id, d, prompt, cached, usage.completion_tokens or 0, now, turn.tenant
                )  # prod: tenant
            if usage.prompt_tokens:
                self.tokens.observe(turn.prompt_bytes, usage.prompt_tokens)
            chosen = d.predicted(d.route)
            if chosen is not None:  # streams give TTFT; non-streamed answers only end-to-end time
                decode = turn.cluster.get(d.decode)
                self.cost_model.observe(
                    Observation(
                        route=d.route,
                        decode_url=d.decode,
                        prefill_url=d.prefill,
                        new_tokens=max(0, prompt - cached),
                        cached_tokens=cached,
                        ttft_ms=ttft,
                        tpot_ms=tpot,
                        decode_running=decode.running_reqs if decode else 0,
                        decode_context_tokens=decode.running_context_tokens if decode else 0,
                        predicted_ttft_ms=chosen.ttft_ms,
                        predicted_tpot_ms=chosen.tpot_ms,
                        predicted_compute_ms=chosen.compute_ms,
                        kv_bytes=kv_bytes,
                        prefill_cached_tokens=usage.prefill_cached_tokens if d.route == "pd" else None,
                        e2e_ms=(time.perf_counter() - started_at) * 1000.0,
                        completion_tokens=usage.completion_tokens or 0,
                    )
                )
        return {
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "ttft_ms": ttft,
            "tpot_ms": tpot,
            "kv_bytes": kv_bytes,
        }
