"""Recursive least squares with a prior, exponential forgetting and a bounded covariance.

Used by the router's token-count estimator (``request_path/token_count.py``: prompt tokens from
request bytes), where samples are cheap, plentiful and clean. The cost model does NOT use it: its
timing fits are ``robust_fit.RobustFit`` (RLS weighs each sample once against the estimate at its
arrival, so one cold first request locked a timing fit in; see ``robust_fit.py``).

``theta`` starts at a prior, and each observation moves it as much as the
prior uncertainty allows - Bayesian linear regression, updated in O(k^2) per sample. Forgetting
(``lam`` < 1) lets the fit follow a drift (a new tokenizer mix); the covariance is capped at the
prior so that directions the traffic never excites (e.g. always the same request size) cannot blow
up and make one odd sample swing the fit.

:meth:`bounded_theta` is the estimate projected onto ``theta >= lower`` in the metric of the
covariance (the most likely feasible parameters): noisy, collinear traffic can otherwise push one
coefficient below a physical bound while another overshoots. The projection is applied on read
only; clipping the running estimate itself
would make the recursion unstable.

Pure Python on purpose: k <= 3, and numpy's per-call overhead is larger than the arithmetic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ppd_server.routing.linalg import solve_linear


class RecursiveLeastSquares:
    def __init__(
        self, theta0: Sequence[float], prior_std: Sequence[float], noise_std: float = 1.0, lam: float = 0.995
    ) -> None:
        if len(theta0) != len(prior_std):
            raise ValueError("theta0 and prior_std must have the same length")
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"forgetting factor must be in (0, 1], got {lam}")
        if noise_std <= 0:
            raise ValueError(f"noise_std must be > 0, got {noise_std}")
        k = len(theta0)
        self.theta = [float(t) for t in theta0]
        self._lam = lam
        # P is the parameter covariance divided by the noise variance (standard RLS scaling)
        self._prior_diag = [max(float(s), 1e-12) ** 2 / noise_std**2 for s in prior_std]
        self._p = [[self._prior_diag[i] if i == j else 0.0 for j in range(k)] for i in range(k)]
        self.samples = 0

    def predict(self, x: Sequence[float]) -> float:
        return sum(t * xi for t, xi in zip(self.theta, x))

    def update(self, x: Sequence[float], y: float, weight: float = 1.0) -> float:
        """Fold in one sample ``y ~ theta . x`` counted ``weight`` times (0 < weight; a weight
        below 1 means a noisier sample); returns the prior residual ``y - prediction``."""
        k = len(self.theta)
        p = self._p
        px = [sum(p[i][j] * x[j] for j in range(k)) for i in range(k)]
        residual = y - self.predict(x)
        if not weight > 0:
            return residual
        denom = self._lam / weight + sum(x[i] * px[i] for i in range(k))
        if denom <= 0:
            return residual
        gain = [v / denom for v in px]
        self.theta = [self.theta[i] + gain[i] * residual for i in range(k)]
        # P <- (P - g (P x)^T) / lam, then cap each variance at the prior's (rescaling its row/col)
        new_p = [[(p[i][j] - gain[i] * px[j]) / self._lam for j in range(k)] for i in range(k)]
        for i in range(k):
            if new_p[i][i] > self._prior_diag[i]:
                scale = (self._prior_diag[i] / new_p[i][i]) ** 0.5
                for j in range(k):
                    new_p[i][j] *= scale
                    new_p[j][i] *= scale
        self._p = new_p
        self.samples += 1
        return residual

    def bounded_theta(self, lower: Sequence[float]) -> list[float]:
        """argmin (t - theta)' P^-1 (t - theta) subject to t >= lower.

        A convex QP: the active set A whose solution is feasible and whose multipliers
        P_AA^-1 (lower_A - theta_A) are >= 0 is the optimum (KKT). The set of violated
        coordinates is tried first (usually right), then every other set.
        """
        theta = self.theta
        k = len(theta)
        violated = tuple(i for i in range(k) if theta[i] < lower[i])
        if not violated:
            return list(theta)
        others = (a for size in range(1, k + 1) for a in itertools.combinations(range(k), size) if a != violated)
        for active in itertools.chain((violated,), others):
            diff = [lower[i] - theta[i] for i in active]
            w = self._solve_active(active, diff)  # the multipliers
            if w is None or min(w) < -1e-12:
                continue
            cand = [theta[i] + sum(self._p[i][a] * w[n] for n, a in enumerate(active)) for i in range(k)]
            for i in active:
                cand[i] = lower[i]
            if all(c >= b - 1e-9 for c, b in zip(cand, lower)):
                return cand
        return [max(t, b) for t, b in zip(theta, lower)]  # numerically degenerate P

    def _solve_active(self, active: tuple[int, ...], rhs: list[float]) -> list[float] | None:
        p = self._p
        if len(active) == 1:  # closed forms for the common small cases (hot path of every refit)
            a = p[active[0]][active[0]]
            return [rhs[0] / a] if abs(a) > 1e-15 else None
        if len(active) == 2:
            i, j = active
            det = p[i][i] * p[j][j] - p[i][j] * p[j][i]
            if abs(det) < 1e-15:
                return None
            return [(p[j][j] * rhs[0] - p[i][j] * rhs[1]) / det, (p[i][i] * rhs[1] - p[j][i] * rhs[0]) / det]
        return solve_linear([[p[i][j] for j in active] for i in active], rhs)
