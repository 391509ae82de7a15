"""The worker registry: every prefill/decode/unified worker, its capabilities, health and load.

Capabilities come from ``/server_info`` (role, bootstrap port, decode radix cache, conditional
aggregation = can prefill locally, KV capacity, KV bytes/token, served model name). Load is polled
from ``/v1/loads`` (fallback ``/metrics``) every ``load_interval_s``; the router adds its own
in-flight counts, which move on every request, between polls.

Health: a worker is taken out after a failed dispatch (connect error / 502 / 503, an answer
cut or garbled before the client got a byte) or ``_POLL_FAILURES_TO_DOWN`` failed polls in a
row, and probed back in by the next successful ``/server_info``. A circuit breaker keeps a
worker whose *requests* fail out for a cooldown even when its polls succeed (a worker that
answers ``/health`` but garbles generations would otherwise flap back in every poll): the
cooldown doubles with each consecutive request failure (``breaker_cooldown_s`` up to
``breaker_max_cooldown_s``); after it the worker is half-open (back in, the next request is the
probe) and one successful request closes the breaker. ``on_down`` callbacks fire once per
transition (the session table forgets the worker's placements, so the next turn of its
conversations goes P->D).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ppd_server.fleet.loads import LoadReport, parse_prometheus, parse_v1_loads
from ppd_server.routing.local_load import LocalLoad, PrefillLoad
from ppd_server.routing.types import CostCoefficients, Role, WorkerView

log = logging.getLogger("ppd_server.fleet.workers")

_POLL_FAILURES_TO_DOWN = 2
_MODES = {"prefill": "prefill", "decode": "decode", "null": "unified", None: "unified"}


@dataclass(slots=True)
class Worker:
    url: str
    role: Role
    bootstrap_port: int | None = None  # from the CLI; else /server_info
    healthy: bool = False
    info_loaded: bool = False
    can_local_prefill: bool = False
    decode_radix_cache: bool = False
    max_total_tokens: int = 0
    kv_bytes_per_token: int = 0
    chunked_prefill_size: int = 0
    served_model_name: str | None = None
    model_path: str | None = None
    load: LoadReport = field(default_factory=LoadReport)
    inflight: int = 0
    # the D-local requests in flight here (the ppd policy prices a local prefill with all of them)
    local_load: LocalLoad = field(default_factory=LocalLoad)
    # the prefills in flight here (P->D's first half): the queue the policy prices between polls
    prefill_load: PrefillLoad = field(default_factory=PrefillLoad)
    # When the router's own requests to this worker ended (monotonic s) since the last load poll
    # was sent: a poll cannot see them yet, so they are taken off its running count. Agents send
    # turn N+1 right after turn N ends; without this the policy would charge turn N+1 for
    # interference with a stream that has already finished.
    recent_finishes: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    poll_failures: int = 0
    request_failures: int = 0  # consecutive failed requests (the circuit breaker's count)
    down_until: float = 0.0  # monotonic s: the breaker keeps the worker out until then
    last_error: str | None = None
    load_source: str | None = None
    _host: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)
    # (everything the view shows, the view): see view()
    _view: tuple[tuple, WorkerView] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def host(self) -> str:
        # parsed once (every P->D turn sends it as bootstrap_host); a changed url parses again
        cached = self._host
        if cached is None or cached[0] != self.url:
            from urllib.parse import urlsplit

            cached = self._host = (self.url, urlsplit(self.url).hostname or "127.0.0.1")
        return cached[1]

    def release(self, now: float) -> None:
        """One of the router's requests to this worker ended."""
        self.inflight -= 1
        self.recent_finishes.append(now)

    def set_load(self, report: LoadReport, source: str, polled_at: float) -> None:
        """A load report from a poll sent at ``polled_at`` (it already reflects earlier finishes)."""
        self.load, self.load_source = report, source
        while self.recent_finishes and self.recent_finishes[0] <= polled_at:
            self.recent_finishes.popleft()

    def view(self, coefficients: CostCoefficients) -> WorkerView:
        """The worker as the policy sees it now. The last view is kept and handed out again
        while nothing it shows changed (a load poll, an in-flight count, a health change, a
        refit, a D-local request): building one costs more than checking."""
        load = self.load
        polled = load.running_reqs
        running = max(0, polled - len(self.recent_finishes))
        context = load.running_context_tokens * running // polled if polled else 0
        ll, own = self.local_load, self.prefill_load
        key = (
            load,  # a LoadReport is frozen: a poll replaces it
            self.url,
            self.role,
            self.can_local_prefill,
            self.decode_radix_cache,
            self.bootstrap_port,
            self.max_total_tokens,
            self.kv_bytes_per_token,
            self.chunked_prefill_size,
            running,
            context,
            self.inflight,
            self.healthy,
            coefficients,
            ll.tokens,
            ll.tokens_per_step,
            ll.reqs_per_step,
            ll.reqs,
            own.tokens,
            own.attn_ktok2,
            own.reqs,
        )
        cached = self._view
        if cached is not None and cached[0] == key:  # (tuple ==: identity first, per element)
            return cached[1]
        view = WorkerView(
            url=self.url,
            role=self.role,
            healthy=self.healthy,
            can_local_prefill=self.can_local_prefill,
            decode_radix_cache=self.decode_radix_cache,
            bootstrap_port=self.bootstrap_port,
            max_total_tokens=self.max_total_tokens,
            kv_bytes_per_token=self.kv_bytes_per_token,
            chunked_prefill_size=self.chunked_prefill_size,
            running_reqs=running,
            waiting_reqs=self.load.waiting_reqs,
            waiting_tokens=self.load.waiting_tokens,
            used_tokens=self.load.used_tokens,
            running_context_tokens=context,
            inflight=self.inflight,
            **ll.view_fields(),
            coefficients=coefficients,
            **own.view_fields(),
        )
        self._view = (key, view)
        return view

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "role": self.role,
            "healthy": self.healthy,
            "bootstrap_port": self.bootstrap_port,
            "can_local_prefill": self.can_local_prefill,
            "decode_radix_cache": self.decode_radix_cache,
            "max_total_tokens": self.max_total_tokens,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "served_model_name": self.served_model_name,
            "inflight": self.inflight,
            "load": {
                "running_reqs": self.load.running_reqs,
                "waiting_reqs": self.load.waiting_reqs,
                "waiting_tokens": self.load.waiting_tokens,
                "used_tokens": self.load.used_tokens,
                "running_context_tokens": self.load.running_context_tokens,
                "source": self.load_source,
            },
            "last_error": self.last_error,
        }

    def apply_server_info(self, info: dict[str, Any]) -> None:
        mode = info.get("disaggregation_mode")
        actual = _MODES.get(mode, "unified")
        if actual != self.role:
            raise ValueError(f"{self.url} was given as {self.role} but reports disaggregation_mode={mode!r}")
        if self.role == "prefill" and self.bootstrap_port is None:
            port = info.get("disaggregation_bootstrap_port")
            self.bootstrap_port = int(port) if isinstance(port, int) else None
        self.decode_radix_cache = bool(info.get("disaggregation_decode_enable_radix_cache"))
        self.can_local_prefill = self.role == "decode" and bool(
            info.get("disaggregation_decode_enable_conditional_agg")
        )
        self.max_total_tokens = int(info.get("max_total_num_tokens") or 0)
        self.kv_bytes_per_token = int(info.get("kv_bytes_per_token") or 0)
        self.chunked_prefill_size = max(0, int(info.get("chunked_prefill_size") or 0))
        self.served_model_name = info.get("served_model_name") or info.get("model_path")
        self.model_path = info.get("model_path")
        self.info_loaded = True


