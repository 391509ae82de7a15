"""The policy grid: does ``ppd`` ever lose? Fleet shapes x workloads x loads x policies in ``ppd-sim``.

    python benchmarks/sim_grid.py                       # the full grid (a few minutes on 2 cores)
    python benchmarks/sim_grid.py --clusters 3P1D --workloads big_paste --json grid.json

For each (cluster, workload) the loads are found first: pd runs at a doubling ladder of new
conversations per second until its SLO attainment drops below 90%; the last rate where it held is
pd's saturation ``q``, and the grid runs at ``LOAD_FACTORS`` x ``q`` (light to twice saturation).
Every policy then runs on the same workload (same seed) with the router's cost model fitted online
from ppd-server's built-in profile (``--online-fit --router-profile builtin``); any other
``ppd-sim`` option is passed through (``--link-gbs 10``, the router's load-poll lag...).

A cell *violates* the invariant when ppd's SLO attainment is below the best of ``pd``, ``local``
and ``threshold:512`` minus ``TOLERANCE`` (2 points), or its turn-2+ TTFT p50 is above pd's.
Exit status 1 when any cell violates (2 for bad arguments). Simulated figures, not measurements.

Seeds: one seed of 30 s is one sample of a noisy system; near saturation two policies' p50s
1-3% apart can swap order from seed to seed. ``--seeds 0,1,2`` runs every cell with each seed
(each seed draws other conversations and arrivals) and checks the invariant on the *mean over
seeds* of each figure (``Row``'s figures); each seed's own verdict is kept too
(``Row.seed_violations``), so a reader sees both. The saturation ladder uses the first seed.

Function API (the report step calls it)::

    rows = run_grid(GridSpec(clusters=("3P1D",), workloads=("big_paste",)))
    print(format_grid(rows)); bad = [r for r in rows if r.violations]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

CLUSTERS = ("1P3D", "2P2D", "3P1D")
WORKLOADS = ("big_paste", "huge_paste", "mid_bal", "long_gen", "mixed", "long-context")
POLICIES = ("pd", "local", "threshold:512", "ratio:0.5", "ppd")
BASELINES = ("pd", "local", "threshold:512")  # ppd must match the best of these
LOAD_FACTORS = (0.25, 0.5, 1.0, 2.0)  # x pd's saturation rate
TOLERANCE = 0.02
PD_HOLDS = 0.90  # pd "holds" a rate while its SLO attainment is at least this
LADDER_START = 1.0  # new conversations/s where the saturation ladder starts
LADDER_MAX = 256.0


@dataclass(frozen=True, slots=True)
class GridSpec:
    clusters: tuple[str, ...] = CLUSTERS
    workloads: tuple[str, ...] = WORKLOADS
    policies: tuple[str, ...] = POLICIES
    load_factors: tuple[float, ...] = LOAD_FACTORS
    duration_s: float = 30.0
    seeds: tuple[int, ...] = (0,)  # figures are means over these; the saturation ladder uses the first
    slo_ttft_ms: float = 200.0
    slo_tpot_ms: float = 15.0
    sim_args: tuple[str, ...] = ("--model", "llama-3.1-8b", "--gpu", "h100", "--link-gbs", "25")
    router_args: tuple[str, ...] = ("--online-fit", "--router-profile", "builtin")
    fixed_qps: tuple[float, ...] = ()  # skip the ladder: run these rates in every (cluster, workload)
    workers: int = 0  # processes; 0 = all CPUs


@dataclass(slots=True)
class Row:
    """One cell: one (cluster, workload, rate), every policy's figures."""

    cluster: str
    workload: str
    qps: float
    load: str  # "0.25x sat" or "fixed"
    attainment: dict[str, float | None] = field(default_factory=dict)
    ttft2_p50: dict[str, float | None] = field(default_factory=dict)
    tpot_p50: dict[str, float | None] = field(default_factory=dict)
    local_share: dict[str, float | None] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)  # on the figures above (means over the seeds)
    seed_violations: dict[int, list[str]] = field(default_factory=dict)  # each seed's own verdict
    # ppd's turn-2+ TTFT p50 minus pd's, paired by seed: (mean, standard error) in ms; the SE says
    # whether a loss on the means is beyond the seed-to-seed noise (None with one seed)
    ttft2_gap: tuple[float | None, float | None] = (None, None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "workload": self.workload,
            "qps": self.qps,
            "load": self.load,
            "attainment": self.attainment,
            "turn2plus_ttft_p50_ms": self.ttft2_p50,
            "tpot_p50_ms": self.tpot_p50,
            "turn2plus_local_share": self.local_share,
            "violations": self.violations,
            "seed_violations": {str(s): v for s, v in self.seed_violations.items()},
            "turn2plus_ttft_p50_gap_ms": {"mean": self.ttft2_gap[0], "se": self.ttft2_gap[1]},
        }


