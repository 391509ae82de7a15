"""How fast is a policy's ``decide``, alone?

    python benchmarks/decide_speed.py                     # 4P12D mixed 20/s ppd, 300 s: us per decide
    python benchmarks/decide_speed.py --argv "--cluster 2P2D2R --qps 12 --duration 60 --workload chat --policies ppd"

Runs one ``ppd-sim`` command line once, records every ``(request, cluster, session)`` its policy
was asked to decide, then replays them through a fresh policy ``--repeat`` times and prints the
best CPU time per decision (``time.process_time``) and a SHA-256 over the replayed decisions'
``repr``: two trees that print the same hash decide the same to the last bit. The views'
cached prediction terms (``WorkerView.memo``) are cleared before each replay, so every replay
pays for them as the run did (a view is reused until its worker's load changes). Compare two
trees side by side in one sitting: the machine's load moves the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from typing import Any

from ppd_server.routing.policies import make_policy
from ppd_sim.cli import build_parser, prepare, simulation

DEFAULT = "--cluster 4P12D --qps 20 --duration 300 --workload mixed --policies ppd"


def record(argv: str) -> list[tuple[str, Any, Any, Any]]:
    """Every decide call of the command line's runs: (policy spec, request, cluster, session)."""
    args = build_parser().parse_args([*argv.split(), "--quiet"])
    prepared = prepare(args)
    calls: list[tuple[str, Any, Any, Any]] = []
    for policy in prepared[0]:
        decide = policy.decide

        def recording(request: Any, cluster: Any, session: Any, decide: Any = decide, name: str = policy.spec) -> Any:
            calls.append((name, request, cluster, session))
            return decide(request, cluster, session)

        policy.decide = recording  # type: ignore[method-assign]
        simulation(args, policy, prepared).run()
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--argv", default=DEFAULT, help=f"the ppd-sim command line; default {DEFAULT!r}")
    parser.add_argument("--repeat", type=int, default=3, help="replays; the best counts (default 3)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    calls = record(args.argv)
    policies = {name: make_policy(name) for name in dict.fromkeys(name for name, _, _, _ in calls)}
    views = list({id(w): w for _, _, cluster, _ in calls for w in cluster.workers}.values())

    def clear() -> None:
        for w in views:
            if hasattr(type(w), "memo"):
                object.__setattr__(w, "memo", None)

    clear()
    h = hashlib.sha256()
    for name, request, cluster, session in calls:
        h.update(repr(policies[name].decide(request, cluster, session)).encode())
    best = float("inf")
    for _ in range(args.repeat):
        clear()
        t0 = time.process_time()
        for name, request, cluster, session in calls:
            policies[name].decide(request, cluster, session)
        best = min(best, time.process_time() - t0)
    per = best / max(len(calls), 1) * 1e6
    print(f"{args.argv}: {len(calls)} decisions, {best:.3f} CPU s, {per:.1f} us/decide, hash {h.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