class WorkerRegistry:
    def __init__(
        self, workers: Iterable[Worker], *, breaker_cooldown_s: float = 1.0, breaker_max_cooldown_s: float = 60.0
    ) -> None:
        self.workers: dict[str, Worker] = {w.url: w for w in workers}
        self.breaker_cooldown_s = breaker_cooldown_s
        self.breaker_max_cooldown_s = breaker_max_cooldown_s
        self.on_down: list[Callable[[str], object]] = []  # called with the url of a worker taken out

    def __iter__(self):
        return iter(self.workers.values())

    def get(self, url: str | None) -> Worker | None:
        return self.workers.get(url) if url else None

    def model_names(self) -> set[str]:
        """The served model names (never file paths: those are the operator's business)."""
        return {w.served_model_name for w in self.workers.values() if w.served_model_name}

    def accepts_model(self, model: str) -> bool:
        """SGLang's rule: ``"default"`` and, with one model served, any name select it; with
        several, a served name or a worker's model path."""
        names = self.model_names()
        if model == "default" or len(names) <= 1 or model in names:
            return True
        return any(model == w.model_path for w in self.workers.values() if w.model_path)

    def capacity_tokens(self) -> int:
        """The smallest KV capacity among healthy workers (0 = unknown)."""
        caps = [w.max_total_tokens for w in self.workers.values() if w.healthy and w.max_total_tokens > 0]
        return min(caps) if caps else 0

    def mark_down(self, url: str, reason: str) -> None:
        w = self.workers.get(url)
        if w is None:
            return
        w.last_error = reason
        if w.healthy:
            w.healthy = False
            log.warning("worker %s taken out: %s", url, reason)
            for cb in self.on_down:
                cb(url)

    def record_failure(self, url: str, reason: str, now: float | None = None) -> None:
        """A request to this worker failed: take it out and open its breaker."""
        w = self.workers.get(url)
        if w is None:
            return
        w.request_failures += 1
        cooldown = min(self.breaker_max_cooldown_s, self.breaker_cooldown_s * 2 ** (w.request_failures - 1))
        w.down_until = (time.monotonic() if now is None else now) + cooldown
        self.mark_down(url, reason)

    def record_success(self, url: str | None) -> None:
        """A request to this worker succeeded: its breaker closes."""
        w = self.workers.get(url) if url else None
        if w is not None and w.request_failures:
            w.request_failures = 0

    def _mark_up(self, w: Worker) -> None:
        if not w.healthy:
            log.info("worker %s (%s) is healthy", w.url, w.role)
        w.healthy = True
        w.poll_failures = 0
        w.last_error = None

    # --- polling ---------------------------------------------------------------------------

    async def poll_once(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        await asyncio.gather(*(self._poll(session, w, timeout_s) for w in self.workers.values()))

    async def _poll(self, session: aiohttp.ClientSession, w: Worker, timeout_s: float) -> None:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            if not w.healthy or not w.info_loaded:
                async with session.get(w.url + "/server_info", timeout=timeout) as r:
                    if r.status != 200:
                        raise RuntimeError(f"/server_info answered {r.status}")
                    w.apply_server_info(await r.json(content_type=None))
            polled_at = time.monotonic()
            w.set_load(*await self._fetch_load(session, w, timeout), polled_at)
            if w.healthy or polled_at >= w.down_until:  # an open breaker waits out its cooldown
                self._mark_up(w)
        except ValueError as e:  # a misconfigured role: keep it out, loudly
            self.mark_down(w.url, str(e))
            w.last_error = str(e)
        except Exception as e:  # unreachable, or an answer of the wrong shape: never the poller's end
            w.poll_failures += 1
            if w.poll_failures >= _POLL_FAILURES_TO_DOWN or not w.healthy:
                self.mark_down(w.url, f"poll failed: {type(e).__name__}: {e}")

    async def _fetch_load(
        self, session: aiohttp.ClientSession, w: Worker, timeout: aiohttp.ClientTimeout
    ) -> tuple[LoadReport, str]:
        if w.load_source != "metrics":
            async with session.get(
                w.url + "/v1/loads", params={"include": "core,disagg,queues,memory"}, timeout=timeout
            ) as r:
                if r.status == 200:
                    try:
                        return parse_v1_loads(await r.json(content_type=None)), "v1/loads"
                    except ValueError:
                        pass
                elif r.status >= 500:
                    raise RuntimeError(f"/v1/loads answered {r.status}")
        async with session.get(w.url + "/metrics", timeout=timeout) as r:
            if r.status == 200:
                try:
                    return parse_prometheus(await r.text()), "metrics"
                except ValueError:
                    pass
            elif r.status >= 500:
                raise RuntimeError(f"/metrics answered {r.status}")
        # Reachable but no load report: keep it in service with the router's own counts only.
        return LoadReport(max_total_tokens=w.max_total_tokens), "inflight-only"

    async def poll_forever(self, session: aiohttp.ClientSession, interval_s: float) -> None:
        timeout_s = max(2.0, 4 * interval_s)
        while True:
            await self.poll_once(session, timeout_s)
            await asyncio.sleep(interval_s)
