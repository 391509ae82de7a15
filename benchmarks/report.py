"""Regenerate ``benchmarks/REPORT.md`` in one command: PPD in the simulator, measured live, and
the simulator checked against the measurements.

    python benchmarks/report.py               # everything (sim grid, live CPU comparison, validation)
    python benchmarks/report.py --skip-live   # sim only; reuse the saved live and validation JSON
    python benchmarks/report.py --reuse-sim   # re-render from saved sim JSON (seconds)

Parts (each saves its figures as JSON under ``benchmarks/report/``, next to the PNGs):

a. **Simulated grid** - ``benchmarks/sim_grid.py`` (the policy grid runner: fleets x workloads x
   loads from light to past pd's saturation x policies, router fitted online from the built-in
   profile), plus a TPOT-weight sweep of ppd on one fleet;
b. **Measured CPU comparison** - ``ppd-bench compare``: ppd, pd, local, threshold and
   sglang-router PD in front of the same embedded 1P1D SmolLM2 workers, one workload, one run:
   ``long-prompt-cpu`` (~2k-token first turn, three ~24-token appends, 32-token answers) at
   :data:`LIVE_LOAD`: 10 first turns of ~2.3 s of prefill each arrive within ~25 s, so the
   prefill worker is at capacity while sessions arrive and ~55-75% busy over the run (the table
   shows each worker's measured busy share), while the decode worker can still take the appends:
   the load where P->D turns 2+ wait behind long prefills. A live TPOT-weight sweep of ppd
   (``--live-weights``) runs at :data:`LIVE_WEIGHTS_LOAD`, a load with a trade-off to weigh;
c. **Validation** - ``benchmarks/validate_sim.py``: the same ppd-bench workload measured on the
   embedded 1P1D cluster and simulated with that cluster's measured profile.

Every figure's caption carries the command and conditions that produced it. Plots use
matplotlib's Agg backend. Bounded: the sim grid runs in ``--workers`` processes with a fixed
simulated duration; the live parts have their own time bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # sim_grid, validate_sim and ppd_bench live beside this file

import report_render  # noqa: E402
from sim_weights import WEIGHTS  # noqa: E402

LONG_CONTEXT_SLO_TTFT_MS = 1000.0  # a ~10k-token first turn takes ~0.4 s to prefill alone on an H100


def _csv(text: str, cast: Any = str) -> tuple[Any, ...]:
    return tuple(cast(x.strip()) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="report.py", description="Regenerate benchmarks/REPORT.md (sim grid, live comparison, validation)."
    )
    p.add_argument("--out-dir", default=str(HERE), help="where REPORT.md and report/ go (default: benchmarks/)")
    p.add_argument(
        "--skip-live", action="store_true", help="do not run the live parts; reuse their saved JSON when present"
    )
    p.add_argument(
        "--reuse-sim", action="store_true", help="do not rerun the simulations; render from the saved sim JSON"
    )
    g = p.add_argument_group("simulated grid (passed to sim_grid.GridSpec)")
    g.add_argument("--clusters", default="1P3D,2P2D,3P1D")
    g.add_argument("--workloads", default="big_paste,huge_paste,mid_bal,long_gen,mixed,long-context")
    g.add_argument("--policies", default="pd,local,threshold:512,ratio:0.5,ppd")
    g.add_argument("--loads", default="0.25,0.5,1,2", help="multiples of pd's saturation rate")
    g.add_argument("--qps", help="fixed rates instead of pd's saturation ladder (smoke runs)")
    g.add_argument("--duration", type=float, default=30.0, help="simulated seconds of arrivals per run (default 30)")
    g.add_argument(
        "--seeds",
        default="0,1,2",
        help="every grid cell runs with each seed; its figures and check are the means over them, and each "
        "seed's own verdict is shown beside (default 0,1,2)",
    )
    g.add_argument("--slo-ttft-ms", type=float, default=200.0)
    g.add_argument("--slo-tpot-ms", type=float, default=15.0)
    g.add_argument("--sim-args", default="", help="extra ppd-sim options for every run (e.g. the router's poll lag)")
    g.add_argument("--workers", type=int, default=0, help="processes (0 = all CPUs)")
    g.add_argument(
        "--weights-cell",
        default="1P3D,big_paste,8",
        help="CLUSTER,WORKLOAD[,QPS] of the TPOT-weight sweep (no QPS: pd's saturation rate from the grid); the "
        "default is a cell where the trade-off is live: at w_tpot 1 local takes ~90%% of turns 2+, and a TPOT "
        "weight can price it down to ~10%% (1P3D mid_bal at 16/s stays at 83-93%% local up to w_tpot 16: its "
        "local turns cost its streams almost nothing, and what moves is closed-loop noise)",
    )
    g.add_argument("--weights", default=",".join(f"{w:g}" for w in WEIGHTS), help="w_tpot values of the sweep")
    g.add_argument(
        "--weights-seeds",
        default=",".join(str(i) for i in range(16)),
        help="seeds of the sweep (default 0-15, more than the grid's: at low weights a step moves the local "
        "share by a point or two, one seed's share by about five)",
    )
    live = p.add_argument_group("live parts")
    live.add_argument(
        "--live-args",
        default="",
        help="extra ppd-bench compare options (default: long-prompt-cpu at 0.3 new sessions/s, 10 sessions; "
        "later options win)",
    )
    live.add_argument("--validate-args", default="", help="extra benchmarks/validate_sim.py options")
    live.add_argument(
        "--live-weights",
        default="1,8,64",
        help="w_tpot values of the live TPOT-weight sweep (ppd-bench compare, ppd@tpot=W, on big_paste: 512-token "
        "appends that stall the decode worker's streams when prefilled there); 'none' skips it; default 1,8,64",
    )
    return p


# -- (a) the simulated grid ----------------------------------------------------------------------


def _grid_command(a: argparse.Namespace, workloads: str, slo_ttft: float) -> str:
    extra = f" --qps {a.qps}" if a.qps else f" --loads {a.loads}"
    return (
        f"python benchmarks/sim_grid.py --clusters {a.clusters} --workloads {workloads} --policies {a.policies}{extra} "
        f"--duration {a.duration:g} --seeds {a.seeds} --slo-ttft-ms {slo_ttft:g} --slo-tpot-ms {a.slo_tpot_ms:g} "
        f"{a.sim_args}"
    ).strip()


def run_sim(a: argparse.Namespace) -> dict[str, Any]:
    import sim_grid

    workloads = _csv(a.workloads)
    # long-context has its own TTFT target: its first turn alone takes ~0.4 s on an H100
    groups = [(tuple(w for w in workloads if w != "long-context"), a.slo_ttft_ms)]
    if "long-context" in workloads:
        groups.append((("long-context",), LONG_CONTEXT_SLO_TTFT_MS))
    out: dict[str, Any] = {"grids": [], "weights": None}
    for names, slo_ttft in groups:
        if not names:
            continue
        spec = sim_grid.GridSpec(
            clusters=_csv(a.clusters),
            workloads=names,
            policies=_csv(a.policies),
            load_factors=_csv(a.loads, float),
            duration_s=a.duration,
            seeds=_csv(a.seeds, int),
            slo_ttft_ms=slo_ttft,
            slo_tpot_ms=a.slo_tpot_ms,
            sim_args=(*sim_grid.GridSpec().sim_args, *a.sim_args.split()),
            fixed_qps=_csv(a.qps, float) if a.qps else (),
            workers=a.workers,
        )
        started = time.monotonic()
        rows = sim_grid.run_grid(spec, progress=True)
        out["grids"].append(
            {
                "command": _grid_command(a, ",".join(names), slo_ttft),
                "seconds": round(time.monotonic() - started, 1),
                "slo_ttft_ms": slo_ttft,
                "slo_tpot_ms": a.slo_tpot_ms,
                "duration_s": a.duration,
                "seeds": list(spec.seeds),
                "sim_args": list(spec.sim_args),
                "router_args": list(spec.router_args),
                "rows": [r.as_dict() for r in rows],
            }
        )
    out["weights"] = run_weights(a, out["grids"])
    return out


def run_weights(a: argparse.Namespace, grids: list[dict[str, Any]]) -> dict[str, Any] | None:
    """sim_weights.weights_sweep: ppd at rising TPOT weights on one fleet, no SLO target (the weights
    alone decide). The rate is the cell's, else pd's saturation rate found by the grid."""
    import sim_grid
    import sim_weights

    cluster, workload, *rest = a.weights_cell.split(",")
    if rest:
        qps = float(rest[0])
    else:
        rows = [r for g in grids for r in g["rows"] if r["cluster"] == cluster and r["workload"] == workload]
        if not rows:
            return None
        qps = ([r for r in rows if r["load"].startswith("1x")] or rows[len(rows) // 2 :])[0]["qps"]
    weights = _csv(a.weights, float)
    spec = sim_grid.GridSpec(
        duration_s=a.duration,
        seeds=_csv(a.weights_seeds, int),
        sim_args=(*sim_grid.GridSpec().sim_args, *a.sim_args.split()),
    )
    started = time.monotonic()
    rows, bad = sim_weights.weights_sweep(cluster, workload, qps, weights, spec=spec, workers=a.workers)
    points = [
        {
            "w_tpot": r.w_tpot,
            "local_share": r.local_share,
            "local_step": r.step,
            "local_step_se": r.step_se,
            "tpot_p50_ms": r.tpot_p50,
            "ttft2_p50_ms": r.ttft2_p50,
        }
        for r in rows
    ]
    return {
        "cluster": cluster,
        "workload": workload,
        "qps": qps,
        "points": points,
        "violations": bad,
        "seconds": round(time.monotonic() - started, 1),
        "command": (
            f"python benchmarks/sim_grid.py --weights-sweep {cluster}:{workload}:{qps:g} --duration {a.duration:g} "
            f"--seeds {a.weights_seeds} {a.sim_args}"
        ).strip(),
    }


# -- (b) and (c): the live parts -------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


#: the live comparison's workload and load (ppd-bench compare options; --live-args adds to them)
LIVE_LOAD = ("--workload", "long-prompt-cpu", "--rate", "0.3", "--sessions", "10", "--duration", "30")
#: the live TPOT-weight sweep's. Not LIVE_LOAD: there the prefill worker is the bottleneck, and
#: local turns are better on TPOT too (P->D turns 2+ queue behind the 2k-token first turns and land
#: on the decode worker together: pd's turn-2+ TPOT p50 was 140 ms against local's 71, 2026-12-04),
#: so a TPOT weight has nothing to trade. Here a 512-token append prefilled on the decode worker
#: stalls its streams, while the prefill worker has room. Two rounds each (2026-12-05): w_tpot 1 / 8 / 64
#: gave 68 / 30 / 6% local at TPOT p50 150 / 115 / 108 ms, then 59 / 32 / 4% at 150 / 123 / 128;
#: w_tpot 0.25 / 2 / 64: 56 / 33 / 6% at 123 / 111 / 99. One round's TPOT p50 swings by up to a
#: quarter on two shared cores (w_tpot 64: 104 and 138 ms), more than 30% -> 5% local moves it:
#: three rounds, ABBA.
LIVE_WEIGHTS_LOAD = (
    "--workload", "big_paste", "--first-turn", "small", "--turns", "4",
    "--rate", "0.2", "--sessions", "10", "--duration", "40", "--rounds", "3",
)  # fmt: skip


def _compare(
    a: argparse.Namespace,
    systems: str,
    baseline: str,
    out: Path,
    what: str,
    tail: int,
    load: tuple[str, ...] = LIVE_LOAD,
) -> dict | None:
    """Run ``ppd-bench compare`` on ``load``; its JSON, the command and how long it took
    (None when it failed: any saved figures are kept)."""
    argv = [sys.executable, "-m", "ppd_bench", "compare", "--systems", systems, "--baseline", baseline]
    argv += [*load, *a.live_args.split(), "--out", str(out)]
    started = time.monotonic()
    proc = subprocess.run(argv, env=_env(), cwd=HERE.parent, text=True, capture_output=True)
    sys.stderr.write(proc.stderr[-tail:])
    if proc.returncode != 0 or not out.exists():
        print(f"report: {what} failed (exit {proc.returncode}); keeping any saved one", file=sys.stderr)
        return None
    return {
        "command": "ppd-bench compare " + " ".join(argv[4:-2]),
        "seconds": round(time.monotonic() - started, 1),
        "doc": json.loads(out.read_text()),
    }


def run_live(a: argparse.Namespace, data_dir: Path) -> dict[str, Any] | None:
    out = data_dir / "live_compare.json"
    return _compare(a, "ppd,pd,local,threshold:256,sglang-router", "sglang-router", out, "live comparison", 4000)


def run_live_weights(a: argparse.Namespace, data_dir: Path) -> dict[str, Any] | None:
    """ppd with every client TPOT weight of ``--live-weights`` in front of the same workers."""
    weights = _csv(a.live_weights, float)
    systems = ",".join(f"ppd@tpot={w:g}" for w in weights)
    out = data_dir / "live_weights_compare.json"
    run = _compare(a, systems, f"ppd@tpot={weights[0]:g}", out, "live weights sweep", 2000, LIVE_WEIGHTS_LOAD)
    return None if run is None else {**run, "weights": weights}


def run_validation(a: argparse.Namespace, data_dir: Path) -> dict[str, Any] | None:
    out = data_dir / "validation_raw.json"
    argv = [sys.executable, str(HERE / "validate_sim.py"), *a.validate_args.split(), "--json", str(out)]
    started = time.monotonic()
    proc = subprocess.run(argv, env=_env(), cwd=HERE.parent, text=True, capture_output=True)
    sys.stderr.write(proc.stderr[-4000:])
    print(proc.stdout, file=sys.stderr)
    if not out.exists():
        print(f"report: validation failed (exit {proc.returncode})", file=sys.stderr)
        return None
    return {
        "command": "python benchmarks/validate_sim.py " + " ".join(argv[2:-2]),
        "seconds": round(time.monotonic() - started, 1),
        "doc": json.loads(out.read_text()),
        "exit": proc.returncode,
    }


# -- main --------------------------------------------------------------------------------------------


def _saved(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _save(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        for name, text, cast in (
            ("--clusters", a.clusters, str),
            ("--workloads", a.workloads, str),
            ("--policies", a.policies, str),
            ("--loads", a.loads, float),
            ("--seeds", a.seeds, int),
            ("--weights-seeds", a.weights_seeds, int),
            ("--weights", a.weights, float),
            ("--qps", a.qps or "1", float),
        ):
            if not _csv(text, cast):
                raise ValueError(f"{name} {text!r} names nothing")
        if not a.duration > 0:
            raise ValueError(f"--duration must be > 0, got {a.duration}")
        if a.live_weights.strip().lower() != "none":
            lw = _csv(a.live_weights, float)
            if not lw or any(not 0 <= w <= 1000 for w in lw) or len(set(lw)) != len(lw):
                raise ValueError(
                    f"--live-weights must be distinct numbers in [0, 1000] or 'none', got {a.live_weights!r}"
                )
        if "," not in a.weights_cell:
            raise ValueError(f"--weights-cell must be CLUSTER,WORKLOAD, got {a.weights_cell!r}")
    except ValueError as e:
        p.error(str(e))
    out_dir = Path(a.out_dir)
    data_dir = out_dir / "report"
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}

    if a.reuse_sim:
        sim = _saved(data_dir / "sim.json")
        if sim is None:
            p.error(f"--reuse-sim: no saved {data_dir / 'sim.json'}")
    else:
        t = time.monotonic()
        sim = run_sim(a)
        timings["sim"] = time.monotonic() - t
        _save(data_dir / "sim.json", sim)

    live = validation = live_weights = None
    if not a.skip_live:
        t = time.monotonic()
        live = run_live(a, data_dir)
        timings["live"] = time.monotonic() - t
        if live is not None:
            _save(data_dir / "live.json", live)
        if a.live_weights.strip().lower() != "none":
            t = time.monotonic()
            live_weights = run_live_weights(a, data_dir)
            timings["live weights"] = time.monotonic() - t
            if live_weights is not None:
                _save(data_dir / "live_weights.json", live_weights)
        t = time.monotonic()
        validation = run_validation(a, data_dir)
        timings["validation"] = time.monotonic() - t
        if validation is not None:
            _save(data_dir / "validation.json", validation)
    live = live or _saved(data_dir / "live.json")
    validation = validation or _saved(data_dir / "validation.json")
    live_weights = live_weights or _saved(data_dir / "live_weights.json")

    timings["total"] = time.monotonic() - started
    meta = {
        "argv": ["python", "benchmarks/report.py", *(argv if argv is not None else sys.argv[1:])],
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "git": _git_head(),
        "reused": {"sim": a.reuse_sim, "live": a.skip_live},
        "recorded": _recorded(sim, live, validation, live_weights),
    }
    text = report_render.render(meta, sim, live, validation, data_dir, live_weights=live_weights)
    (out_dir / "REPORT.md").write_text(text)
    print(f"report: wrote {out_dir / 'REPORT.md'} in {timings['total']:.0f}s", file=sys.stderr)
    return 0


def _recorded(
    sim: dict[str, Any] | None,
    live: dict[str, Any] | None,
    validation: dict[str, Any] | None,
    live_weights: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Seconds each part took when it was last run (saved with its figures)."""
    out: dict[str, float] = {}
    if sim:
        out["sim"] = sum(g["seconds"] for g in sim.get("grids", [])) + (
            (sim.get("weights") or {}).get("seconds") or 0.0
        )
    if live:
        out["live"] = live["seconds"]
    if live_weights:
        out["live weights"] = live_weights["seconds"]
    if validation:
        out["validation"] = validation["seconds"]
    return out


def _git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True, capture_output=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
