"""The TPOT-weight sweep: ppd at rising request TPOT weights on one fleet, no SLO targets (the
weights alone decide), and whether the local share and TPOT p50 fall as the weight rises.

    python benchmarks/sim_grid.py --weights-sweep 1P3D:big_paste:8 --seeds 0,1,2,3   # its CLI

Each point is the mean over the seeds; each step's change in local share is also given paired by
seed, with its standard error, and a rise says whether it is beyond two of them. It runs through
``sim_grid``'s runner (the same ``ppd-sim`` argv and process pool as the grid's cells).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from sim_grid import GridSpec, _argv, _mean, _ms, _one_policy, _pct, paired_difference

SWEEP_TPOT_TOLERANCE = 0.01  # TPOT p50 may wobble by 1% between neighbouring weights (simulation noise)
WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@dataclass(slots=True)
class SweepRow:
    w_tpot: float
    local_share: float | None
    tpot_p50: float | None
    ttft2_p50: float | None
    # the change in local share from the previous weight, paired by seed: its mean and standard
    # error over the seeds (None for the first weight, or with one seed for the error)
    step: float | None = None
    step_se: float | None = None


def weights_sweep(
    cluster: str = "1P3D",
    workload: str = "mid_bal",
    qps: float = 16.0,
    weights: Sequence[float] = WEIGHTS,
    spec: GridSpec | None = None,
    workers: int = 0,
) -> tuple[list[SweepRow], list[str]]:
    """ppd at rising request TPOT weights, no SLO targets (the weights alone decide): the rows and
    the monotonicity violations (local share must not rise with the TPOT weight, TPOT p50 not by
    more than SWEEP_TPOT_TOLERANCE). ``spec.router_args`` says how the router is calibrated; with
    several ``spec.seeds`` each point is the mean over them (as the grid's cells), and each step's
    change in local share is also given paired by seed, with its standard error: one 30-s seed is
    one noisy sample of a closed loop, and where the share is nearly flat (low weights) a step is
    smaller than the seed-to-seed spread, so the sweep needs more seeds than the grid."""
    spec = spec if spec is not None else GridSpec()
    jobs = []
    for seed in spec.seeds:
        base = _argv(spec, cluster, workload, qps, ["ppd"], seed=seed)
        for flag in ("--slo-ttft-ms", "--slo-tpot-ms"):  # no targets: the weights decide
            i = base.index(flag)
            del base[i : i + 2]
        jobs += [([*base, "--w-tpot", f"{w:g}"], "ppd") for w in weights]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(_one_policy, jobs))
    n = len(weights)
    shares = [[r["turn2plus_local_share"] for r in results[k::n]] for k in range(n)]  # per weight, per seed
    rows = [
        SweepRow(
            w,
            _mean(shares[k]),
            _mean([r["tpot_ms"]["p50"] for r in results[k::n]]),
            _mean([r["turn2plus_ttft_ms"]["p50"] for r in results[k::n]]),
            *(paired_difference(shares[k - 1], shares[k]) if k else (None, None)),
        )
        for k, w in enumerate(weights)
    ]
    bad = []
    for a, b in itertools.pairwise(rows):
        if (b.local_share or 0.0) > (a.local_share or 0.0) + 1e-9:
            bad.append(f"local share rose from w_tpot {a.w_tpot:g} to {b.w_tpot:g}{_noise(b)}")
        if (b.tpot_p50 or 0.0) > (a.tpot_p50 or 0.0) * (1 + SWEEP_TPOT_TOLERANCE):
            bad.append(f"TPOT p50 rose from w_tpot {a.w_tpot:g} to {b.w_tpot:g}")
    return rows, bad


def format_sweep(rows: Sequence[SweepRow], bad: Sequence[str]) -> str:
    lines = [f"{'w_tpot':>7}  {'local %':>8}  {'step (SE)':>13}  {'TPOT p50':>9}  {'ttft2 p50':>9}"]
    lines += [
        f"{r.w_tpot:>7g}  {_pct(r.local_share):>8}  {_step(r):>13}  {_ms(r.tpot_p50):>9}  {_ms(r.ttft2_p50):>9}"
        for r in rows
    ]
    lines.append("monotone" if not bad else "!! " + "; ".join(bad))
    return "\n".join(lines)


def _noise(r: SweepRow) -> str:
    """How a rise in local share compares with its seed-to-seed noise (two standard errors)."""
    if r.step is None or r.step_se is None:
        return ""
    beyond = "beyond" if r.step > 2 * r.step_se else "within"
    return f" ({100 * r.step:+.1f} points, SE {100 * r.step_se:.1f}: {beyond} noise)"


def _step(r: SweepRow) -> str:
    """The paired change in local share from the previous weight, in points (its SE in brackets)."""
    if r.step is None:
        return "-"
    return f"{100 * r.step:+.1f}" + (f" ({100 * r.step_se:.1f})" if r.step_se is not None else "")
