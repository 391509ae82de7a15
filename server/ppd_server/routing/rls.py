"""Recursive least squares with a prior, exponential forgetting and a bounded covariance.

The cost model keeps one of these per worker and per timing component (prefill, decode step):
``theta`` starts at the profile's coefficients, and each observation moves it as much as the
prior uncertainty allows - Bayesian linear regression, updated in O(k^2) per sample. Forgetting
(``lam`` < 1) lets the fit follow a worker whose speed drifts; the covariance is capped at the
prior so that directions the traffic never excites (e.g. always the same batch size) cannot blow
up and make one odd sample swing the fit.

Pure Python on purpose: k = 3, and numpy's per-call overhead is larger than the arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence


class RecursiveLeastSquares:
    def __init__(self, theta0: Sequence[float], prior_std: Sequence[float], noise_std: float = 1.0, lam: float = 0.995) -> None:
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

    def update(self, x: Sequence[float], y: float) -> float:
        """Fold in one sample ``y ~ theta . x``; returns the prior residual ``y - prediction``."""
        k = len(self.theta)
        p = self._p
        px = [sum(p[i][j] * x[j] for j in range(k)) for i in range(k)]
        denom = self._lam + sum(x[i] * px[i] for i in range(k))
        residual = y - self.predict(x)
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
