"""Sweep QPS with ppd-sim and print one line per (QPS, policy): where does PPD start to matter?

    python benchmarks/sim_policies.py --qps 5,10,15,20 --workload big_paste --cluster 1P3D

Any other ``ppd-sim`` option is passed through (``--gpu a100``, ``--link-gbs 10``, ``--slo-ttft-ms 200``...).
Simulated figures, not measurements: they follow the roofline step-time model (docs/sim.md).
"""

from __future__ import annotations

import argparse
import sys

from ppd_server.routing.cost_model import CostModel
from ppd_sim.cli import build_parser, prepare, router_profile
from ppd_sim.engine import Simulation
from ppd_sim.report import summarize


def _fmt(v: float | None, scale: float = 1.0, unit: str = "") -> str:
    return "-" if v is None else f"{v * scale:.0f}{unit}" if v * scale >= 100 else f"{v * scale:.1f}{unit}"


def main(argv: list[str] | None = None) -> int:
    outer = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    outer.add_argument("--qps", default="2,5,10,15,20", help="comma-separated conversation rates")
    known, rest = outer.parse_known_args(argv)
    try:
        rates = [float(q) for q in known.qps.split(",")]
    except ValueError:
        outer.error(f"bad --qps {known.qps!r}; write e.g. 2,5,10")
    parser = build_parser()
    print(f"{'qps':>5}  {'policy':<14} {'t2 p50':>8} {'t2 p99':>8} {'t1 p99':>8} {'tpot p99':>9} {'local':>6} {'KV GB':>7} {'SLO':>6}")
    for qps in rates:
        args = parser.parse_args([*rest, "--qps", str(qps), "--quiet"])
        try:
            policies, spec, hw, profile, convs, hints = prepare(args)
        except ValueError as e:
            parser.error(str(e))
        for policy in policies:
            start = router_profile(args, profile)
            sim = Simulation(policy, spec, hw, convs, hints, CostModel(start) if start else None, args.online_fit)
            s = summarize(sim.run(), args.slo_ttft_ms, args.slo_tpot_ms)
            print(f"{qps:>5g}  {s['policy']:<14} {_fmt(s['turn2plus_ttft_ms']['p50']):>8} {_fmt(s['turn2plus_ttft_ms']['p99']):>8} "
                  f"{_fmt(s['turn1_ttft_ms']['p99']):>8} {_fmt(s['tpot_ms']['p99']):>9} {_fmt(s['turn2plus_local_share'], 100, '%'):>6} "
                  f"{s['kv_gb_moved']:>7.1f} {_fmt(s['slo_attainment'], 100, '%'):>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
