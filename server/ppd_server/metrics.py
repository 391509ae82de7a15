"""Prometheus metrics of one router app, in its own CollectorRegistry (no process globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ppd_server.fleet.workers import WorkerRegistry

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def turn_bucket(turn: int) -> str:
    return "1" if turn <= 1 else "2-3" if turn <= 3 else "4-7" if turn <= 7 else "8+"


class RouterMetrics:
    def __init__(self, workers: WorkerRegistry, error_summary: Callable[[], dict]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ppd_requests", "Requests routed", ["route", "turn_bucket"], registry=r)
        self.errors = Counter(
            "ppd_request_errors",
            'Requests answered with an error (HTTP status, or "worker" for a worker-side failure)',
            ["status"],
            registry=r,
        )
        self.ttft = Histogram(
            "ppd_ttft_seconds", "Observed time to first token (streams)", ["route"], buckets=_TTFT_BUCKETS, registry=r
        )
        self.tpot = Histogram(
            "ppd_tpot_seconds", "Observed time per output token (streams)", ["route"], buckets=_TPOT_BUCKETS, registry=r
        )
        self.decisions = Counter("ppd_decisions", "Routing decisions", ["policy", "route"], registry=r)
        self.kv_bytes = Counter("ppd_kv_bytes", "KV bytes moved P->D (reported, else estimated)", registry=r)
        self.retries = Counter("ppd_retries", "Dispatch attempts retried on another worker", registry=r)
        self.sessions = Gauge("ppd_sessions", "Conversations in the session table", registry=r)
        r.register(_LiveCollector(workers, error_summary))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    """Worker health/load and the cost model's prediction error, read at scrape time."""

    def __init__(self, workers: WorkerRegistry, error_summary: Callable[[], dict]) -> None:
        self._workers = workers
        self._error_summary = error_summary

    def describe(self):
        return []

    def collect(self):
        healthy = GaugeMetricFamily("ppd_worker_healthy", "1 if the worker is in service", labels=["worker", "role"])
        running = GaugeMetricFamily(
            "ppd_worker_running_reqs", "Running requests (worker report)", labels=["worker", "role"]
        )
        waiting = GaugeMetricFamily(
            "ppd_worker_waiting_reqs", "Queued requests (worker report)", labels=["worker", "role"]
        )
        inflight = GaugeMetricFamily(
            "ppd_worker_inflight", "Requests the router has in flight", labels=["worker", "role"]
        )
        for w in self._workers:
            labels = [w.url, w.role]
            healthy.add_metric(labels, 1.0 if w.healthy else 0.0)
            running.add_metric(labels, w.load.running_reqs)
            waiting.add_metric(labels, w.load.waiting_reqs)
            inflight.add_metric(labels, w.inflight)
        yield from (healthy, running, waiting, inflight)
        err = GaugeMetricFamily(
            "ppd_prediction_error_ratio",
            "Cost model, recent turns: mean |predicted-observed|/observed (*_abs_err) and "
            "mean observed/predicted (*_obs_over_pred)",
            labels=["route", "quantity"],
        )
        for key, value in _flatten_errors(self._error_summary()):
            err.add_metric(list(key), value)
        yield err


def _flatten_errors(summary: dict) -> list[tuple[tuple[str, str], float]]:
    """``{route: {"ttft_abs_pct_err": 12.0, "ttft_obs_over_pred": 1.1, "count": n}}`` ->
    ``(route, "ttft_abs_err") 0.12`` and ``(route, "ttft_obs_over_pred") 1.1`` (ratios; counts
    are not errors and are left out)."""
    out: list[tuple[tuple[str, str], float]] = []
    for route, row in (summary or {}).items():
        if not isinstance(row, dict):
            continue
        for q, v in row.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
                continue
            if q.endswith("_abs_pct_err"):
                out.append(((str(route), q.replace("_abs_pct_err", "_abs_err")), float(v) / 100.0))
            elif q.endswith("_obs_over_pred"):
                out.append(((str(route), q), float(v)))
    return out
