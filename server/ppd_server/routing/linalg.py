"""The small dense solvers and statistics the fits share (profile fitting, the online cost model,
the token-count fit): one copy of each, pure Python.

Pure Python on purpose: every system here has k <= 3 unknowns and is solved per observation or
per profile fit; numpy's per-call overhead exceeds the arithmetic, and the router stays light.

Public API (all inputs are plain lists/sequences of floats; nothing is modified in place):

* :func:`solve_linear` ``(a, b)`` - ``x`` with ``a x = b`` (Gauss-Jordan, partial pivoting), or
  ``None`` when ``a`` is singular;
* :func:`least_squares` ``(rows, ys, cols=None)`` - ordinary least squares ``rows[:, cols] x ~ ys``
  via the normal equations, or ``None`` when the columns are collinear;
* :func:`nonnegative_least_squares` ``(rows, ys)`` - exact least squares with ``x >= 0`` (tries
  every subset of free columns; 2^k small solves);
* :func:`nonnegative_solve` ``(a, b)`` - ``argmin 1/2 x'Ax - b'x`` s.t. ``x >= 0`` for a small
  symmetric positive definite ``a`` (the constrained weighted-least-squares step of a fit whose
  normal equations are already accumulated);
* :func:`median` ``(values)`` - the median (mean of the middle two for an even count).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["least_squares", "median", "nonnegative_least_squares", "nonnegative_solve", "solve_linear"]


def solve_linear(a: Sequence[Sequence[float]], b: Sequence[float], singular_below: float = 1e-15) -> list[float] | None:
    """Gauss-Jordan solve of a small dense system; None when a pivot is below ``singular_below``."""
    n = len(b)
    if n == 2:
        return _solve_linear2(a, b, singular_below)
    m = [[float(x) for x in row] + [float(v)] for row, v in zip(a, b)]
    for c in range(n):
        # the first row with the largest magnitude in column c (what max(..., key=abs) picks)
        pivot, big = c, abs(m[c][c])
        for r in range(c + 1, n):
            v = abs(m[r][c])
            if v > big:
                pivot, big = r, v
        if big < singular_below:
            return None
        m[c], m[pivot] = m[pivot], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def _solve_linear2(a: Sequence[Sequence[float]], b: Sequence[float], singular_below: float) -> list[float] | None:
    """:func:`solve_linear` of a 2x2 system written out: the same pivoting and the same operations
    in the same order (so the same floats), without the generic loops (the hot path of
    ``nonnegative_solve``'s two-free-coefficient sets, tried on every online refit that hits the
    constraint)."""
    (x00, x01), (x10, x11) = a
    r0 = [float(x00), float(x01), float(b[0])]
    r1 = [float(x10), float(x11), float(b[1])]
    # column 0: the first row with the largest magnitude is the pivot
    if abs(r1[0]) > abs(r0[0]):
        r0, r1 = r1, r0
    if abs(r0[0]) < singular_below:
        return None
    f = r1[0] / r0[0]
    r1 = [r1[0] - f * r0[0], r1[1] - f * r0[1], r1[2] - f * r0[2]]
    # column 1: one candidate row left
    if abs(r1[1]) < singular_below:
        return None
    f = r0[1] / r1[1]
    r0 = [r0[0] - f * r1[0], r0[1] - f * r1[1], r0[2] - f * r1[2]]
    return [r0[2] / r0[0], r1[2] / r1[1]]


def least_squares(
    rows: Sequence[Sequence[float]],
    ys: Sequence[float],
    cols: Sequence[int] | None = None,
    singular_below: float = 1e-12,
) -> list[float] | None:
    """Least squares over the columns ``cols`` of ``rows`` (all when None), one value per column;
    None when those columns are collinear (a pivot of the normal equations below ``singular_below``)."""
    if not rows:
        return None
    use = list(range(len(rows[0]))) if cols is None else list(cols)
    a = [[sum(r[i] * r[j] for r in rows) for j in use] for i in use]
    b = [sum(r[i] * y for r, y in zip(rows, ys)) for i in use]
    return solve_linear(a, b, singular_below)


def nonnegative_least_squares(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Exact non-negative least squares for a handful of columns: the best feasible solution over
    every subset of free columns (the rest held at 0). All zeros when nothing positive fits."""
    k = len(rows[0]) if rows else 0
    best, best_err = [0.0] * k, sum(y * y for y in ys)
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            sol = least_squares(rows, ys, cols)
            if sol is None or min(sol) < 0:
                continue
            theta = [0.0] * k
            for c, v in zip(cols, sol):
                theta[c] = v
            err = sum((y - sum(t * x for t, x in zip(theta, r))) ** 2 for r, y in zip(rows, ys))
            if err < best_err - 1e-12:
                best, best_err = theta, err
    return best


def nonnegative_solve(a: Sequence[Sequence[float]], b: Sequence[float]) -> list[float]:
    """argmin 1/2 t'At - b't subject to t >= 0, for a small symmetric positive definite ``a``.

    The free set F whose unconstrained solution is >= 0 and whose fixed coordinates have a
    non-negative gradient ``(A t - b)_j`` satisfies KKT; for a convex QP that is the optimum.
    All coordinates free is tried first (the usual case).
    """
    k = len(b)
    if k == 3:  # the usual case first: all free, Cramer's rule
        t = _solve3(a, b)
        if t is not None and min(t) >= 0.0:
            return t
    for size in range(k, -1, -1):
        for free in itertools.combinations(range(k), size):
            t = [0.0] * k
            if free:
                sol = solve_linear([[a[i][j] for j in free] for i in free], [b[i] for i in free], singular_below=1e-300)
                if sol is None or min(sol) < -1e-12:
                    continue
                for i, v in zip(free, sol):
                    t[i] = max(v, 0.0)
            grad_ok = all(
                sum(a[j][m] * t[m] for m in range(k)) - b[j] >= -1e-9 * (1.0 + abs(b[j]))
                for j in range(k)
                if j not in free
            )
            if grad_ok:
                return t
    return [0.0] * k  # unreachable for a positive definite a


def _solve3(a: Sequence[Sequence[float]], b: Sequence[float]) -> list[float] | None:
    (a00, a01, a02), (a10, a11, a12), (a20, a21, a22) = a
    c0, c1, c2 = a11 * a22 - a12 * a21, a12 * a20 - a10 * a22, a10 * a21 - a11 * a20
    det = a00 * c0 + a01 * c1 + a02 * c2
    if not abs(det) > 0:
        return None
    b0, b1, b2 = b
    return [
        (b0 * c0 + a01 * (a12 * b2 - b1 * a22) + a02 * (b1 * a21 - a11 * b2)) / det,
        (a00 * (b1 * a22 - a12 * b2) + b0 * c1 + a02 * (a10 * b2 - b1 * a20)) / det,
        (a00 * (a11 * b2 - b1 * a21) + a01 * (b1 * a20 - a10 * b2) + b0 * c2) / det,
    ]


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence (mean of the two middle values for an even count)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of an empty sequence")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
