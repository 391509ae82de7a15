"""Cost profiles: measured on a running worker, derived from a roofline, or the built-in default.

A profile is the JSON object the cost model starts from::

    {"model": "...", "coefficients": {<CostCoefficients fields>}, "samples": [...],
     "kv_bytes_per_token": int, "fit": {"prefill_abs_pct_err": .., "decode_abs_pct_err": ..}, "source": "..."}

* :func:`measure_profile` drives a unified ``ppd-worker`` (or SGLang server with a radix cache)
  over HTTP ``/generate`` with ``input_ids``: prefill at several lengths, append-prefill over
  cached prefixes, and decode steps at several batch sizes and context lengths (concurrent
  streams), then fits the coefficients by non-negative least squares (:func:`fit_coefficients`).
* :func:`roofline_profile` derives coefficients from a model size and a GPU's peak FLOP/s and
  memory bandwidth, for GPU-scale simulation.
* :data:`DEFAULT_PROFILE` is what the router starts from for an embedded SmolLM2 cluster given
  no ``--profile`` (other clusters start from generic coefficients and refit online).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ppd_server.routing.types import COEFFICIENT_NAMES, CostCoefficients

#: The built-in profile: SmolLM2-135M-Instruct (Q4_1 GGUF, bf16 compute, 1 thread) on the embedded
#: engine, measured with ``measure_profile`` on the 2-core development machine while other jobs
#: ran (load average ~3): absolute times are pessimistic, the ratios are what routing uses.
#: Replace it with `ppd-server profile` output for other hardware (or a roofline for GPUs).
DEFAULT_PROFILE: dict[str, Any] = {
    "model": "SmolLM2-135M-Instruct",
    "source": "measure_profile on the embedded ppd-worker (smollm2, bf16, --threads 1, pinned core), 2-core dev box, load avg ~3",
    "coefficients": {
        "prefill_base_ms": 57.1,
        "prefill_per_token_ms": 1.398,
        "prefill_attn_ms_per_ktok2": 292.5,
        "decode_base_ms": 18.98,
        "decode_per_seq_ms": 3.54,
        "decode_per_kctx_ms": 1.60,
    },
    "kv_bytes_per_token": 23040,
    "fit": {"prefill_abs_pct_err": 28.2, "decode_abs_pct_err": 15.5},
    # measured on this engine: the cost model trusts each coefficient within +-50% (a tight prior;
    # profiles without the field are generic or foreign and get a loose one)
    "prior_rel_std": 0.5,
    "samples": [],
}

_TOKEN_RANGE = (20, 250)  # ids valid for SmolLM2 (specials below 17) and the synthetic byte vocab


# -- fitting -----------------------------------------------------------------------------------


def _lstsq(rows: Sequence[Sequence[float]], ys: Sequence[float], cols: Sequence[int]) -> list[float] | None:
    """Least squares over the given columns (normal equations, Gauss-Jordan; k <= 3)."""
    k = len(cols)
    a = [[sum(r[i] * r[j] for r in rows) for j in cols] for i in cols]
    b = [sum(r[i] * y for r, y in zip(rows, ys)) for i in cols]
    for p in range(k):
        pivot = max(range(p, k), key=lambda i: abs(a[i][p]))
        if abs(a[pivot][p]) < 1e-12:
            return None
        a[p], a[pivot], b[p], b[pivot] = a[pivot], a[p], b[pivot], b[p]
        for i in range(k):
            if i != p:
                f = a[i][p] / a[p][p]
                a[i] = [x - f * y for x, y in zip(a[i], a[p])]
                b[i] -= f * b[p]
    return [b[i] / a[i][i] for i in range(k)]


def nnls(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Exact non-negative least squares for a handful of columns: the best feasible solution
    over every subset of active columns (2^k small solves)."""
    k = len(rows[0])
    best, best_err = [0.0] * k, sum(y * y for y in ys)
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            sol = _lstsq(rows, ys, cols)
            if sol is None or min(sol) < 0:
                continue
            theta = [0.0] * k
            for c, v in zip(cols, sol):
                theta[c] = v
            err = sum((y - sum(t * x for t, x in zip(theta, r))) ** 2 for r, y in zip(rows, ys))
            if err < best_err - 1e-12:
                best, best_err = theta, err
    return best


def _prefill_row(s: dict[str, Any]) -> list[float]:
    n, c = s["new"], s["cached"]
    return [1.0, float(n), n * (n + c) / 1e6]


def _decode_row(s: dict[str, Any]) -> list[float]:
    return [1.0, float(s["batch"]), s["context"] / 1000.0]


def _mape(rows: list[list[float]], ys: list[float], theta: list[float]) -> float:
    errs = [abs(sum(t * x for t, x in zip(theta, r)) - y) / max(y, 1e-9) for r, y in zip(rows, ys)]
    return 100.0 * sum(errs) / max(len(errs), 1)


