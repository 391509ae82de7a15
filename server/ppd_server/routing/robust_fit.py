"""A robust online fit of one timing component, ``y ~ theta . x``, with the profile as the prior.

The cost model keeps one per worker and per component (prefill, decode step). It is the MAP
estimate over the last ``window`` samples under three assumptions, each a fact about timings:

* **relative noise**: a sample's standard deviation is ``scale * prediction``. Timing jitter
  (a cold cache, a co-tenant, a GC pause) stretches a 200 ms prefill more than a 5 ms one.
* **outliers**: a sample is judged by its log ratio ``r = ln(y / prediction) / scale`` (so "2x
  too slow" is exactly as surprising as "2x too fast") and weighted by Tukey's biweight
  ``(1 - (r/c)^2)^2``, zero beyond ``c`` = 4.685. A sample far outside the fit's scatter (a
  cold first request, a burst the load poll had not seen) does not count at all.
* **a running robust scale**: ``scale`` is the MAD of the window's log ratios, pooled with a
  prior guess worth :data:`_SCALE_PRIOR_SAMPLES` samples. At least half the window always lies
  within the scale, so evidence is never all discarded. A profile that is wrong everywhere
  gives uniformly large ratios: the scale widens and every sample counts, so the fit converges.
  One odd sample amid consistent ones leaves the scale small, so it is rejected. A worker whose
  speed really changes is believed once the new speed holds half the window.

The prior is Gaussian, ``theta ~ N(theta0, diag(prior_std^2))``. Its width says how much the
profile is trusted; the cost model sets it (see ``cost_model.py``).

Why not recursive least squares: RLS weighs a sample once, against the estimate at its
arrival, and never revisits it. With a loose prior the first sample is absorbed almost whole,
and later true samples are judged against that wrong estimate: a cold first request locked the
fit in. Here every refit re-weighs the whole window (iteratively reweighted least squares,
warm-started from the last estimate, ``steps`` rounds per sample), so consistent evidence wins
back from an early outlier. The window also bounds memory and lets the fit follow drift.

The estimate is constrained to ``theta >= 0`` (a timing coefficient is never negative): the
weighted least-squares problem is solved exactly, trying the sets of free coefficients against
the KKT conditions. Pure Python on purpose: k = 3 and windows are small, and numpy's per-call
overhead exceeds the arithmetic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from ppd_server.routing.linalg import median, nonnegative_solve

_TUKEY_C = 4.685  # Tukey's biweight at 95% efficiency under Gaussian noise
_SCALE_PRIOR_SAMPLES = 8.0  # the prior guess of the scale counts like this many samples
_SCALE_BOUNDS = (0.05, 2.0)  # timings repeat within 5% at best; 2.0 still accepts samples 10^4x off
_MAD_TO_STD = 1.4826
_FLOOR_MS = 0.1  # predictions below this are noise-floored (no division by ~0)


class RobustFit:
    def __init__(
        self, theta0: Sequence[float], prior_std: Sequence[float], scale0: float = 0.2, window: int = 64, steps: int = 3
    ) -> None:
        if len(theta0) != 3 or len(prior_std) != 3:
            raise ValueError("RobustFit fits three coefficients (theta0 and prior_std of length 3)")
        if not scale0 > 0:
            raise ValueError(f"scale0 must be > 0, got {scale0}")
        if window < 1 or steps < 1:
            raise ValueError(f"window and steps must be >= 1, got {window}, {steps}")
        self.theta0 = [float(t) for t in theta0]
        self.theta = list(self.theta0)
        self._prior_prec = [1.0 / max(float(s), 1e-12) ** 2 for s in prior_std]
        self._scale0 = scale0
        self.scale = scale0
        self._steps = steps
        self._window: deque[tuple[tuple[float, ...], float]] = deque(maxlen=window)
        self.samples = 0  # all samples ever folded in (the window holds the latest)

    def rebased(self, other: RobustFit) -> RobustFit:
        """``other`` (a fresh fit with another prior) with this fit's window folded in, oldest first."""
        for x, y in self._window:
            other.update(x, y)
        return other

    def window_error(self, theta: Sequence[float]) -> float:
        """Median absolute log ratio of the window's samples to ``theta``'s predictions (0 when empty)."""
        if not self._window:
            return 0.0
        t0, t1, t2 = theta
        floor, log = _FLOOR_MS, math.log
        # the prediction as _irls_step writes it (a zero's sign aside, which the floor erases, what
        # ``sum`` of the three products gives on Python < 3.12), floored like max(prediction, floor)
        return median(
            [
                abs(log(y / (floor if floor > (v := t0 * x0 + t1 * x1 + t2 * x2) else v)))
                for (x0, x1, x2), y in self._window
            ]
        )

    def predict(self, x: Sequence[float]) -> float:
        return sum(t * xi for t, xi in zip(self.theta, x))

    def update(self, x: Sequence[float], y: float) -> None:
        """Fold in one sample (``y > 0``; others are ignored) and refit over the window."""
        if not y > 0 or not math.isfinite(y):
            return
        self._window.append((tuple(float(v) for v in x), float(y)))
        self.samples += 1
        for _ in range(self._steps):
            before = self.theta
            self._irls_step()
            if all(abs(t - b) <= 1e-3 * abs(b) + 1e-9 for t, b in zip(self.theta, before)):
                break  # converged (the usual case once the fit has settled)

    def _irls_step(self) -> None:
        """One reweighting: scale and weights from the current theta, then the constrained WLS solve
        (written out for k = 3: this runs over the whole window on every observation)."""
        t0, t1, t2 = self.theta
        window = self._window
        floor, log = _FLOOR_MS, math.log
        # max(prediction, floor) written out (max keeps its first argument unless the second is larger)
        preds = [floor if floor > (v := t0 * x0 + t1 * x1 + t2 * x2) else v for (x0, x1, x2), _ in window]
        logs = [log(y / p) for (_, y), p in zip(window, preds)]
        n = len(logs)
        mad = _MAD_TO_STD * median(list(map(abs, logs)))
        var = (_SCALE_PRIOR_SAMPLES * self._scale0**2 + n * mad * mad) / (_SCALE_PRIOR_SAMPLES + n)
        scale = self.scale = min(max(math.sqrt(var), _SCALE_BOUNDS[0]), _SCALE_BOUNDS[1])
        inv_c2 = 1.0 / (scale * _TUKEY_C) ** 2
        p0, p1, p2 = self._prior_prec
        a00, a11, a22, a01, a02, a12 = p0, p1, p2, 0.0, 0.0, 0.0
        b0, b1, b2 = (p * t for p, t in zip(self._prior_prec, self.theta0))
        for ((x0, x1, x2), y), p, lr in zip(window, preds, logs):
            u = lr * lr * inv_c2
            if u >= 1.0:
                continue
            w = (1.0 - u) ** 2 / (scale * p) ** 2
            w0, w1, w2 = w * x0, w * x1, w * x2
            a00 += w0 * x0
            a01 += w0 * x1
            a02 += w0 * x2
            a11 += w1 * x1
            a12 += w1 * x2
            a22 += w2 * x2
            b0 += w0 * y
            b1 += w1 * y
            b2 += w2 * y
        self.theta = nonnegative_solve([[a00, a01, a02], [a01, a11, a12], [a02, a12, a22]], [b0, b1, b2])
