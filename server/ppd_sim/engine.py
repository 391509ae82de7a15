"""One simulated run of one policy over one workload on one fleet.

Per turn, exactly what the live router does (``ppd_server.request_path.turns``): the session table gives the
turn number and the SessionView, the fleet gives the ClusterView, and the policy object the
router would use decides; the Decision is then executed on the simulated workers:

* ``pd``: prefill on the chosen P worker (its prefix cache spares what it already holds), slots
  pinned on the D worker, the KV the D worker lacks crosses the link (FIFO), the stream joins the
  D worker's batch and emits its first token after one decode iteration;
* ``local``: append-prefill on the D worker over the prefix it caches, chunked into its decode
  iterations (slowing its running streams), then decode there;
* ``replica``: prefill and decode on a unified worker.

When an answer ends, the turn is recorded in the session table like the router records it, and
the conversation's next turn is sent after its think time.

What the simulated router knows is the live router's (:class:`RouterBehaviour`, default): worker
loads as of its last poll (every ``load_interval_s``) with its own in-flight counts current; the
client's ``max_tokens`` cap, not the true output length; as link backlog, the predicted KV bytes
of every P->D turn still open. Each can be idealised for comparison (instant loads, exact output
lengths, the true bytes on the link).

The coefficients in the WorkerViews are the true ones by default (a perfectly calibrated router).
Given a :class:`CostModel`, they are that model's beliefs instead; with ``online_fit`` the model
is fed an Observation per finished turn, as ``TurnRouter.finish`` feeds it, so a run shows how
the online fit converges from a wrong profile and what miscalibration costs.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ppd_sdk.wire import SLO, Hints, Weights
from ppd_server.config import RouterConfig
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.observation import Observation
from ppd_server.routing.policies import Policy
from ppd_server.routing.types import Decision
from ppd_server.sessions import SessionTable
from ppd_sim.cluster import ClusterSpec, Hardware, SimCluster
from ppd_sim.events import EventLoop
from ppd_sim.request import SimRequest
from ppd_sim.worker import SimWorker
from ppd_sim.workload import Conversation

MAX_EVENTS = 50_000_000
LIVE_POLL_INTERVAL_MS = RouterConfig().load_interval_s * 1000.0  # ppd-server's --load-interval default
DEFAULT_CLIENT_MAX_TOKENS = 2048  # above every preset class's longest answer (1024 + 25% jitter)
LINK_BACKLOG_KINDS = ("router", "true")


@dataclass(frozen=True, slots=True)
class RouterBehaviour:
    """What the simulated router knows. The defaults are the live router's; each can be idealised.

    ``poll_interval_ms``: loads are polled this often (0 = the router sees every worker's load as
    it is now). ``client_max_tokens``: the ``max_tokens`` every client sends; the router's
    ``RequestView.max_new_tokens`` is that cap, not the answer's length, and an answer longer than
    it stops at it (finish reason "length"); None = the client sends the exact output length.
    ``link_backlog``: "router" = the predicted KV bytes of every P->D turn still open (what
    ``TurnRouter.link_backlog_bytes`` counts), "true" = the bytes really queued on the link."""

    poll_interval_ms: float = LIVE_POLL_INTERVAL_MS
    client_max_tokens: int | None = DEFAULT_CLIENT_MAX_TOKENS
    link_backlog: str = "router"

    def __post_init__(self) -> None:
        if not self.poll_interval_ms >= 0:
            raise ValueError(f"poll interval must be >= 0 ms, got {self.poll_interval_ms}")
        if self.client_max_tokens is not None and self.client_max_tokens < 1:
            raise ValueError(f"client max_tokens must be >= 1, got {self.client_max_tokens}")
        if self.link_backlog not in LINK_BACKLOG_KINDS:
            raise ValueError(f"link backlog must be one of {', '.join(LINK_BACKLOG_KINDS)}, got {self.link_backlog!r}")


class _TurnHints:
    """One turn's ``Hints`` as ``SessionTable.admit`` reads them: the run's weights and SLO with
    the turn's conversation id and number. Every field of ``Hints``, read-only by convention;
    a pydantic ``model_copy`` per turn cost ~3% of a run (``tests/sim/test_sim_speed_parts.py``
    holds the two to the same fields and values)."""

    __slots__ = ("conversation_id", "parent_conversation_id", "slo", "turn", "weights")

    def __init__(self, conversation_id: str, turn: int, run: Hints) -> None:
        self.conversation_id = conversation_id
        self.parent_conversation_id = run.parent_conversation_id
        self.turn = turn
        self.weights = run.weights
        self.slo = run.slo


@dataclass(frozen=True, slots=True)
class RequestHints:
    """What every simulated client sends (the SDK's weights and SLO hints)."""

    w_ttft: float = 1.0
    w_tpot: float = 1.0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None


@dataclass(slots=True)
class SimResult:
    policy: str
    requests: list[SimRequest]
    kv_bytes_moved: int
    sim_ms: float
    events: int
    stop_reason: str | None  # None when every turn of every conversation finished
    turns_planned: int  # every turn of every conversation (turns after one that never ended are never sent)
    conversations: int
    busy_share: dict[str, float]  # worker url -> share of the run it was computing
    evicted_tokens: int
    cost_model: dict[str, Any] | None = None  # error summary and fitted coefficients, when a CostModel was used


class Simulation:
    def __init__(
        self,
        policy: Policy,
        spec: ClusterSpec,
        hw: Hardware,
        conversations: tuple[Conversation, ...],
        hints: RequestHints = RequestHints(),
        cost_model: CostModel | None = None,
        online_fit: bool = False,
        router: RouterBehaviour = RouterBehaviour(),
        reference: bool = False,
        keep_reasons: bool = True,
    ) -> None:
        """``reference``: the plain path (every view rebuilt on every turn, every worker iteration an
        event); the same results, slower; tests compare the fast path against it. ``keep_reasons``:
        False leaves every ``SimRequest.reason`` empty and the policy's usual reasons unwritten
        (``Policy.explain``; ``ppd-sim`` reads them only with ``--reasons``); nothing else changes."""
        if online_fit and cost_model is None:
            raise ValueError("online_fit needs a cost_model")
        if not keep_reasons and policy.explain:  # a copy: the caller's policy keeps explaining
            policy = copy.copy(policy)
            policy.explain = False
        self.policy = policy
        self._keep_reasons = keep_reasons
        self.cost_model = cost_model
        self.online_fit = online_fit
        self._decode_at_decision: dict[int, tuple[int, int]] = {}  # rid -> (running, context) the policy saw
        self.hints = hints
        self.router = router
        self._wire_hints = Hints(
            weights=Weights(ttft=hints.w_ttft, tpot=hints.w_tpot),
            slo=SLO(ttft_ms=hints.slo_ttft_ms, tpot_ms=hints.slo_tpot_ms),
        )
        self.conversations = conversations
        self.loop = EventLoop()
        self.cluster = SimCluster(spec, hw, self.loop, self, poll_lag=router.poll_interval_ms > 0, reference=reference)
        self._router_backlog = 0  # predicted KV bytes of the open P->D turns (the live router's count)
        self._predicted_kv: dict[int, int] = {}
        self._arrivals: list[tuple[float, int, Conversation]] = []  # not yet on the heap, last first
        self._last_finish_ms = 0.0
        self.sessions = SessionTable(max_sessions=max(100_000, len(conversations) + 1), idle_ttl_s=24 * 3600.0)
        self.requests: list[SimRequest] = []
        self.finished = 0
        self._decisions: dict[int, Decision] = {}
        self._origin: dict[int, tuple[Conversation, int]] = {}
        self._kv_bytes_per_token = hw.kv_bytes_per_token
        self._backlog_router = router.link_backlog == "router"
        self._overhead_ms = hw.request_overhead_ms
        if cost_model is not None:  # the router learns what each worker serves from its /server_info
            for w in self.cluster.workers.values():
                cost_model.coefficients(w.url, w.role, hw.model)

    def run(self, progress: Callable[[float, int], None] | None = None) -> SimResult:
        """Simulate until every turn of every conversation finished (or a budget ran out)."""
        if self.router.poll_interval_ms > 0:
            self.loop.at(0.0, self._poll)
        # every arrival takes its place in the event order now, but only the next one waits on the
        # heap (a heap of every conversation costs each event a few more comparisons)
        first, now = self.loop.reserve(len(self.conversations)), self.loop.now
        arrivals = [
            (conv.arrival_ms if conv.arrival_ms > now else now, first + k, conv)
            for k, conv in enumerate(self.conversations)
        ]
        arrivals.sort(reverse=True)  # (time, place) are unique: conversations are never compared
        self._arrivals = arrivals
        self._next_arrival()
        last_arrival = max((c.arrival_ms for c in self.conversations), default=0.0)
        tick = (lambda: progress(self.loop.now, self.finished)) if progress else None
        # The run allocates millions of short-lived objects and almost no reference cycles (~2,000
        # in a 1-hour 4P12D run); the cyclic collector found nothing else and cost ~3% of the CPU.
        collecting = gc.isenabled()
        gc.disable()
        try:
            stop = self.loop.run(max_time_ms=last_arrival * 10 + 600_000.0, max_events=MAX_EVENTS, tick=tick)
        finally:
            if collecting:
                gc.enable()
        for w in self.cluster.workers.values():
            w.settle()
        planned = sum(len(c.turns) for c in self.conversations)
        if stop is None and self.finished < planned:  # nothing left to run, yet turns are open: a stall
            stop = f"{planned - self.finished} turns never finished: the queues stalled with nothing left to run"
        # the poll after the last answer is no work: the run ended with that answer
        sim_ms = max(self.loop.now if stop is not None else self._last_finish_ms, 1e-9)
        workers = self.cluster.workers.values()
        return SimResult(
            policy=self.policy.spec,
            requests=self.requests,
            kv_bytes_moved=self.cluster.link.bytes_moved,
            sim_ms=sim_ms,
            events=self.loop.events_run,
            stop_reason=stop,
            turns_planned=planned,
            conversations=len(self.conversations),
            busy_share={w.url: w.busy_ms / sim_ms for w in workers},
            evicted_tokens=sum(w.kv.evicted_tokens for w in workers),
            cost_model=self._cost_model_report(),
        )

    def _cost_model_report(self) -> dict[str, Any] | None:
        cm = self.cost_model
        if cm is None:
            return None
        fitted = {url: fit["coefficients"] for url, fit in cm.snapshot()["workers"].items()}
        return {"online_fit": self.online_fit, "errors": cm.error_summary(), "coefficients": fitted}

    # -- a turn arrives: the router's part ------------------------------------------------------

    def _poll(self) -> None:
        self.cluster.poll()
        if self.loop.pending():  # anything left to happen: keep polling
            self.loop.at(self.loop.now + self.router.poll_interval_ms, self._poll)

    def _next_arrival(self) -> None:
        if self._arrivals:
            t, seq, conv = self._arrivals.pop()
            self.loop.at_reserved(t, seq, self._arrive, conv)

    def _arrive(self, conv: Conversation) -> None:
        self._next_arrival()
        self._send(conv, 0, conv.turns[0][0])

    def _send(self, conv: Conversation, index: int, prompt: int) -> None:
        """Turn ``index`` of ``conv``; ``prompt``: the whole history (answers as they were sent
        back, cut at the client's cap) plus the new input."""
        loop = self.loop
        now = loop.now
        new_in, wanted = conv.turns[index]
        cap = self.router.client_max_tokens
        out = wanted if cap is None or wanted <= cap else cap  # the answer, cut at the cap
        cid = conv.conversation_id
        hints: Any = _TurnHints(cid, index + 1, self._wire_hints)  # read as Hints (no cast call)
        # what the router does with them; it sees the client's max_tokens cap, not the answer's length
        view, session = self.sessions.admit(hints, prompt, out if cap is None else cap, now / 1000.0)
        believed = self.cost_model.coefficients if self.cost_model is not None else None
        cluster = self.cluster.view(believed, self._router_backlog if self._backlog_router else None)
        decision = self.policy.decide(view, cluster, session)
        rid = len(self.requests)
        req = SimRequest(rid, cid, view.turn, now, prompt, new_in, out, view.max_new_tokens, decision.output_tokens)
        req.cut = out < wanted
        route = req.route = decision.route
        req.decode, req.prefill = decision.decode, decision.prefill
        if self._keep_reasons:
            req.reason = decision.reason
        for chosen in decision.candidates:  # decision.predicted(route)
            if chosen.route == route:
                req.predicted_ttft_ms, req.predicted_tpot_ms = chosen.ttft_ms, chosen.tpot_ms
                req.predicted_compute_ms = chosen.compute_ms
                if route == "pd" and chosen.kv_bytes:
                    self._predicted_kv[rid] = chosen.kv_bytes
                    self._router_backlog += chosen.kv_bytes
                break
        self.requests.append(req)
        self._decisions[rid] = decision
        self._origin[rid] = (conv, index)
        if self.online_fit:  # what the policy saw of the serving worker (the observation's context)
            serving = self.cluster.seen(cluster, decision.decode)
            if serving is not None:
                self._decode_at_decision[rid] = (serving.running_reqs, serving.running_context_tokens)
        if self._overhead_ms > 0:
            loop.at(now + self._overhead_ms, self._dispatch, req, decision)
        else:
            self._dispatch(req, decision)

    def _dispatch(self, req: SimRequest, decision: Decision) -> None:
        """The turn reaches its workers (``Hardware.request_overhead_ms`` after it was sent)."""
        if decision.route == "pd":
            self.cluster.worker(decision.decode).expect_kv(req)
            prefill = self.cluster.worker(decision.prefill)
            chosen = decision.predicted("pd")  # the router's own count of what it sent there
            if chosen is not None:
                prefill.prefill_load.commit(req.rid, chosen.prefill_tokens, chosen.cached_tokens)
            prefill.submit_prefill(req)
        else:
            self.cluster.worker(decision.decode).submit_prefill(req)

    # -- worker callbacks (WorkerHost) ----------------------------------------------------------

    def on_prefilled(self, worker: SimWorker, req: SimRequest) -> None:
        self.cluster.worker(req.decode).reserve_for_kv(req)

    def on_kv_slots(self, worker: SimWorker, req: SimRequest) -> None:
        req.kv_bytes = (req.prompt_tokens - req.cached_tokens) * self._kv_bytes_per_token
        self.cluster.link.send(req.kv_bytes, self._kv_delivered, req)

    def _kv_delivered(self, req: SimRequest) -> None:
        # the router's count drops the turn's bytes at its first token (one decode step later)
        self._router_backlog -= self._predicted_kv.pop(req.rid, 0)
        self.cluster.worker(req.prefill).kv_sent(req)
        self.cluster.worker(req.decode).kv_arrived(req)

    def on_finished(self, worker: SimWorker, req: SimRequest) -> None:
        self.finished += 1
        self._last_finish_ms = self.loop.now
        self._router_backlog -= self._predicted_kv.pop(req.rid, 0)
        decision = self._decisions.pop(req.rid)
        conv, index = self._origin.pop(req.rid)
        now_s = self.loop.now / 1000.0
        self.sessions.record(
            req.conversation_id, decision, req.prompt_tokens, req.cached_tokens, req.output_tokens, now_s
        )
        if self.online_fit:  # what the policy saw of the serving worker at the decision
            running, context = self._decode_at_decision.pop(req.rid, (0, 0))
            if self.cost_model is not None and req.ttft_ms is not None:
                self.cost_model.observe(
                    Observation(
                        route=decision.route,
                        decode_url=decision.decode,
                        prefill_url=decision.prefill,
                        new_tokens=req.prompt_tokens - req.cached_tokens,
                        cached_tokens=req.cached_tokens,
                        ttft_ms=req.ttft_ms,
                        tpot_ms=req.tpot_ms,
                        decode_running=running,
                        decode_context_tokens=context,
                        predicted_ttft_ms=req.predicted_ttft_ms,
                        predicted_tpot_ms=req.predicted_tpot_ms,
                        predicted_compute_ms=req.predicted_compute_ms,
                        kv_bytes=req.kv_bytes,
                        prefill_cached_tokens=req.prefill_cached_tokens if decision.route == "pd" else None,
                        e2e_ms=req.e2e_ms,
                        completion_tokens=req.output_tokens,
                        decode_running_end=worker.view_running(),
                    )
                )
        if index + 1 < len(conv.turns):
            prompt = req.prompt_tokens + req.output_tokens + conv.turns[index + 1][0]  # + the answer sent back
            self.loop.at(self.loop.now + conv.think_ms[index], self._send, conv, index + 1, prompt)
