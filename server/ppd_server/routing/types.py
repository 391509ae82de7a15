"""The data a routing policy sees and returns. All frozen: a policy is a pure function
``decide(request, cluster, session) -> Decision`` with no I/O, no clock and no hidden state,
so the live router and the simulator run the same code.

The router builds these from live state (worker registry, load poller, session table, cost
model); tests and the simulator build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ppd_sdk.wire import NO_SLO, PRESETS, SLO, Weights
from ppd_server.routing.frozen import fast_init

Role = Literal["prefill", "decode", "unified"]
RouteName = Literal["local", "pd", "replica"]


@fast_init
@dataclass(frozen=True, slots=True)
class CostCoefficients:
    """Per-worker timing model, in milliseconds (fitted online; start from a profile).

    prefill(n new tokens over c cached) = prefill_base_ms + prefill_per_token_ms*n
                                          + prefill_attn_ms_per_ktok2 * n*(n+c)/1e6
    decode step(batch b, total context K) = decode_base_ms + decode_per_seq_ms*b
                                            + decode_per_kctx_ms*K/1000
    """

    prefill_base_ms: float = 5.0
    prefill_per_token_ms: float = 1.0
    prefill_attn_ms_per_ktok2: float = 0.2
    decode_base_ms: float = 20.0
    decode_per_seq_ms: float = 3.0
    decode_per_kctx_ms: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in COEFFICIENT_NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> CostCoefficients:
        """Build from a profile's ``coefficients`` object; unknown or negative values are a ValueError."""
        unknown = sorted(set(data) - set(COEFFICIENT_NAMES))
        if unknown:
            raise ValueError(f"unknown cost coefficient(s) {unknown}; known: {list(COEFFICIENT_NAMES)}")
        values: dict[str, float] = {}
        for name, raw in data.items():
            try:
                v = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"cost coefficient {name} must be a number, got {raw!r}") from None
            if not (v >= 0.0 and v < float("inf")):
                raise ValueError(f"cost coefficient {name} must be a finite number >= 0, got {raw!r}")
            values[name] = v
        return cls(**values)


COEFFICIENT_NAMES: tuple[str, ...] = (
    "prefill_base_ms",
    "prefill_per_token_ms",
    "prefill_attn_ms_per_ktok2",
    "decode_base_ms",
    "decode_per_seq_ms",
    "decode_per_kctx_ms",
)


