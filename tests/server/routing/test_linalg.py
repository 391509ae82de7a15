"""routing.linalg: the shared small solvers and statistics (profile, cost model, token count)."""

from __future__ import annotations

import random

import pytest

from ppd_server.routing.linalg import least_squares, median, nonnegative_least_squares, nonnegative_solve, solve_linear


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[2.0]], [4.0], [2.0]),
        ([[0.0, 1.0], [1.0, 0.0]], [3.0, 5.0], [5.0, 3.0]),  # needs pivoting
        ([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0], None),  # singular
        ([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], [5.0, 5.0, 3.0], [1.0, 1.0, 1.0]),
    ],
)
def test_solve_linear(a, b, expected):
    got = solve_linear(a, b)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_least_squares_recovers_a_line_and_selects_columns():
    rows = [[1.0, float(x), float(x * x)] for x in range(6)]
    ys = [2.0 + 3.0 * r[1] for r in rows]
    assert least_squares(rows, ys) == pytest.approx([2.0, 3.0, 0.0], abs=1e-9)
    assert least_squares(rows, ys, cols=(0, 1)) == pytest.approx([2.0, 3.0])
    assert least_squares([[1.0, 1.0], [2.0, 2.0]], [1.0, 2.0]) is None  # collinear columns
    assert least_squares([], []) is None


def test_nonnegative_least_squares_clamps_a_negative_coefficient():
    rows = [[1.0, float(x)] for x in range(5)]
    ys = [10.0 - 1.0 * x for x in range(5)]  # the true slope is negative: best feasible is slope 0
    got = nonnegative_least_squares(rows, ys)
    assert got[1] == 0.0
    assert got[0] == pytest.approx(sum(ys) / len(ys))


def test_nonnegative_solve_matches_brute_force():
    rng = random.Random(3)
    for _ in range(100):
        m = [[rng.uniform(-1, 1) for _ in range(3)] for _ in range(4)]
        a = [[sum(m[k][i] * m[k][j] for k in range(4)) + (0.1 if i == j else 0.0) for j in range(3)] for i in range(3)]
        b = [rng.uniform(-2, 2) for _ in range(3)]
        got = nonnegative_solve(a, b)
        assert min(got) >= 0.0

        def f(t, a=a, b=b):
            return 0.5 * sum(t[i] * a[i][j] * t[j] for i in range(3) for j in range(3)) - sum(
                bi * ti for bi, ti in zip(b, t)
            )

        for _ in range(50):  # no feasible point nearby does better
            probe = [max(0.0, g + rng.uniform(-0.05, 0.05)) for g in got]
            assert f(probe) >= f(got) - 1e-9


@pytest.mark.parametrize(
    ("values", "expected"), [([3.0], 3.0), ([3.0, 1.0], 2.0), ([5.0, 1.0, 3.0], 3.0), ([4, 1, 3, 2], 2.5)]
)
def test_median(values, expected):
    assert median(values) == expected


def test_median_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        median([])


def _gauss_jordan(a, b, singular_below):
    """The textbook Gauss-Jordan with partial pivoting that ``solve_linear`` writes out."""
    n = len(b)
    m = [[float(x) for x in row] + [float(v)] for row, v in zip(a, b, strict=True)]
    for c in range(n):
        pivot = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[pivot][c]) < singular_below:
            return None
        m[c], m[pivot] = m[pivot], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def test_solve_linear_gives_the_textbook_floats_to_the_last_bit():
    """The written-out paths (2x2, the pivot search) change no float of any result: the online
    fit's refits, and every simulated run with ``--online-fit``, depend on it."""
    rng = random.Random(7)
    for _ in range(5000):
        n = rng.choice([1, 2, 2, 3])
        scale = 10 ** rng.uniform(-8, 8)
        a = [[rng.uniform(-1, 1) * (scale if i == j else 1.0) for j in range(n)] for i in range(n)]
        if n > 1 and rng.random() < 0.2:
            a[1][0] = a[0][0]  # equal magnitudes: the first row stays the pivot
        if rng.random() < 0.05:
            a[0][0] = 0.0
        b = [rng.uniform(-5, 5) for _ in range(n)]
        singular_below = rng.choice([1e-300, 1e-15, 1e-12])
        assert repr(solve_linear(a, b, singular_below)) == repr(_gauss_jordan(a, b, singular_below))
