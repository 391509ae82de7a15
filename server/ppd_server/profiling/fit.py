"""Fit the step-time model's :class:`CostCoefficients` to measured timings.

A sample is one timed engine iteration (or a sum of them), in the same shapes the probe
(:mod:`.probe`) measures and the H200 preset records:

* ``{"kind": "prefill", "new": n, "cached": c, "ms": t}`` - one prefill of ``n`` new tokens over
  ``c`` cached; with ``"chunk": k`` it ran as ``ceil(n/k)`` chunks and ``ms`` is their total;
* ``{"kind": "decode", "batch": b, "context": K, "ms": t}`` - one decode step of ``b`` streams
  holding ``K`` context tokens in total;
* ``{"kind": "mixed", "new": n, "cached": c, "batch": b, "context": K, "ms": t}`` - one
  iteration in which a prefill chunk rode with ``b`` decode streams (the engine's chunked
  prefill; the PPD append on a busy decode worker);
* ``{"kind": "stall", "new": n, "cached": c, "ms": t}`` (optionally ``"chunk"``) - what that
  prefill added to the decode streams' iterations: mixed iterations minus the same streams'
  plain decode steps, i.e. the prefill chunks minus one decode base each.

The model is the one :mod:`ppd_server.routing.latency` and the simulator apply: prefill
``base + per_token*n + attn*n*(n+c)/1e6``; decode ``base + per_seq*b + per_kctx*K/1000``; a mixed
iteration is the prefill chunk plus the decode rows without their base. All six coefficients are
fitted jointly by non-negative least squares on *relative* errors (each row divided by its
time), so a 20 ms and an 800 ms sample weigh alike and the fit reports mean absolute % error per
kind. A coefficient no sample constrains keeps the fallback's value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ppd_server.routing.linalg import nonnegative_least_squares
from ppd_server.routing.types import COEFFICIENT_NAMES, CostCoefficients

KINDS = ("prefill", "decode", "mixed", "stall")


def _prefill_part(n: float, c: float, chunk: float | None = None) -> list[float]:
    """[base, per_token, attn] features of a prefill (summed over its chunks)."""
    if not chunk or chunk >= n:
        return [1.0, n, n * (n + c) / 1e6]
    out = [0.0, 0.0, 0.0]
    done = 0.0
    while done < n:
        k = min(chunk, n - done)
        out[0] += 1.0
        out[1] += k
        out[2] += k * (k + c + done) / 1e6
        done += k
    return out


def sample_row(s: dict[str, Any]) -> list[float]:
    """The sample's feature row over COEFFICIENT_NAMES (its predicted ms = row . coefficients)."""
    kind = s.get("kind")
    if kind == "prefill":
        return _prefill_part(float(s["new"]), float(s.get("cached", 0)), s.get("chunk")) + [0.0, 0.0, 0.0]
    if kind == "decode":
        return [0.0, 0.0, 0.0, 1.0, float(s["batch"]), float(s["context"]) / 1000.0]
    if kind == "mixed":
        return _prefill_part(float(s["new"]), float(s.get("cached", 0))) + [
            0.0,
            float(s["batch"]),
            float(s["context"]) / 1000.0,
        ]
    if kind == "stall":
        part = _prefill_part(float(s["new"]), float(s.get("cached", 0)), s.get("chunk"))
        return part + [-part[0], 0.0, 0.0]
    raise ValueError(f"unknown sample kind {kind!r}; expected one of {KINDS}")


def predict_ms(coefficients: CostCoefficients, sample: dict[str, Any]) -> float:
    theta = [getattr(coefficients, n) for n in COEFFICIENT_NAMES]
    return sum(t * x for t, x in zip(theta, sample_row(sample)))


# -- the fit -------------------------------------------------------------------------------------


def fit_coefficients(
    samples: Sequence[dict[str, Any]], fallback: CostCoefficients | None = None
) -> tuple[CostCoefficients, dict[str, float]]:
    """Fit CostCoefficients to ``samples``; returns (coefficients, mean absolute % error per kind,
    as ``"<kind>_abs_pct_err"``). Coefficients no sample constrains keep ``fallback``'s values."""
    start = [getattr(fallback or CostCoefficients(), n) for n in COEFFICIENT_NAMES]
    usable = [s for s in samples if float(s.get("ms", 0) or 0) > 0 and math.isfinite(float(s["ms"]))]
    if not usable:
        return CostCoefficients.from_dict(dict(zip(COEFFICIENT_NAMES, start))), {}
    rows = [sample_row(s) for s in usable]
    ys = [float(s["ms"]) for s in usable]
    free = [j for j in range(len(COEFFICIENT_NAMES)) if any(r[j] != 0.0 for r in rows)]
    fixed = [j for j in range(len(COEFFICIENT_NAMES)) if j not in free]
    # relative errors: divide each equation by its measured time; fixed columns move to the right
    w_rows = [[r[j] / y for j in free] for r, y in zip(rows, ys)]
    w_ys = [(y - sum(r[j] * start[j] for j in fixed)) / y for r, y in zip(rows, ys)]
    theta = list(start)
    for j, v in zip(free, nonnegative_least_squares(w_rows, w_ys)):
        theta[j] = v
    coefs = CostCoefficients.from_dict(dict(zip(COEFFICIENT_NAMES, theta)))
    return coefs, fit_errors(coefs, usable)


def fit_errors(coefficients: CostCoefficients, samples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean absolute % error of ``coefficients`` on ``samples``, per kind present."""
    out: dict[str, float] = {}
    for kind in KINDS:
        errs = [
            abs(predict_ms(coefficients, s) - s["ms"]) / s["ms"]
            for s in samples
            if s.get("kind") == kind and s["ms"] > 0
        ]
        if errs:
            out[f"{kind}_abs_pct_err"] = round(100.0 * sum(errs) / len(errs), 2)
    return out
