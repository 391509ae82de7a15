"""benchmarks/sim_speed.py: the digest that proves a simulator speed-up changes no result must
be stable across runs and change when any request's outcome does; ``--check`` fails on a
difference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ppd_sim import Simulation
from ppd_sim.cli import build_parser, prepare, router_behaviour
from ppd_sim.report import summarize

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import sim_speed  # noqa: E402

SMALL = "--cluster 1P2D --qps 4 --duration 8 --workload mixed --policies ppd --quiet"


def _result():
    args = build_parser().parse_args(SMALL.split())
    policies, spec, hw, _, convs, hints = prepare(args)
    result = Simulation(policies[0], spec, hw, convs, hints, router=router_behaviour(args)).run()
    return result, summarize(result)


def test_digest_is_stable_and_sees_one_changed_request():
    (a, sa), (b, sb) = _result(), _result()
    assert sim_speed.digest(a, sa) == sim_speed.digest(b, sb)
    req = b.requests[len(b.requests) // 2]
    req.finish_ms += 1e-9  # one request's answer ends a femtosecond later; the summary is unchanged
    assert sim_speed.digest(b, sb) != sim_speed.digest(a, sa)


def test_check_fails_on_a_different_digest(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sim_speed.SCENARIOS, "tiny", SMALL.replace(" --quiet", ""))
    saved = tmp_path / "digests.json"
    assert sim_speed.main(["--digests", str(saved), "--only", "tiny"]) == 0
    assert sim_speed.main(["--check", str(saved), "--only", "tiny"]) == 0
    data = json.loads(saved.read_text())
    data["tiny"][0]["digest"] = "0" * 16
    saved.write_text(json.dumps(data))
    assert sim_speed.main(["--check", str(saved), "--only", "tiny"]) == 1
    assert "DIFFERENT: tiny ppd" in capsys.readouterr().out