def _argv(
    spec: GridSpec,
    cluster: str,
    workload: str,
    qps: float,
    policies: Sequence[str],
    router: bool = True,
    seed: int | None = None,
) -> list[str]:
    return [
        "--policies",
        ",".join(policies),
        "--cluster",
        cluster,
        "--workload",
        workload,
        "--qps",
        f"{qps:g}",
        "--duration",
        f"{spec.duration_s:g}",
        "--seed",
        str(spec.seeds[0] if seed is None else seed),
        "--slo-ttft-ms",
        f"{spec.slo_ttft_ms:g}",
        "--slo-tpot-ms",
        f"{spec.slo_tpot_ms:g}",
        "--quiet",
        *spec.sim_args,
        *(spec.router_args if router else ()),
    ]


def simulate(argv: list[str]) -> list[dict[str, Any]]:
    """Run ``ppd-sim`` in-process for the given arguments; one summary per policy."""
    from ppd_sim.cli import build_parser, prepare, simulation
    from ppd_sim.report import summarize

    args = build_parser().parse_args(argv)
    prepared = prepare(args)
    out = []
    for policy in prepared[0]:
        # the grid reads no decision reasons: unwritten, a run is ~5% faster (ppd-sim without --reasons)
        sim = simulation(args, policy, prepared, keep_reasons=False)
        out.append(summarize(sim.run(), args.slo_ttft_ms, args.slo_tpot_ms))
    return out


def _one_policy(job: tuple[list[str], str]) -> dict[str, Any]:
    argv, policy = job
    i = argv.index("--policies")
    return simulate([*argv[: i + 1], policy, *argv[i + 2 :]])[0]


def pd_saturation(spec: GridSpec, cluster: str, workload: str) -> float:
    """The highest rate of a doubling ladder at which pd's SLO attainment holds (>= PD_HOLDS)."""
    qps, held = LADDER_START, 0.0
    while qps <= LADDER_MAX:
        s = simulate(_argv(spec, cluster, workload, qps, ["pd"]))[0]
        if (s["slo_attainment"] or 0.0) < PD_HOLDS:
            break
        held, qps = qps, qps * 2
    return held if held > 0 else LADDER_START / 2


def _saturation_job(job: tuple[GridSpec, str, str]) -> float:
    return pd_saturation(*job)


def check(row: Row) -> list[str]:
    """The invariant for one cell (empty when it holds or when ppd was not run)."""
    if "ppd" not in row.attainment:
        return []
    out = []
    ppd = row.attainment["ppd"] or 0.0
    base = {p: row.attainment[p] or 0.0 for p in BASELINES if p in row.attainment}
    if base:
        best = max(base, key=lambda p: base[p])
        if ppd < base[best] - TOLERANCE:
            out.append(f"attainment ppd {100 * ppd:.1f}% < {best} {100 * base[best]:.1f}% - {100 * TOLERANCE:g}")
    t_ppd, t_pd = row.ttft2_p50.get("ppd"), row.ttft2_p50.get("pd")
    if t_ppd is not None and t_pd is not None and t_ppd > t_pd:
        out.append(f"turn-2+ TTFT p50 ppd {t_ppd:.1f}ms > pd {t_pd:.1f}ms")
    return out