@fast_init
@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker as the policy sees it: identity, capabilities, live load, timing model."""

    url: str
    role: Role
    healthy: bool = True
    # capabilities (from /server_info)
    can_local_prefill: bool = False  # decode with --disaggregation-decode-enable-conditional-agg
    decode_radix_cache: bool = False  # decode with --disaggregation-decode-enable-radix-cache
    bootstrap_port: int | None = None  # prefill only
    max_total_tokens: int = 0
    kv_bytes_per_token: int = 0
    # live load (from /v1/loads or /metrics, plus the router's own in-flight count)
    running_reqs: int = 0
    waiting_reqs: int = 0
    waiting_tokens: int = 0  # uncached prompt tokens queued for prefill on this worker
    used_tokens: int = 0  # KV tokens in use
    running_context_tokens: int = 0  # sum of context lengths of running decode streams
    inflight: int = 0  # requests the router has sent and not yet seen finish
    # D-local requests the router has in flight on this worker (queued, prefilling or decoding),
    # their uncached prompt tokens, and the same summed per expected output token (sum n_i/N_i,
    # sum 1/N_i): the local-prefill work per decode step the worker's streams absorb (routing.local_load)
    local_prefill_reqs: int = 0
    local_prefill_tokens: int = 0
    local_prefill_tokens_per_step: float = 0.0
    local_prefill_reqs_per_step: float = 0.0
    chunked_prefill_size: int = 0  # tokens per mixed prefill+decode iteration; 0 = unknown (one chunk)
    coefficients: CostCoefficients = field(default_factory=CostCoefficients)
    # the prefills the router has in flight on this (prefill) worker, sent and not yet done: their
    # count, uncached tokens and attention work sum n_i*(n_i+c_i)/1e6 (routing.local_load.PrefillLoad);
    # current between load polls, so latency.queue_wait_ms prices the queue with them
    router_prefill_reqs: int = 0
    router_prefill_tokens: int = 0
    router_prefill_attn_ktok2: float = 0.0
    # the request-independent part of this worker's predictions, computed by routing.placement on
    # first use (its ``_decode_terms`` / ``_prefill_terms`` say what): a function of the fields
    # above, which a frozen view never changes; no part of equality, repr or the constructor
    memo: tuple[Any, ...] | None = field(default=None, init=False, repr=False, compare=False)


@fast_init
@dataclass(frozen=True, slots=True)
class ClusterView:
    workers: tuple[WorkerView, ...]
    link_gbps: float = 10.0  # P->D KV link bandwidth the cost model assumes
    link_backlog_bytes: int = 0  # KV bytes the router knows are still in flight on the link
    # :func:`fleet_index` of ``workers``, when whoever built the view has it at hand for less than
    # it costs to compute (the simulator: its fleet's order and urls never change); else None and
    # the policy scans ``workers``. No part of equality, repr or the constructor.
    memo: FleetIndex | None = field(default=None, init=False, repr=False, compare=False)

    def by_role(self, role: Role) -> tuple[WorkerView, ...]:
        return tuple(w for w in self.workers if w.role == role and w.healthy)

    def get(self, url: str | None) -> WorkerView | None:
        """The first worker with this url, or None."""
        if self.memo is not None:
            k = self.memo[3].get(url)  # type: ignore[arg-type]
            return None if k is None else self.workers[k]
        for w in self.workers:
            if w.url == url:
                return w
        return None


#: a fleet's healthy (prefill, decode, unified) workers, each list in fleet order, and each url's
#: first position in the fleet (read-only by convention: the lists and the dict may be shared)
FleetIndex = tuple[list[WorkerView], list[WorkerView], list[WorkerView], dict[str, int]]


def fleet_index(workers: tuple[WorkerView, ...]) -> FleetIndex:
    """What ``ClusterView.memo`` holds: the healthy workers of each role and the url positions."""
    lists: dict[str, list[WorkerView]] = {"prefill": [], "decode": [], "unified": []}
    positions: dict[str, int] = {}
    for k, w in enumerate(workers):
        if w.healthy:
            lists[w.role].append(w)
        positions.setdefault(w.url, k)
    return lists["prefill"], lists["decode"], lists["unified"], positions


@fast_init
@dataclass(frozen=True, slots=True)
class RequestView:
    """What the router parsed from one request: only the fields it routes on. ``weights`` and
    ``slo`` are the very objects ``ppd_sdk.wire.parse_hints`` returned (one shape from the wire
    to the policy); ``SessionTable.admit`` builds this for the router and the simulator."""

    conversation_id: str | None
    turn: int  # 1-based; inferred by the session table when the client did not send it
    prompt_tokens: int  # whole prompt (exact from the tokenizer, or estimated)
    max_new_tokens: int = 128
    weights: Weights = PRESETS["balanced"]
    slo: SLO = NO_SLO
    parent_conversation_id: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class SessionView:
    """Where a conversation's KV lives, as reported by the workers for its earlier turns."""

    conversation_id: str
    decode_url: str | None
    prefill_url: str | None
    cached_tokens_decode: int = 0  # prompt+output tokens the decode worker holds
    cached_tokens_prefill: int = 0  # prompt tokens the prefill worker holds
    turns: int = 0  # completed turns
    forked_from: str | None = None  # parent conversation id when this one started as a fork
    last_output_tokens: int = 0  # the answer length of its last completed turn (0 = unknown)


@fast_init
@dataclass(frozen=True, slots=True)
class Candidate:
    """One option the policy weighed, with the cost model's prediction for it."""

    route: RouteName
    decode: str | None
    prefill: str | None
    ttft_ms: float
    tpot_ms: float
    score: float | None = None
    kv_bytes: int = 0  # predicted KV bytes this route moves over the P->D link
    cached_tokens: int = 0  # prompt tokens the prefilling worker already holds (not recomputed)
    prefill_tokens: int = 0  # prompt tokens this route computes (the uncached part)
    # the prefill compute inside ttft_ms (no queue, transfer or decode step), priced with the same
    # coefficients: the online fit takes the rest of the TTFT off as the decision priced it
    compute_ms: float | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Decision:
    route: RouteName
    decode: str | None  # the worker that streams the answer (unified worker for "replica")
    prefill: str | None  # None unless route == "pd"
    reason: str
    policy: str
    candidates: tuple[Candidate, ...] = ()
    score: float | None = None
    cached_tokens: int = 0  # prompt tokens the chosen serving worker is predicted to hold already
    weights: Weights | None = None  # the TTFT/TPOT weights the policy traded with (Policy.score_weights)
    prefill_tokens: int = 0  # prompt tokens the chosen route computes (for "local": the worker's committed load)
    output_tokens: int = 0  # answer length the decision assumed (latency.expected_output_tokens)

    def predicted(self, route: RouteName) -> Candidate | None:
        for c in self.candidates:
            if c.route == route:
                return c
        return None


class NoWorkerAvailable(RuntimeError):
    """No healthy worker can serve this request (the router answers 503)."""
