"""Measure a running worker's step-time grid over HTTP and fit a profile.

Drives a unified ``ppd-worker`` or an SGLang server (radix cache on) through ``POST /generate``
with ``input_ids`` and streamed answers - only what any SGLang-compatible worker serves - and
times, for the grid of :class:`ProfileGrid`:

* **prefill**: the TTFT of a 1-token request of ``n`` random tokens (fresh, nothing cached);
* **append**: the same over a prefix cached by a previous request (``c`` cached, ``m`` new);
* **decode**: ``b`` concurrent streams of ``ctx``-token prompts; the median inter-token gap over
  the window in which every stream was decoding;
* **mixed**: while ``b`` streams decode, one prefill (``m`` new over ``c`` cached) arrives; the
  decode streams' token gap that ends with the prefill's first token is the mixed iteration
  (the engine batches the prefill chunk with the decode rows), the gaps before it the plain step.

Prefill times include the HTTP and sampling overhead the router sees, which is what the cost
model predicts. Bounded: every request has a timeout, the grid fixes the sample count, and
``max_seconds`` stops measuring (the fit uses what was measured). Progress goes to a callback.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from ppd_server.profiling.fit import fit_coefficients
from ppd_server.routing.linalg import median as _median

_TOKEN_RANGE = (20, 250)  # ids valid for SmolLM2 (specials below 17) and the synthetic byte vocab

Progress = Callable[[int, int, str], None]  # (cells done, cells total, label of the next cell)


class ProfileError(RuntimeError):
    """The worker could not be profiled (unreachable, error answers, no tokens); names the URL."""


@dataclass(frozen=True, slots=True)
class ProfileGrid:
    """What to measure. Token counts are per request; decode/mixed contexts are per stream."""

    prefill_lengths: tuple[int, ...] = (16, 64, 128, 256, 512)
    append_prefixes: tuple[int, ...] = (256, 512)
    append_lengths: tuple[int, ...] = (16, 64, 128)
    decode_batches: tuple[int, ...] = (1, 2, 4, 8)
    decode_contexts: tuple[int, ...] = (32, 256)
    decode_steps: int = 24
    mixed_batches: tuple[int, ...] = (2, 4)
    mixed_lengths: tuple[int, ...] = (32, 128)
    mixed_cached: tuple[int, ...] = (0, 256)
    mixed_context: int = 128
    repeats: int = 2

    def validate(self) -> ProfileGrid:
        for name, values in (
            ("prefill_lengths", self.prefill_lengths),
            ("append_prefixes", self.append_prefixes),
            ("append_lengths", self.append_lengths),
            ("decode_batches", self.decode_batches),
            ("decode_contexts", self.decode_contexts),
            ("mixed_batches", self.mixed_batches),
            ("mixed_lengths", self.mixed_lengths),
        ):
            if any(not isinstance(v, int) or v < 1 or v > 131072 for v in values):
                raise ValueError(f"{name} must be integers in [1, 131072], got {list(values)}")
        if any(not isinstance(v, int) or v < 0 or v > 131072 for v in self.mixed_cached):
            raise ValueError(f"mixed_cached must be integers in [0, 131072], got {list(self.mixed_cached)}")
        if any(b > 256 for b in (*self.decode_batches, *self.mixed_batches)):
            raise ValueError("decode/mixed batches must be <= 256")
        for name, v, lo, hi in (
            ("decode_steps", self.decode_steps, 4, 4096),
            ("mixed_context", self.mixed_context, 1, 131072),
            ("repeats", self.repeats, 1, 100),
        ):
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        return self

    def cells(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every measurement, in order: (kind, parameters)."""
        out: list[tuple[str, tuple[int, ...]]] = []
        for _ in range(self.repeats):
            out += [("prefill", (n,)) for n in self.prefill_lengths]
            out += [("append", (c, m)) for c in self.append_prefixes for m in self.append_lengths]
        out += [("decode", (b, ctx)) for ctx in self.decode_contexts for b in self.decode_batches]
        for _ in range(self.repeats):
            out += [
                ("mixed", (b, m, c)) for c in self.mixed_cached for m in self.mixed_lengths for b in self.mixed_batches
            ]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: a grid for tests and smoke runs: one sample per kind and shape that the fit needs (~10 s on CPU)
