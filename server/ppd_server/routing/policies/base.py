"""The policy interface and the decision flow every policy shares.

A policy is a pure function ``decide(request, cluster, session) -> Decision``: no I/O, no clock,
no hidden state (the only 'randomness' is derived from (conversation_id, turn)). The shared flow:

1. Predict the candidates (:func:`build_options`): the best P->D pair, the best unified worker,
   and - for a continuation - the D-local append-prefill on the worker holding the session's KV.
2. A *continuation* is a request whose session (or fork parent) is placed on a healthy worker
   and which is not a fresh turn 1 of its own conversation (forks continue their parent).
   Everything else (turn 1, no session, the decode worker gone or unhealthy) goes P->D, or
   replica when only unified workers exist, or a full local prefill on a decode worker that can
   prefill when no prefill worker is up; nothing at all raises :class:`NoWorkerAvailable`.
3. When both D-local and P->D are possible, the concrete policy's :meth:`Policy.choose` decides.
   A decode worker without ``can_local_prefill`` never gets "local"; neither does one whose KV
   pool has no room for the request while another decode worker has (Dynamo's decode-busy veto).

Subclasses set ``name``, declare their parameters in ``defaults`` (name -> default; the type of
the default is the parameter's type) and implement ``choose``; ``validate_params`` checks ranges;
``spec_param`` / ``spec_metavar`` give the ``name:ARG`` form (``usage()`` is what the CLI lists);
``preempt`` lets a policy route a request before the shared choice (``replica``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from ppd_sdk.wire import Weights
from ppd_server.routing.frozen import constructor, fast_init
from ppd_server.routing.latency import cached_on_decode, estimate_local, expected_output_tokens, kv_fits
from ppd_server.routing.placement import best_pd, best_replica
from ppd_server.routing.types import (
    Candidate,
    ClusterView,
    Decision,
    NoWorkerAvailable,
    RequestView,
    RouteName,
    SessionView,
    WorkerView,
)


@fast_init
@dataclass(frozen=True, slots=True)
class Options:
    """Everything a policy may choose between for one request, with predictions."""

    request: RequestView
    session: SessionView | None
    continuation: bool
    holder: WorkerView | None  # the healthy worker holding the session's KV (continuations)
    pd: Candidate | None
    local: Candidate | None
    replica: Candidate | None
    why_not_local: str  # human reason when ``local`` is None
    cold_local: Candidate | None = None  # full prefill on a decode worker: only when nothing else exists
    cluster: ClusterView | None = None  # the fleet the options were predicted on (pool-wide signals)

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(c for c in (self.local, self.pd, self.replica) if c is not None)

    @property
    def uncached_tokens(self) -> int:
        """Prompt tokens the holder does not cache (the Dynamo / llm-d threshold's input)."""
        cached = cached_on_decode(self.session, self.holder, self.request.prompt_tokens) if self.holder else 0
        return max(0, self.request.prompt_tokens - cached)


# the objects every decision builds, built faster (routing.frozen.constructor)
_new_options = constructor(Options)
_new_candidate = constructor(Candidate)
_new_decision = constructor(Decision)


def _is_continuation(request: RequestView, session: SessionView | None) -> bool:
    if session is None or session.decode_url is None or session.cached_tokens_decode <= 0:
        return False
    return request.turn > 1 or session.forked_from is not None or request.parent_conversation_id is not None


def build_options(request: RequestView, cluster: ClusterView, session: SessionView | None) -> Options:
    continuation = _is_continuation(request, session)
    # split_roles and, for a continuation, session_worker in one pass over the fleet
    target = session.decode_url if continuation and session is not None else None
    holder = None
    index = cluster.memo
    if index is not None:  # the view's builder gave them (ClusterView.memo)
        prefills, decodes, unified, positions = index
        k = positions.get(target) if target is not None else None
        if k is not None and cluster.workers[k].healthy:  # the first worker of that url is the session's
            holder = cluster.workers[k]
    else:
        prefills, decodes, unified = [], [], []
        lists = {"prefill": prefills, "decode": decodes, "unified": unified}
        found = target is None
        for w in cluster.workers:
            if w.healthy:
                lists[w.role].append(w)
                if not found and w.url == target:
                    found, holder = True, w
            elif not found and w.url == target:  # the first worker of that url is the session's
                found = True
    pd = best_pd(request, cluster, session, (prefills, decodes))
    replica = best_replica(request, cluster, session, unified) if unified else None
    local: Candidate | None = None
    why = ""
    if not continuation:
        why = "turn 1" if session is None or request.turn <= 1 else "no cached prefix"
    elif holder is None:
        why = f"decode worker {session.decode_url if session else None} gone or unhealthy"
    elif holder.role == "unified":
        why = "session lives on a unified worker"
    elif not holder.can_local_prefill:
        why = f"decode worker {holder.url} cannot prefill locally"
    elif pd is not None and pd.decode != holder.url and not kv_fits(request, session, holder):
        # Dynamo's decode-busy veto: the holder's KV pool is full, another decode worker has room
        why = f"decode worker {holder.url} KV pool full ({holder.used_tokens}/{holder.max_total_tokens} tokens used)"
    else:
        pd_tpot = pd.tpot_ms if pd is not None and pd.decode == holder.url else None
        local = estimate_local(request, session, holder, pd_tpot)
    cold_local = None
    if local is None and pd is None and replica is None:
        capable = [w for w in cluster.by_role("decode") if w.can_local_prefill]
        if capable:
            cold_local = min(
                (estimate_local(request, None, w) for w in capable),
                key=lambda c: (c.ttft_ms, c.tpot_ms, c.decode or ""),
            )
    return _new_options(request, session, continuation, holder, pd, local, replica, why, cold_local, cluster)


def fmt_ms(x: float) -> str:
    """Milliseconds for a reason string: '212ms', '3.4ms'."""
    return f"{x:.0f}ms" if x >= 10 else f"{x:.1f}ms"


def predicted(c: Candidate) -> str:
    """'ttft 230ms, tpot 25ms' for a reason string."""
    return f"ttft {fmt_ms(c.ttft_ms)}, tpot {fmt_ms(c.tpot_ms)}"


class Policy(ABC):
    """Base of every routing policy; see the module docstring for the shared flow."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    spec_param: ClassVar[str | None] = None  # the parameter ``name:ARG`` sets, if any
    spec_metavar: ClassVar[str] = "ARG"  # how usage() writes that argument
    #: write the decisions' reasons. False, for a caller that reads none (``ppd-sim`` without
    #: ``--reasons``: formatting them cost ~4% of its run, keeping them more): the usual reasons
    #: (the score's, P->D for want of a choice) are empty, the rarer ones lack the score's figures.
    #: Nothing else about a decision changes.
    explain: bool = True

    @classmethod
    def usage(cls) -> str:
        """The spec as a user may type it: ``ppd``, ``ratio:X``."""
        return cls.name if cls.spec_param is None else f"{cls.name}:{cls.spec_metavar}"

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"policy {self.name!r} has no parameter(s) {', '.join(unknown)} (known: {known})")
        merged: dict[str, Any] = {}
        for key, default in self.defaults.items():
            value = params.get(key, default)
            try:
                value = type(default)(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"policy {self.name!r} parameter {key} must be {type(default).__name__}, got {value!r}"
                ) from None
            merged[key] = value
        self._params = merged
        self.validate_params(merged)

    def validate_params(self, params: dict[str, Any]) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise ValueError naming a parameter that is out of range."""

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def spec(self) -> str:
        """The string ``make_policy`` accepts to rebuild this policy (without extra params)."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, params={self._params!r})"

    def score_weights(self, request: RequestView) -> Weights:
        """The TTFT/TPOT weights this policy trades with for ``request`` (the request's own unless
        the policy scales them); every Decision records them."""
        return request.weights

    def decide(self, request: RequestView, cluster: ClusterView, session: SessionView | None) -> Decision:
        opts = build_options(request, cluster, session)
        early = self.preempt(opts)
        if early is not None:
            return early
        if opts.local is not None and opts.pd is not None:
            route, score, reason = self.choose(opts)
            chosen = opts.local if route == "local" else opts.pd
            return self._decision(opts, chosen, reason, score)
        return self.fallback(opts)

    def preempt(self, opts: Options) -> Decision | None:
        """Route the request before the shared flow, or None (the default) to let it run."""
        return None

    @abstractmethod
    def choose(self, opts: Options) -> tuple[RouteName, float | None, str]:
        """Pick "local" or "pd" when both are possible; return (route, score, reason)."""

    def fallback(self, opts: Options) -> Decision:
        """Only one kind of route (or none) is possible: take the best that exists."""
        if opts.local is not None:  # continuation, but no prefill worker is up
            return self._decision(opts, opts.local, "local: no healthy prefill worker")
        if opts.holder is not None and opts.holder.role == "unified" and opts.replica is not None:
            return self._decision(opts, opts.replica, f"replica: {opts.why_not_local}")
        if opts.pd is not None:
            reason = f"pd: {opts.why_not_local} ({predicted(opts.pd)})" if self.explain else ""
            return self._decision(opts, opts.pd, reason)
        if opts.replica is not None:
            why = (
                "session affinity"
                if opts.session and opts.replica.decode == opts.session.decode_url
                else "least loaded"
            )
            return self._decision(opts, opts.replica, f"replica: {why} ({predicted(opts.replica)})")
        if opts.cold_local is not None:
            return self._decision(opts, opts.cold_local, "local: no prefill or unified worker; full prefill on decode")
        raise NoWorkerAvailable("no healthy worker can serve this request (no P/D pair, no unified worker)")

    def _decision(self, opts: Options, chosen: Candidate, reason: str, score: float | None = None) -> Decision:
        # a scored choice rates D-local against P->D: local carries S, pd is the reference 0;
        # a candidate whose score stays None (every unscored one: build_options leaves scores
        # None) is the frozen object itself, not a copy
        cands: list[Candidate] = []
        for c in (opts.local, opts.pd, opts.replica, opts.cold_local if chosen is opts.cold_local else None):
            if c is None:
                continue
            route = c.route
            if score is not None and (route == "local" or route == "pd"):
                rated: float | None = score if route == "local" else 0.0
            elif c.score is None:
                cands.append(c)
                continue
            else:
                rated = None
            cands.append(
                _new_candidate(
                    route,
                    c.decode,
                    c.prefill,
                    c.ttft_ms,
                    c.tpot_ms,
                    rated,
                    c.kv_bytes,
                    c.cached_tokens,
                    c.prefill_tokens,
                    c.compute_ms,
                )
            )
        return _new_decision(
            chosen.route,
            chosen.decode,
            chosen.prefill,
            reason,
            self.spec,
            tuple(cands),
            score,
            chosen.cached_tokens,
            self.score_weights(opts.request),
            chosen.prefill_tokens,
            expected_output_tokens(opts.request, opts.session),
        )

    @staticmethod
    def describe(local: Candidate, pd: Candidate) -> str:
        """'ttft 38ms vs 212ms, tpot +6%' - local first, then pd."""
        dtpot = (local.tpot_ms - pd.tpot_ms) / max(pd.tpot_ms, 1e-9) * 100
        return f"ttft {fmt_ms(local.ttft_ms)} vs {fmt_ms(pd.ttft_ms)}, tpot {dtpot:+.0f}%"
