"""How fast is ppd-sim, and did a speed-up change any result?

    python benchmarks/sim_speed.py                        # the 1-hour 4P12D mixed 20/s ppd run: CPU s, turns, turns/s
    python benchmarks/sim_speed.py --reasons              # ... keeping every decision's reason (ppd-sim --reasons)
    python benchmarks/sim_speed.py --duration 600         # a shorter version of it
    python benchmarks/sim_speed.py --digests OUT.json     # the equivalence scenarios: a digest per run, saved
    python benchmarks/sim_speed.py --check OUT.json       # ... compared with a saved file; exit 1 on any difference
    python benchmarks/sim_speed.py --check OUT.json --only 2p2d2r   # one scenario

CPU time is ``time.process_time`` around ``Simulation.run`` alone (not imports or workload
generation), so it is comparable across a busy machine better than wall time; compare two
trees side by side in one sitting all the same. The timed run runs as ``ppd-sim`` does without
``--reasons``: no decision reason is written (its digest covers empty reasons; before that
option existed every run wrote them: ``--reasons`` times that). The scenarios keep the reasons.

A digest is a SHA-256 over every request of the run (route, workers, arrival, first token,
finish, cached tokens, KV bytes, predictions; floats as ``repr``, i.e. to the last bit) plus the
run's summary, busy shares and evictions (not its event count, which coasting changes by
design): a speed-up that keeps it changes no result. The scenarios cover the default router
(poll lag, capped max_tokens), online fitting from the built-in profile, every policy under SLO
targets on a prefill-bound fleet, instant loads with exact lengths and the true link backlog,
KV pressure on a slow link, and unified workers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from typing import Any

from ppd_sim.cli import build_parser, prepare, simulation
from ppd_sim.report import summarize

TARGET = "--cluster 4P12D --qps 20 --duration 3600 --workload mixed --policies ppd"

SCENARIOS: dict[str, str] = {
    "4p12d-mixed": "--cluster 4P12D --qps 20 --duration 120 --workload mixed --policies ppd",
    "1p3d-big-paste-fit": "--cluster 1P3D --qps 16 --duration 120 --workload big_paste --online-fit "
    "--router-profile builtin --policies ppd",
    "3p1d-big-paste-slo": "--cluster 3P1D --qps 15 --duration 120 --workload big_paste --link-gbs 25 "
    "--slo-ttft-ms 200 --slo-tpot-ms 15 --policies pd,local,threshold:512,ppd",
    "2p2d-instant": "--cluster 2P2D --qps 24 --duration 60 --workload mixed --poll-interval-ms 0 "
    "--client-max-tokens exact --link-backlog true --policies ppd,ratio:0.5",
    "1p2d-kv-pressure": "--cluster 1P2D --qps 6 --duration 60 --workload long_gen --kv-capacity-tokens 60000 "
    "--link-gbs 1 --policies ppd,local",
    "2p2d2r": "--cluster 2P2D2R --qps 12 --duration 60 --workload chat --policies ppd,replica",
}


def digest(result: Any, summary: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for r in result.requests:
        row = (
            r.rid,
            r.conversation_id,
            r.turn,
            r.route,
            r.decode,
            r.prefill,
            r.reason,
            r.arrival_ms,
            r.first_token_ms,
            r.finish_ms,
            r.cached_tokens,
            r.prefill_cached_tokens,
            r.computed_tokens,
            r.kv_bytes,
            r.predicted_ttft_ms,
            r.predicted_tpot_ms,
        )
        h.update(repr(row).encode())
    h.update(json.dumps(summary, sort_keys=True, default=repr).encode())
    h.update(repr((result.sim_ms, result.busy_share, result.evicted_tokens, result.stop_reason)).encode())
    return h.hexdigest()[:16]


def run(argv: str, keep_reasons: bool = True) -> list[dict[str, Any]]:
    """Every policy of one ``ppd-sim`` command line: CPU seconds, turns, digest. ``keep_reasons``
    False: as ``ppd-sim`` runs without ``--reasons`` (every reason empty, the digest too)."""
    args = build_parser().parse_args([*argv.split(), "--quiet"])
    prepared = prepare(args)
    out = []
    for policy in prepared[0]:
        sim = simulation(args, policy, prepared, keep_reasons=keep_reasons)
        t0 = time.process_time()
        result = sim.run()
        cpu = time.process_time() - t0
        summary = summarize(result, args.slo_ttft_ms, args.slo_tpot_ms, args.request_timeout_s)
        out.append(
            {
                "policy": policy.spec,
                "cpu_s": round(cpu, 2),
                "turns": len(result.requests),
                "events": result.events,
                "digest": digest(result, summary),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of the timed run; default 3600")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--digests", metavar="OUT", help="run the equivalence scenarios, save their digests here")
    group.add_argument("--check", metavar="SAVED", help="run the equivalence scenarios, compare with a saved file")
    parser.add_argument(
        "--reasons",
        action="store_true",
        help="time the run keeping every decision's reason (ppd-sim --reasons); by default it runs as "
        "ppd-sim without --reasons, which formats none (its digest then covers empty reasons)",
    )
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated scenarios (of {', '.join(SCENARIOS)})")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.digests is None and args.check is None:
        argv_target = TARGET.replace("--duration 3600", f"--duration {args.duration:g}")
        for row in run(argv_target, keep_reasons=args.reasons):
            rate = row["turns"] / max(row["cpu_s"], 1e-9)
            print(
                f"{argv_target}: {row['cpu_s']:.2f} CPU s, {row['turns']} turns, {rate:.0f} turns/s, "
                f"{row['events']} events, digest {row['digest']}"
            )
        return 0
    found = {name: run(SCENARIOS[name]) for name in names}
    for name, rows in found.items():
        for row in rows:
            print(f"{name:20s} {row['policy']:14s} {row['cpu_s']:6.2f} CPU s {row['turns']:6d} turns {row['digest']}")
    if args.digests is not None:
        with open(args.digests, "w") as f:
            json.dump(found, f, indent=2)
        return 0
    with open(args.check) as f:
        saved = json.load(f)
    bad = [
        f"{name} {new['policy']}: {old['digest']} -> {new['digest']}"
        for name, rows in found.items()
        for old, new in zip(saved.get(name, []), rows, strict=False)
        if old["digest"] != new["digest"] or old["turns"] != new["turns"]
    ]
    missing = [name for name in found if name not in saved]
    for line in bad:
        print(f"DIFFERENT: {line}")
    if missing:
        print(f"not in {args.check}: {', '.join(missing)}")
    print("identical" if not bad and not missing else f"{len(bad)} run(s) differ")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
