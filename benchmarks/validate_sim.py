"""Is ppd-sim right? The same ppd-bench workload measured on the embedded 1P1D cluster and
simulated with that cluster's measured profile; turn-2+ TTFT p50/p90 and TPOT p50 must agree
within 25%.

    python benchmarks/validate_sim.py                       # measure (~4 min on 2 cores), simulate, compare
    python benchmarks/validate_sim.py --reuse DIR           # re-simulate a saved measurement (seconds)

Steps, all real processes on loopback (``validate_measure``, ``validate_decompose``, ``validate_compare``):
1. ``measure_profile`` (what ``ppd-server profile`` runs) with the ``long`` grid on an embedded
   unified ppd-worker (SmolLM2, the cluster's thread count) while a second one prefills on the
   other core, as the cluster's P does beside its D (``--isolated-profile``: one worker alone);
2. ``ppd-server --embedded 1P1D --policy ppd`` (its router starts from the built-in profile and
   fits online); ``ppd-bench run`` drives it with the workload and saves the sessions exactly as
   run (arrivals and think times); the workers' cache size, chunk size, page size and last
   KV-transfer speed are read, and the idle cluster is probed for the per-request time the
   profile does not see (router hop, chat template and tokenization), before the cluster stops;
3. ``ppd-sim --cluster 1P1D --profile <measured> --trace <the sessions as run, in engine tokens>
   --router-profile builtin --online-fit`` with that chunk size, KV capacity, page size, link
   speed and per-request overhead; also once per cumulative step of those terms (the ablation);
4. side by side, with the ratio sim / measured, and the decomposition of a turn-2+ TTFT. Exit
   status 1 when a compared figure is off by more than ``--tolerance``, 2 for bad arguments.

TPOT is compared over all turns (the simulator reports it over all turns with >= 2 tokens).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from validate_compare import ablation, compare, mixed_gap, simulate
from validate_decompose import turn_tokens
from validate_measure import _log, measure
from validate_render import decomposition_lines, print_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="validate_sim.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--workload", default="long-context-cpu", help="ppd-bench generator or workload file (default long-context-cpu)"
    )
    p.add_argument("--sessions", type=int, default=8, help="sessions (default 8)")
    p.add_argument(
        "--rate", type=float, default=0.08, help="new sessions per second (default 0.08: the 2-core box keeps up)"
    )
    p.add_argument(
        "--duration", type=float, default=100.0, help="sessions start within this many seconds (default 100)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", default="ppd", help="router policy, live and simulated (default ppd)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1: one core each)")
    p.add_argument("--profile", help="use this measured profile instead of measuring one")
    p.add_argument(
        "--profile-grid", default="long", help="ppd-server profile --grid (default long: the long-context shapes)"
    )
    p.add_argument(
        "--isolated-profile",
        action="store_true",
        help="profile one worker alone (plain `ppd-server profile`) instead of beside a busy second worker",
    )
    p.add_argument(
        "--neighbor-duty",
        type=float,
        default=1.0,
        help="share of the time the second worker prefills while the profile is measured (default 1.0; "
        "0.5 gave sim/measured 0.26-0.51 on this box, 1.0 gave 1.07-1.25)",
    )
    p.add_argument(
        "--link-gbs",
        default="auto",
        help="simulated P->D link GB/s; auto = the workers' last measured KV transfer speed",
    )
    p.add_argument("--tolerance", type=float, default=0.25, help="allowed |sim/measured - 1| (default 0.25)")
    p.add_argument("--reuse", metavar="DIR", help="skip measuring: re-simulate the measurement saved in DIR")
    p.add_argument("--keep", metavar="DIR", help="save the measurement here (default: a temp dir, printed)")
    p.add_argument("--json", help="write the comparison as JSON here")
    p.add_argument("--sim-args", default="", help="extra ppd-sim options")
    p.add_argument(
        "--decompose-rounds",
        type=int,
        default=5,
        help="idle-cluster probe conversations after the run (router vs worker chat vs /generate; 0 = none; "
        "without it the simulator gets no per-request overhead); default 5",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.decompose_rounds < 0 or a.decompose_rounds > 20:
        p.error(f"--decompose-rounds must be in 0..20, got {a.decompose_rounds}")
    for name, v in (
        ("--sessions", a.sessions),
        ("--rate", a.rate),
        ("--duration", a.duration),
        ("--tolerance", a.tolerance),
        ("--threads", a.threads),
        ("--neighbor-duty", a.neighbor_duty),
    ):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            p.error(f"{name} must be > 0, got {v}")
    if a.neighbor_duty > 1:
        p.error(f"--neighbor-duty must be in (0, 1], got {a.neighbor_duty}")
    if a.link_gbs != "auto":
        try:
            float(a.link_gbs)
        except ValueError:
            p.error(f"--link-gbs must be a number or 'auto', got {a.link_gbs!r}")
    started = time.monotonic()
    if a.reuse:
        d = Path(a.reuse)
        if not (d / "measured.json").exists():
            p.error(f"--reuse {a.reuse!r} holds no measured.json")
        info = json.loads((d / "cluster.json").read_text())
    else:
        d = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="ppd-validate-"))
        d.mkdir(parents=True, exist_ok=True)
        try:
            info = measure(a, d)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
            print(f"validate_sim.py: error: {e}", file=sys.stderr)
            return 1
        _log(f"measurement saved in {d}")
    measured = json.loads((d / "measured.json").read_text())
    sim, sim_argv = simulate(a, d, info)
    rows = compare(measured, sim, a.tolerance)
    profile = json.loads((d / "profile.json").read_text())
    steps = ablation(a, d, info, measured)
    tokens = turn_tokens(measured)
    decomposition = decomposition_lines(measured, info, profile, tokens, steps)
    print_table(rows, a.tolerance)
    for line in decomposition:
        print(line)
    load = measured.get("load", {})
    profile_setting = (
        " (one worker alone)"
        if a.isolated_profile
        else f" beside a second worker prefilling on the other core {100 * a.neighbor_duty:.0f}% of the time"
    )
    doc = {
        "metrics": [r for r in rows if r["gated"]],
        "extra": [r for r in rows if not r["gated"]],
        "ok": all(r["ok"] for r in rows if r["gated"]),
        "tolerance": a.tolerance,
        "seconds": round(time.monotonic() - started, 1),
        "conditions": (
            f"Workload {measured.get('workload')}: {load.get('sessions')} sessions ({load.get('turns')} turns) at "
            f"{load.get('sessions_per_s')} new sessions/s (~{load.get('offered_requests_per_s')} requests/s), "
            f"policy {a.policy}, "
            f"embedded 1P1D ppd-workers (SmolLM2-135M, {a.threads} thread(s) each) on this machine; profile "
            f"grid `{a.profile_grid}`{profile_setting}"
            f" (fit error % {profile.get('fit')}); machine load average after the run "
            f"{(info.get('loadavg') or ['?'])[0]} (2 cores, other tenants included); simulated as "
            f"`ppd-sim {' '.join(sim_argv)}`."
        ),
        "cluster": info,
        "profile_coefficients": profile.get("coefficients"),
        "sim_argv": sim_argv,
        "dir": str(d),
        "notes": [n for n in (mixed_gap(profile),) if n],
        "decomposition": decomposition,
        "ablation": steps,
        "turn_tokens": tokens,
        "probe": info.get("decomposition"),
    }
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