TINY_GRID = ProfileGrid(
    prefill_lengths=(16, 64, 160),
    append_prefixes=(64,),
    append_lengths=(16,),
    decode_batches=(1, 2, 3),
    decode_contexts=(32,),
    decode_steps=6,
    mixed_batches=(2,),
    mixed_lengths=(32,),
    mixed_cached=(0,),
    mixed_context=32,
    repeats=1,
)
#: the default grid minus repeats and the largest shapes (~half the time)
QUICK_GRID = ProfileGrid(
    prefill_lengths=(16, 64, 256, 512),
    append_prefixes=(256,),
    append_lengths=(16, 128),
    decode_batches=(1, 2, 4, 8),
    decode_contexts=(32, 256),
    decode_steps=16,
    mixed_batches=(2, 4),
    mixed_lengths=(32, 128),
    mixed_cached=(0, 256),
    repeats=1,
)
#: long prompts (a ~1.5k-token first turn, short appends over it): what ppd-bench's
#: long-context-cpu workload runs on the embedded cluster (benchmarks/validate_sim.py)
LONG_GRID = ProfileGrid(
    prefill_lengths=(32, 384, 1536),
    append_prefixes=(1536,),
    append_lengths=(16, 64),
    decode_batches=(1, 2, 4),
    decode_contexts=(64, 1600),
    decode_steps=12,
    mixed_batches=(1, 3),
    mixed_lengths=(48, 256),
    mixed_cached=(1536,),
    mixed_context=1600,
    repeats=1,
)
GRIDS = {"default": ProfileGrid(), "quick": QUICK_GRID, "tiny": TINY_GRID, "long": LONG_GRID}


