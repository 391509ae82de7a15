"""Prometheus metrics with SGLang's names (``sglang:`` prefix, label ``model_name``).

One ``EngineMetrics`` per worker, on its own CollectorRegistry (no process globals). The
engine thread calls the ``on_*`` hooks; gauges derived from scheduler state are refreshed
when /metrics is scraped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .request import Mode, Req

if TYPE_CHECKING:
    from .scheduler import Scheduler, Step

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class EngineMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self._labels = {"model_name": model_name}
        self._lock = threading.Lock()
        self._recent_tokens: deque[tuple[float, int]] = deque()
        self.kv_transfer_bytes_total = 0
        self.kv_transfer_last_speed_gb_s = 0.0
        self.kv_transfer_last_latency_ms = 0.0
        self.prompt_tokens = 0
        self.cached_tokens = 0

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"sglang:{name}", doc, ["model_name"], registry=self.registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"sglang:{name}", doc, ["model_name"], registry=self.registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(f"sglang:{name}", doc, ["model_name"], buckets=_LATENCY_BUCKETS, registry=self.registry)

        self.g_running = gauge("num_running_reqs", "Admitted requests (prefilling, decoding, transferring).")
        self.g_queue = gauge("num_queue_reqs", "Requests waiting for admission.")
        self.g_token_usage = gauge("token_usage", "Fraction of KV slots in use (evictable cache excluded).")
        self.g_used_tokens = gauge("num_used_tokens", "KV slots in use.")
        self.g_max_tokens = gauge("max_total_num_tokens", "KV pool capacity in tokens.")
        self.g_cache_hit = gauge("cache_hit_rate", "Cached prompt tokens / prompt tokens, since start.")
        self.g_throughput = gauge("gen_throughput", "Generated tokens/s over the last 10 s.")
        self.g_transfer_speed = gauge("kv_transfer_speed_gb_s", "Speed of the last KV transfer (GB/s).")
        self.g_transfer_latency = gauge("kv_transfer_latency_ms", "Duration of the last KV transfer (ms).")
        self.c_prompt = counter("prompt_tokens", "Prompt tokens processed.")
        self.c_generation = counter("generation_tokens", "Tokens generated.")
        self.c_cached = counter("cached_tokens", "Prompt tokens served from a cache.")
        self.c_requests = counter("num_requests", "Finished requests.")
        self.c_aborted = counter("num_aborted_requests", "Aborted requests.")
        self.c_transfer_failed = counter("num_transfer_failed_reqs", "Failed KV transfers.")
        self.c_transfer_mb = counter("kv_transfer_total_mb", "KV megabytes sent or received.")
        self.h_ttft = histogram("time_to_first_token_seconds", "Time to first token.")
        self.h_e2e = histogram("e2e_request_latency_seconds", "End-to-end request latency.")
        self.h_itl = histogram("inter_token_latency_seconds", "Time between two output tokens.")
        self.h_step = histogram("forward_step_seconds", "Duration of one engine step.")
        self.g_max_tokens.labels(**self._labels)

    def fresh(self) -> EngineMetrics:
        """A new, empty EngineMetrics for the same model (counters restart at zero)."""
        return EngineMetrics(self._labels["model_name"])

    # ---- hooks (engine thread / event loop) ---------------------------------------------
    def on_step(self, step: Step, seconds: float) -> None:
        self.h_step.labels(**self._labels).observe(seconds)

    def on_token(self, req: Req, seconds: float) -> None:
        self.h_itl.labels(**self._labels).observe(seconds)
        with self._lock:
            self._recent_tokens.append((time.monotonic(), 1))

    def on_finish(self, req: Req) -> None:
        labels = self._labels
        generated = len(req.output_ids)
        counted_prompt = req.mode is not Mode.DECODE_RECV or req.first_token_time is not None
        with self._lock:
            if counted_prompt:
                self.prompt_tokens += req.prompt_len
                self.cached_tokens += req.cached_tokens
        self.c_requests.labels(**labels).inc()
        self.c_prompt.labels(**labels).inc(req.prompt_len)
        self.c_cached.labels(**labels).inc(req.cached_tokens)
        self.c_generation.labels(**labels).inc(generated)
        reason = req.finish_reason or {}
        if reason.get("type") == "abort":
            self.c_aborted.labels(**labels).inc()
        if req.first_token_time is not None:
            self.h_ttft.labels(**labels).observe(req.first_token_time - req.arrival_time)
        self.h_e2e.labels(**labels).observe(time.monotonic() - req.arrival_time)

    def on_kv_transfer(self, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.kv_transfer_bytes_total += nbytes
            self.kv_transfer_last_latency_ms = seconds * 1000
            self.kv_transfer_last_speed_gb_s = nbytes / seconds / 1e9 if seconds > 0 else 0.0
        self.c_transfer_mb.labels(**self._labels).inc(nbytes / 1e6)

    def on_transfer_failed(self) -> None:
        self.c_transfer_failed.labels(**self._labels).inc()

    # ---- derived values ---------------------------------------------------------------
    @property
    def cache_hit_rate(self) -> float:
        with self._lock:
            return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def gen_throughput(self, window: float = 10.0) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent_tokens and self._recent_tokens[0][0] < now - window:
                self._recent_tokens.popleft()
            return sum(n for _, n in self._recent_tokens) / window

    def render(self, scheduler: Scheduler) -> bytes:
        labels = self._labels
        self.g_running.labels(**labels).set(scheduler.num_running)
        self.g_queue.labels(**labels).set(scheduler.num_waiting)
        self.g_used_tokens.labels(**labels).set(scheduler.num_used_tokens)
        self.g_max_tokens.labels(**labels).set(scheduler.max_total_tokens)
        self.g_token_usage.labels(**labels).set(scheduler.num_used_tokens / scheduler.max_total_tokens)
        self.g_cache_hit.labels(**labels).set(self.cache_hit_rate)
        self.g_throughput.labels(**labels).set(self.gen_throughput())
        self.g_transfer_speed.labels(**labels).set(self.kv_transfer_last_speed_gb_s)
        self.g_transfer_latency.labels(**labels).set(self.kv_transfer_last_latency_ms)
        return generate_latest(self.registry)