def run_grid(spec: GridSpec = GridSpec(), progress: bool = False) -> list[Row]:
    """Run the grid (in ``spec.workers`` processes); one Row per (cluster, workload, rate)."""
    workers = spec.workers or os.cpu_count() or 1
    groups = [(c, w) for c in spec.clusters for w in spec.workloads]
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        if spec.fixed_qps:
            rates = {g: [(q, "fixed") for q in spec.fixed_qps] for g in groups}
        else:
            sats = list(pool.map(_saturation_job, [(spec, c, w) for c, w in groups]))
            rates = {g: [(round(f * q, 3), f"{f:g}x sat") for f in spec.load_factors] for g, q in zip(groups, sats)}
            if progress:
                print(f"sim_grid: pd saturation found in {time.monotonic() - started:.0f}s", file=sys.stderr)
        cells = [(c, w, q, label) for (c, w) in groups for q, label in rates[(c, w)]]
        jobs = [
            (_argv(spec, c, w, q, [p], seed=seed), p)
            for c, w, q, _ in cells
            for seed in spec.seeds
            for p in spec.policies
        ]
        results = list(pool.map(_one_policy, jobs))
    rows = []
    per_cell = len(spec.seeds) * len(spec.policies)
    for k, (c, w, q, label) in enumerate(cells):
        first = k * per_cell
        samples = [
            _row(c, w, q, label, results[first + i * len(spec.policies) : first + (i + 1) * len(spec.policies)])
            for i in range(len(spec.seeds))
        ]
        rows.append(cell_row(samples, spec.seeds))
    if progress:
        print(f"sim_grid: {len(jobs)} runs in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return rows


def _row(cluster: str, workload: str, qps: float, load: str, summaries: Sequence[dict[str, Any]]) -> Row:
    row = Row(cluster, workload, qps, load)
    for s in summaries:
        name = s["policy"]
        row.attainment[name] = s["slo_attainment"]
        row.ttft2_p50[name] = s["turn2plus_ttft_ms"]["p50"]
        row.tpot_p50[name] = s["tpot_ms"]["p50"]
        row.local_share[name] = s["turn2plus_local_share"]
    return row


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def paired_difference(
    before: Sequence[float | None], after: Sequence[float | None]
) -> tuple[float | None, float | None]:
    """Mean and standard error of ``after - before`` over the seeds that have both."""
    diffs = [b - a for a, b in zip(before, after) if a is not None and b is not None]
    if not diffs:
        return None, None
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean, None
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, (var / len(diffs)) ** 0.5


def cell_row(samples: Sequence[Row], seeds: Sequence[int]) -> Row:
    """One cell from its seeds' rows: the means, checked, with each seed's own verdict and
    ppd's turn-2+ TTFT p50 gap to pd paired by seed."""
    row = _mean_row(samples)
    row.seed_violations = {seed: check(s) for seed, s in zip(seeds, samples)}
    row.ttft2_gap = paired_difference(
        [s.ttft2_p50.get("pd") for s in samples], [s.ttft2_p50.get("ppd") for s in samples]
    )
    row.violations = check(row)
    return row


def _mean_row(samples: Sequence[Row]) -> Row:
    """One cell's figures as the mean over its seeds (a figure missing in a seed is left out)."""
    first = samples[0]
    if len(samples) == 1:
        return first
    row = Row(first.cluster, first.workload, first.qps, first.load)
    for name in ("attainment", "ttft2_p50", "tpot_p50", "local_share"):
        setattr(row, name, {p: _mean([getattr(s, name).get(p) for s in samples]) for p in getattr(first, name)})
    return row


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_gap(gap: Sequence[float | None]) -> str:
    """ppd's turn-2+ TTFT p50 minus pd's, ms, paired by seed: ``+1.1 (0.3)``; ``-`` when unknown."""
    mean, se = gap
    if mean is None:
        return "-"
    return f"{mean:+.1f}" + (f" ({se:.1f})" if se is not None else "")


def format_grid(rows: Sequence[Row]) -> str:
    """One line per cell: SLO attainment (%) per policy, ppd's and pd's turn-2+ TTFT p50, ppd's local
    share and TPOT p50, and the violations (marked ``!!``)."""
    policies = list(rows[0].attainment) if rows else []
    head = [
        "cluster",
        "workload",
        "qps",
        "load",
        *policies,
        "ttft2 ppd/pd",
        "ppd-pd (SE)",
        "ppd tpot",
        "ppd local",
        "check",
    ]
    table = [head]
    for r in rows:
        ttft = f"{_ms(r.ttft2_p50.get('ppd'))}/{_ms(r.ttft2_p50.get('pd'))}"
        table.append(
            [
                r.cluster,
                r.workload,
                f"{r.qps:g}",
                r.load,
                *(_pct(r.attainment[p]) for p in policies),
                ttft,
                format_gap(r.ttft2_gap),
                _ms(r.tpot_p50.get("ppd")),
                _pct(r.local_share.get("ppd")),
                "!! " + "; ".join(r.violations) if r.violations else "ok",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = [
        "  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        + "  "
        + row[-1]
        for row in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    bad = sum(bool(r.violations) for r in rows)
    lines.append(
        f"{len(rows)} cells, {bad} violating (attainment in %, ppd >= best of {', '.join(BASELINES)} - "
        f"{100 * TOLERANCE:g} points; turn-2+ TTFT p50 ppd <= pd)"
    )
    seeds = list(rows[0].seed_violations) if rows else []
    if len(seeds) > 1:
        each = ", ".join(f"seed {s}: {sum(bool(r.seed_violations[s]) for r in rows)}" for s in seeds)
        lines.append(
            f"figures and check on the means over seeds {', '.join(map(str, seeds))}; violating per seed: {each}"
        )
    return "\n".join(lines)


def _csv(text: str, what: str, cast: Any = str) -> tuple[Any, ...]:
    try:
        items = tuple(cast(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        items = None
    if not items:
        print(f"sim_grid: bad --{what} {text!r}: expected a comma-separated list", file=sys.stderr)
        raise SystemExit(2)
    return items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other arguments are passed to ppd-sim.")
    d = GridSpec()
    p.add_argument("--clusters", default=",".join(d.clusters))
    p.add_argument("--workloads", default=",".join(d.workloads))
    p.add_argument("--policies", default=",".join(d.policies))
    p.add_argument(
        "--loads", default=",".join(f"{f:g}" for f in d.load_factors), help="multiples of pd's saturation rate"
    )
    p.add_argument("--qps", help="fixed rates instead of the saturation ladder, e.g. 5,10,15")
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds of arrivals per run")
    p.add_argument("--seed", type=int, help="one seed (the same as --seeds N)")
    p.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds; every cell runs with each, figures and the check are on the means (default 0)",
    )
    p.add_argument("--slo-ttft-ms", type=float, default=d.slo_ttft_ms)
    p.add_argument("--slo-tpot-ms", type=float, default=d.slo_tpot_ms)
    p.add_argument(
        "--router-args", default=" ".join(d.router_args), help="how the router is calibrated (ppd-sim options)"
    )
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all CPUs)")
    p.add_argument("--json", help="write the rows as JSON here")
    p.add_argument(
        "--weights-sweep",
        metavar="CLUSTER:WORKLOAD:QPS",
        help="instead of the grid: ppd at rising TPOT weights, "
        "no SLO targets, e.g. 1P3D:mid_bal:16; checks that local share and TPOT p50 fall monotonically",
    )
    args, rest = p.parse_known_args(argv)
    spec = GridSpec(
        clusters=_csv(args.clusters, "clusters"),
        workloads=_csv(args.workloads, "workloads"),
        policies=_csv(args.policies, "policies"),
        load_factors=_csv(args.loads, "loads", float),
        duration_s=args.duration,
        seeds=(args.seed,) if args.seed is not None else _csv(args.seeds, "seeds", int),
        slo_ttft_ms=args.slo_ttft_ms,
        slo_tpot_ms=args.slo_tpot_ms,
        sim_args=(*GridSpec().sim_args, *rest),
        router_args=tuple(args.router_args.split()),
        fixed_qps=_csv(args.qps, "qps", float) if args.qps else (),
        workers=args.workers,
    )
    if args.weights_sweep:
        try:
            c, w, q = args.weights_sweep.split(":")
            qps = float(q)
        except ValueError:
            p.error(f"bad --weights-sweep {args.weights_sweep!r}; write CLUSTER:WORKLOAD:QPS, e.g. 1P3D:mid_bal:16")
        import sim_weights  # the sweep runs through this module's runner (_argv, _one_policy)

        rows_w, bad = sim_weights.weights_sweep(c, w, qps, spec=spec, workers=args.workers)
        print(f"weights sweep: {c} {w} at {qps:g} new sessions/s, {spec.duration_s:g}s, no SLO targets")
        print(sim_weights.format_sweep(rows_w, bad))
        return 1 if bad else 0
    try:  # validate once, before spending minutes
        from ppd_sim.cli import build_parser, prepare

        prepare(build_parser().parse_args(_argv(spec, spec.clusters[0], spec.workloads[0], 1.0, spec.policies)))
    except ValueError as e:
        p.error(str(e))
    rows = run_grid(spec, progress=True)
    print(format_grid(rows))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(
                {"spec": {k: getattr(spec, k) for k in spec.__slots__}, "rows": [r.as_dict() for r in rows]},
                f,
                indent=2,
            )
    return 1 if any(r.violations for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