class _Probe:
    def __init__(self, url: str, timeout_s: float, seed: int) -> None:
        import httpx  # light, but only needed here

        self.url = url.rstrip("/")
        self.client = httpx.Client(
            timeout=timeout_s, trust_env=False, limits=httpx.Limits(max_connections=300, max_keepalive_connections=300)
        )
        self.rng = random.Random(seed)
        self._prefixes: dict[int, list[int]] = {}

    def tokens(self, n: int) -> list[int]:
        return [self.rng.randrange(*_TOKEN_RANGE) for _ in range(n)]

    def cached_prefix(self, n: int) -> list[int]:
        """``n`` tokens the worker has cached (prefilled once, then reused by later cells; the
        worker reports the real hit in ``cached_tokens`` if it evicted them meanwhile)."""
        if n not in self._prefixes:
            self._prefixes[n] = self.tokens(n)
            self.stream(self._prefixes[n], 1)
        return self._prefixes[n]

    def stream_prompts(self, batch: int, context: int) -> list[list[int]]:
        """``batch`` distinct prompts of ``context`` tokens for concurrent streams. Long ones share
        a cached prefix and differ in their last 16 tokens: decoding reads every stream's whole
        context all the same, and setting up the grid does not cost batch x context of prefill."""
        if context <= 64:
            return [self.tokens(context) for _ in range(batch)]
        prefix = self.cached_prefix(context - 16)
        return [prefix + self.tokens(16) for _ in range(batch)]

    def stream(
        self,
        input_ids: list[int],
        max_new_tokens: int,
        arrivals: list[float] | None = None,
        stop: threading.Event | None = None,
    ) -> tuple[float, list[float], dict[str, Any]]:
        """(ttft_ms, absolute arrival times (perf_counter s), last meta_info). ``arrivals`` is
        filled as tokens arrive (other threads may watch it); ``stop`` set ends the stream early
        (closing it aborts the request on the worker)."""
        body = {
            "input_ids": input_ids,
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0.0, "ignore_eos": True},
            "stream": True,
        }
        arrivals = [] if arrivals is None else arrivals
        meta: dict[str, Any] = {}
        t0 = time.perf_counter()
        with self.client.stream("POST", f"{self.url}/generate", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                raise ProfileError(f"worker {self.url} answered {resp.status_code}: {resp.text[:200]}")
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                arrivals.append(time.perf_counter())
                meta = json.loads(data).get("meta_info", meta)
                if stop is not None and stop.is_set():
                    break
        if not arrivals:
            raise ProfileError(f"worker {self.url} streamed no tokens")
        return (arrivals[0] - t0) * 1e3, arrivals, meta

    def server_info(self) -> dict[str, Any]:
        r = self.client.get(f"{self.url}/server_info")
        if r.status_code != 200:
            r = self.client.get(f"{self.url}/get_server_info")
        return r.json() if r.status_code == 200 else {}


def measure_profile(
    worker_url: str,
    grid: ProfileGrid | None = None,
    timeout_s: float = 120.0,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure a running unified worker (radix cache on) over HTTP and fit a profile.

    ``max_seconds`` bounds the measuring: cells not started by then are skipped (listed in
    the profile's ``"skipped"``). Raises :class:`ProfileError` naming the URL on any failure.
    """
    import httpx

    grid = (grid or ProfileGrid()).validate()
    probe = _Probe(worker_url, timeout_s, seed)
    try:
        return _measure(probe, grid, max_seconds, progress)
    except httpx.HTTPError as e:
        raise ProfileError(f"cannot profile worker {worker_url}: {type(e).__name__}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:  # a non-SGLang answer (bad JSON / fields)
        raise ProfileError(f"cannot profile worker {worker_url}: unexpected answer ({e})") from None
    finally:
        probe.client.close()


def _measure(probe: _Probe, grid: ProfileGrid, max_seconds: float | None, progress: Progress | None) -> dict[str, Any]:
    started = time.monotonic()
    info = probe.server_info()
    probe.stream(probe.tokens(8), 2)  # warm-up (lazy init, first-call overheads)
    samples: list[dict[str, Any]] = []
    cells = grid.cells()
    skipped = 0
    for i, (kind, params) in enumerate(cells):
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            skipped = len(cells) - i
            break
        if progress is not None:
            progress(i, len(cells), f"{kind} {params}")
        if kind == "prefill":
            ttft, _, meta = probe.stream(probe.tokens(params[0]), 1)
            cached = int(meta.get("cached_tokens", 0) or 0)
            samples.append({"kind": "prefill", "new": params[0] - cached, "cached": cached, "ms": round(ttft, 3)})
        elif kind == "append":
            c, m = params
            prefix = probe.cached_prefix(c)
            ttft, _, meta = probe.stream(prefix + probe.tokens(m), 1)
            cached = int(meta.get("cached_tokens", c) or 0)
            prompt = int(meta.get("prompt_tokens", c + m) or c + m)
            samples.append({"kind": "prefill", "new": prompt - cached, "cached": cached, "ms": round(ttft, 3)})
        elif kind == "decode":
            samples.append(_decode_sample(probe, params[0], params[1], grid.decode_steps))
        else:
            batch, new, cached = params
            samples.extend(
                _mixed_samples(
                    probe,
                    batch,
                    new,
                    cached,
                    context=grid.mixed_context,
                    timeout_s=probe.client.timeout.read or 120.0,
                )
            )
    if progress is not None:
        progress(len(cells) - skipped, len(cells), "fit")
    coefs, fit = fit_coefficients(samples)
    chunk = int(info.get("chunked_prefill_size", 0) or 0)
    return {
        "model": info.get("served_model_name") or info.get("model_path") or "unknown",
        "source": f"ppd-server profile of {probe.url} ({info.get('version', 'unknown version')}, "
        f"{info.get('device', 'cpu?')}, threads {info.get('threads', '?')}) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "coefficients": {k: round(v, 6) for k, v in coefs.to_dict().items()},
        "kv_bytes_per_token": int(info.get("kv_bytes_per_token", 0) or 0),
        "chunked_prefill_size": chunk,
        "fit": fit,
        "grid": grid.to_dict(),
        "measure_seconds": round(time.monotonic() - started, 1),
        "skipped": skipped,
        "samples": samples,
    }


def _run_streams(
    probe: _Probe,
    prompts: list[list[int]],
    steps: int,
    stop: threading.Event | None = None,
    arrivals: list[list[float]] | None = None,
) -> list[tuple[float, list[float], dict[str, Any]]]:
    arrivals = arrivals if arrivals is not None else [[] for _ in prompts]
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        futs = [pool.submit(probe.stream, p, steps, a, stop) for p, a in zip(prompts, arrivals)]
        return [f.result() for f in futs]


def _decode_sample(probe: _Probe, batch: int, context: int, steps: int) -> dict[str, Any]:
    results = _run_streams(probe, probe.stream_prompts(batch, context), steps)
    # Per stream, the mean token interval over the window where every stream was decoding
    # (robust to SSE events arriving coalesced); then the median over streams.
    all_started = max(arr[0] for _, arr, _ in results)
    first_done = min(arr[-1] for _, arr, _ in results)
    rates = []
    for _, arr, _ in results:
        window = [t for t in arr if all_started <= t <= first_done]
        if len(window) >= 3:
            rates.append((window[-1] - window[0]) / (len(window) - 1))
    if not rates:  # the streams did not overlap long enough: use whole streams
        rates = [(arr[-1] - arr[0]) / (len(arr) - 1) for _, arr, _ in results if len(arr) > 1]
    mid_context = batch * (context + steps // 2)
    return {
        "kind": "decode",
        "batch": batch,
        "context": mid_context,
        "ms": round(_median(rates) * 1e3, 3) if rates else 0.0,
    }


def _mixed_samples(
    probe: _Probe, batch: int, new: int, cached: int, context: int, timeout_s: float
) -> list[dict[str, Any]]:
    """One mixed iteration (and the plain decode step beside it, as a decode sample)."""
    prefix = probe.cached_prefix(cached) if cached else []
    stop = threading.Event()
    arrivals: list[list[float]] = [[] for _ in range(batch)]
    out: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(_run_streams, probe, probe.stream_prompts(batch, context), 256, stop, arrivals)
        try:
            deadline = time.monotonic() + timeout_s
            while min(len(a) for a in arrivals) < 5:  # every stream decoding, a few steps in
                if fut.done() or time.monotonic() > deadline:
                    fut.result()
                    raise ProfileError(
                        f"worker {probe.url}: {batch} streams did not start decoding within {timeout_s:.0f}s"
                    )
                time.sleep(0.002)
            t_send = time.perf_counter()
            _, p_arr, meta = probe.stream(prefix + probe.tokens(new), 1)
            t_first = p_arr[0]
            deadline = time.monotonic() + timeout_s
            while min(len(a) for a in arrivals) and min(a[-1] for a in arrivals) < t_first + 0.001:
                if fut.done() or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            time.sleep(0.05)  # one more step for every stream
        finally:
            stop.set()
        fut.result()
    gaps, plain = [], []
    for arr in arrivals:
        arr = list(arr)
        if len(arr) < 4:
            continue
        i = min(range(1, len(arr)), key=lambda k: abs(arr[k] - t_first))
        gaps.append(arr[i] - arr[i - 1])
        before = [b - a for a, b in itertools.pairwise(arr[1:]) if b <= t_send]
        plain += before
    if not gaps:
        return out
    got_cached = int(meta.get("cached_tokens", 0) or 0)
    prompt = int(meta.get("prompt_tokens", len(prefix) + new) or len(prefix) + new)
    steps_in = _median([len([t for t in arr if t <= t_first]) for arr in arrivals])
    k_ctx = int(batch * (context + steps_in))
    out.append(
        {
            "kind": "mixed",
            "new": prompt - got_cached,
            "cached": got_cached,
            "batch": batch,
            "context": k_ctx,
            "ms": round(_median(gaps) * 1e3, 3),
        }
    )
    if len(plain) >= 3:
        out.append({"kind": "decode", "batch": batch, "context": k_ctx, "ms": round(_median(plain) * 1e3, 3)})
    return out