def fit_coefficients(samples: Sequence[dict[str, Any]], fallback: CostCoefficients | None = None) -> tuple[CostCoefficients, dict[str, float]]:
    """Fit CostCoefficients from samples ``{"kind": "prefill", "new", "cached", "ms"}`` and
    ``{"kind": "decode", "batch", "context", "ms"}``. A component without samples keeps
    ``fallback``'s values. Returns (coefficients, fit errors in mean absolute %)."""
    base = (fallback or CostCoefficients()).to_dict()
    fit: dict[str, float] = {}
    pre = [s for s in samples if s.get("kind") == "prefill"]
    dec = [s for s in samples if s.get("kind") == "decode"]
    if pre:
        rows, ys = [_prefill_row(s) for s in pre], [float(s["ms"]) for s in pre]
        theta = nnls(rows, ys)
        base.update(zip(COEFFICIENT_NAMES[:3], theta))
        fit["prefill_abs_pct_err"] = _mape(rows, ys, theta)
    if dec:
        rows, ys = [_decode_row(s) for s in dec], [float(s["ms"]) for s in dec]
        theta = nnls(rows, ys)
        base.update(zip(COEFFICIENT_NAMES[3:], theta))
        fit["decode_abs_pct_err"] = _mape(rows, ys, theta)
    return CostCoefficients.from_dict(base), fit


# -- measuring a live worker -------------------------------------------------------------------


class ProfileError(RuntimeError):
    """The worker could not be profiled (unreachable, error answers, no tokens); names the URL."""


