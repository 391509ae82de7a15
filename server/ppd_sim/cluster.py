"""The simulated fleet: its shape (``1P3D``, ``2P2D``, ``4R``, ``1P2D1R``...), its hardware
(cost coefficients, KV capacity, chunk size, link), and the ClusterView the policy sees.

The view is built the way ``ppd_server.request_path.turns.TurnRouter.cluster_view`` builds it: one
WorkerView per worker from its reported load plus in-flight count, and the link. With
``poll_lag`` (the simulation polls every worker at the live router's interval) the loads are those
of the last poll, as the live router's are; without it they are instantaneous. The link backlog
is whatever the caller says the router knows (``Simulation`` counts it the live router's way),
by default the true bytes still queued on the link.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ppd_server.config import format_worker_counts, parse_worker_counts
from ppd_server.routing.frozen import constructor
from ppd_server.routing.types import ClusterView, CostCoefficients, Role, WorkerView
from ppd_sim.events import EventLoop
from ppd_sim.link import KVLink
from ppd_sim.worker import SimWorker, WorkerHost

MAX_WORKERS = 64
_new_cluster_view = constructor(ClusterView)  # ClusterView(...), built faster
_set_memo = ClusterView.__dict__["memo"].__set__  # ClusterView.memo's slot (the view is frozen)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    prefill: int = 1
    decode: int = 3
    unified: int = 0

    @classmethod
    def parse(cls, text: str) -> ClusterSpec:
        """'1P3D' -> 1 prefill + 3 decode; 'R' = unified (replica) workers; case-insensitive.
        Same grammar as the router's ``--embedded`` (:func:`parse_worker_counts`), capped at
        ``MAX_WORKERS``."""
        try:
            spec = cls(*parse_worker_counts(text))
        except ValueError as exc:
            raise ValueError(f"bad --cluster {text!r}: {exc}") from None
        total = spec.prefill + spec.decode + spec.unified
        if total > MAX_WORKERS:
            raise ValueError(f"bad --cluster {text!r}: {total} workers; use 1..{MAX_WORKERS}")
        return spec

    def __str__(self) -> str:
        return format_worker_counts(self.prefill, self.decode, self.unified)


@dataclass(frozen=True, slots=True)
class Hardware:
    """One worker's hardware, shared by all workers of the fleet."""

    coefficients: CostCoefficients
    kv_bytes_per_token: int
    kv_capacity_tokens: int  # 0 = unbounded
    chunk_tokens: int = 8192  # chunked_prefill_size
    link_gb_per_s: float = 25.0
    decode_local_prefill: bool = True  # decode workers can append-prefill (SGLang conditional agg)
    decode_radix_cache: bool = True  # decode workers keep prefixes and receive only what they lack
    page_tokens: int = 1  # prefix-cache page (SGLang page_size): a cache hit is a whole number of pages
    # Per-request time outside the engine's forward passes (router hop, HTTP, chat template and
    # tokenization on the worker, stream relay): a turn reaches its worker this long after it is sent.
    request_overhead_ms: float = 0.0
    model: str | None = None  # the model the workers serve (their /server_info's served_model_name)


class SimCluster:
    def __init__(
        self,
        spec: ClusterSpec,
        hw: Hardware,
        loop: EventLoop,
        host: WorkerHost,
        poll_lag: bool = False,
        reference: bool = False,
    ) -> None:
        self.spec = spec
        self.link = KVLink(hw.link_gb_per_s, loop)
        roles: list[tuple[str, Role, int]] = [
            ("p", "prefill", spec.prefill),
            ("d", "decode", spec.decode),
            ("r", "unified", spec.unified),
        ]
        self.workers: dict[str, SimWorker] = {}
        for prefix, role, count in roles:
            for k in range(count):
                url = f"sim://{prefix}{k}"
                self.workers[url] = SimWorker(
                    url,
                    role,
                    hw.coefficients,
                    loop,
                    host,
                    hw.kv_capacity_tokens,
                    hw.kv_bytes_per_token,
                    hw.chunk_tokens,
                    hw.decode_local_prefill,
                    hw.decode_radix_cache,
                    poll_lag,
                    reference,
                    page_tokens=hw.page_tokens,
                )
        # the workers' true-coefficient views, kept up to date through the workers' ``changed``
        self._order = list(self.workers.values())
        self._index = {w.url: k for k, w in enumerate(self._order)}
        self._views: list[WorkerView | None] = [None] * len(self._order)
        self._stale: set[int] = set(range(len(self._order)))
        for k, w in enumerate(self._order):
            w.changed = partial(self._stale.add, k)
        self._cache_views = bool(self._order) and self._order[0]._cache_views  # else every view, every time
        self._link_gbps = self.link.link_gbps  # fixed for the run
        self._roles = (spec.prefill, spec.prefill + spec.decode)  # where the decode and unified workers start

    def view(
        self, believed: Callable[[str, Role], CostCoefficients] | None = None, link_backlog_bytes: int | None = None
    ) -> ClusterView:
        """``believed(url, role)``: the router's cost model's coefficients (default: the true ones);
        ``link_backlog_bytes``: what the router counts on the link (default: the true backlog)."""
        if believed is None:
            views = self._views
            stale = self._stale
            if stale:
                order = self._order
                for k in stale:
                    views[k] = order[k].view()
                if self._cache_views:
                    stale.clear()
        else:  # in _order, as seen() assumes
            views = [w.view(believed(w.url, w.role)) for w in self._order]
        view = _new_cluster_view(
            tuple(views),  # type: ignore[arg-type]  # every slot is filled
            self._link_gbps,
            self.link.backlog_bytes() if link_backlog_bytes is None else link_backlog_bytes,
        )
        # fleet_index(workers) for the price of three slices (list slices are new lists): every
        # worker is healthy, in role order
        p, d = self._roles
        _set_memo(view, (views[:p], views[p:d], views[d:], self._index))
        return view

    def seen(self, view: ClusterView, url: str | None) -> WorkerView | None:
        """``view.get(url)`` for a view this cluster built, without the scan."""
        k = self._index.get(url) if url is not None else None
        return None if k is None else view.workers[k]

    def poll(self) -> None:
        """One load poll of every worker (``WorkerRegistry.poll_once``)."""
        for w in self.workers.values():
            w.poll()

    def worker(self, url: str | None) -> SimWorker:
        if url is None or url not in self.workers:
            raise KeyError(f"the policy chose unknown worker {url!r}")
        return self.workers[url]