class _Probe:
    def __init__(self, url: str, timeout_s: float, seed: int) -> None:
        import httpx  # light, but only needed here

        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout_s, trust_env=False)
        self.rng = random.Random(seed)

    def tokens(self, n: int) -> list[int]:
        return [self.rng.randrange(*_TOKEN_RANGE) for _ in range(n)]

    def stream(self, input_ids: list[int], max_new_tokens: int) -> tuple[float, list[float], dict[str, Any]]:
        """(ttft_ms, chunk arrival times in ms after the request, last meta_info)."""
        body = {
            "input_ids": input_ids,
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0.0, "ignore_eos": True},
            "stream": True,
        }
        t0 = time.perf_counter()
        arrivals: list[float] = []
        meta: dict[str, Any] = {}
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
                arrivals.append((time.perf_counter() - t0) * 1e3)
                meta = json.loads(data).get("meta_info", meta)
        if not arrivals:
            raise ProfileError(f"worker {self.url} streamed no tokens")
        return arrivals[0], arrivals, meta

    def server_info(self) -> dict[str, Any]:
        r = self.client.get(f"{self.url}/server_info")
        return r.json() if r.status_code == 200 else {}


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def measure_profile(
    worker_url: str,
    prefill_lengths: Sequence[int] = (16, 64, 128, 256, 512),
    append_prefixes: Sequence[int] = (256, 512),
    append_lengths: Sequence[int] = (16, 64, 128),
    decode_batches: Sequence[int] = (1, 2, 4, 8),
    decode_contexts: Sequence[int] = (32, 256),
    decode_steps: int = 24,
    repeats: int = 2,
    timeout_s: float = 120.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure a running unified worker (radix cache on) over HTTP and fit a profile.

    Prefill and append samples are the TTFT of a 1-token request (so they include the HTTP and
    sampling overhead the router sees); decode samples are the median inter-token gap of
    ``batch`` concurrent streams once all are decoding. Bounded: every request has a timeout and
    the sample count is fixed by the arguments.
    """
    import httpx

    probe = _Probe(worker_url, timeout_s, seed)
    try:
        return _measure(probe, worker_url, prefill_lengths, append_prefixes, append_lengths, decode_batches, decode_contexts, decode_steps, repeats)
    except httpx.HTTPError as e:
        raise ProfileError(f"cannot profile worker {worker_url}: {type(e).__name__}: {e}") from None
    except (ValueError, KeyError) as e:  # a non-SGLang answer (bad JSON / fields)
        raise ProfileError(f"cannot profile worker {worker_url}: unexpected answer ({e})") from None
    finally:
        probe.client.close()


def _measure(
    probe: _Probe,
    worker_url: str,
    prefill_lengths: Sequence[int],
    append_prefixes: Sequence[int],
    append_lengths: Sequence[int],
    decode_batches: Sequence[int],
    decode_contexts: Sequence[int],
    decode_steps: int,
    repeats: int,
) -> dict[str, Any]:
    info = probe.server_info()
    probe.stream(probe.tokens(8), 2)  # warm-up (lazy init, first-call overheads)
    samples: list[dict[str, Any]] = []
    for n in prefill_lengths:
        for _ in range(repeats):
            ttft, _, meta = probe.stream(probe.tokens(n), 1)
            cached = int(meta.get("cached_tokens", 0) or 0)
            samples.append({"kind": "prefill", "new": n - cached, "cached": cached, "ms": ttft})
    for c in append_prefixes:
        for m in append_lengths:
            for _ in range(repeats):
                prefix = probe.tokens(c)
                probe.stream(prefix, 1)
                ttft, _, meta = probe.stream(prefix + probe.tokens(m), 1)
                cached = int(meta.get("cached_tokens", c) or 0)
                prompt = int(meta.get("prompt_tokens", c + m) or c + m)
                samples.append({"kind": "prefill", "new": prompt - cached, "cached": cached, "ms": ttft})
    for ctx in decode_contexts:
        for b in decode_batches:
            samples.append(_decode_sample(probe, b, ctx, decode_steps))
    coefs, fit = fit_coefficients(samples)
    return {
        "model": info.get("served_model_name") or info.get("model_path") or "unknown",
        "source": f"measure_profile({worker_url})",
        "coefficients": coefs.to_dict(),
        "kv_bytes_per_token": int(info.get("kv_bytes_per_token", 0) or 0),
        "fit": fit,
        "samples": samples,
    }


def _decode_sample(probe: _Probe, batch: int, context: int, steps: int) -> dict[str, Any]:
    prompts = [probe.tokens(context) for _ in range(batch)]
    with ThreadPoolExecutor(max_workers=batch) as pool:
        results = list(pool.map(lambda p: probe.stream(p, steps), prompts))
    # Streams start together (arrival times are relative to each stream's own send, which are
    # within a thread start of each other). Per stream, the mean token interval over the window
    # where every stream was decoding (robust to SSE events arriving coalesced); then the median.
    all_started = max(r[0] for r in results)
    first_done = min(r[1][-1] for r in results)
    rates = []
    for _, arr, _ in results:
        window = [t for t in arr if all_started <= t <= first_done]
        if len(window) >= 3:
            rates.append((window[-1] - window[0]) / (len(window) - 1))
    if not rates:  # the streams did not overlap long enough: use whole streams
        rates = [(arr[-1] - arr[0]) / (len(arr) - 1) for _, arr, _ in results if len(arr) > 1]
    mid_context = batch * (context + steps // 2)
    return {"kind": "decode", "batch": batch, "context": mid_context, "ms": _median(rates) if rates else 0.0}


# -- roofline and files ------------------------------------------------------------------------


def roofline_profile(
    params_b: float, flops_tflops: float, mem_bw_gbs: float, kv_bytes_per_token: int, mfu: float = 0.55, bw_efficiency: float = 0.8, bytes_per_param: float = 2.0
) -> dict[str, Any]:
    """Coefficients from first principles for a dense model on an accelerator.

    Prefill is compute-bound: 2*params FLOPs per token at ``mfu`` of peak; attention adds about
    4 * d_model * layers FLOPs per (query, key) pair, which for grouped-query attention (4 query
    heads per KV head, 2-byte KV) equals ``kv_bytes_per_token``. A decode step is
    bandwidth-bound: reading the weights once, plus every stream's KV. Llama-3.1-8B on H100
    (8.0, 989.5, 3350, 131072) gives ~29 us/prefill token and a ~6 ms decode step base.
    """
    for name, v in (("params_b", params_b), ("flops_tflops", flops_tflops), ("mem_bw_gbs", mem_bw_gbs)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    if kv_bytes_per_token <= 0:
        raise ValueError(f"kv_bytes_per_token must be > 0, got {kv_bytes_per_token!r}")
    flops = flops_tflops * 1e12 * mfu
    bw = mem_bw_gbs * 1e9 * bw_efficiency
    weights_ms = params_b * 1e9 * bytes_per_param / bw * 1e3
    per_token_ms = 2 * params_b * 1e9 / flops * 1e3
    coefs = CostCoefficients(
        prefill_base_ms=weights_ms,
        prefill_per_token_ms=per_token_ms,
        prefill_attn_ms_per_ktok2=4.0 * kv_bytes_per_token * 1e6 / flops * 1e3,
        decode_base_ms=weights_ms,
        decode_per_seq_ms=per_token_ms,
        decode_per_kctx_ms=kv_bytes_per_token * 1000 / bw * 1e3,
    )
    return {
        "model": f"roofline:{params_b:g}B",
        "source": f"roofline_profile(params_b={params_b}, tflops={flops_tflops}, gbs={mem_bw_gbs}, mfu={mfu}, bw_eff={bw_efficiency})",
        "coefficients": coefs.to_dict(),
        "kv_bytes_per_token": int(kv_bytes_per_token),
        "samples": [],
    }


def save_profile(profile: dict[str, Any], path: str | Path) -> None:
    validate_profile(profile)
    Path(path).write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n")


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a profile file; errors name the file and the problem."""
    try:
        profile = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read profile {str(path)!r}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"profile {str(path)!r} is not valid JSON: {e}") from None
    try:
        validate_profile(profile)
    except ValueError as e:
        raise ValueError(f"profile {str(path)!r}: {e}") from None
    return profile


def validate_profile(profile: Any) -> None:
    if not isinstance(profile, dict) or not isinstance(profile.get("coefficients"), dict):
        raise ValueError("a profile must be a JSON object with a 'coefficients' object")
    CostCoefficients.from_dict(profile["coefficients"])
