"""benchmarks/report.py on a tiny grid (seconds), its renderer on fake live and validation
figures, and validate_sim's comparison arithmetic. No processes, no model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import report_render  # noqa: E402
import validate_sim  # noqa: E402


def test_report_renders_a_tiny_sim_grid_with_plots_and_commands(tmp_path):
    rc = report.main(
        [
            "--out-dir",
            str(tmp_path),
            "--skip-live",
            "--clusters",
            "1P3D",
            "--workloads",
            "mid_bal",
            "--policies",
            "pd,local,threshold:512,ppd",
            "--qps",
            "1,2",
            "--duration",
            "3",
            "--seeds",
            "0,1",
            "--workers",
            "1",
            "--weights",
            "1,4",
            "--weights-cell",
            "1P3D,mid_bal",
        ]
    )
    assert rc == 0
    md = (tmp_path / "REPORT.md").read_text()
    assert "python benchmarks/sim_grid.py --clusters 1P3D --workloads mid_bal" in md  # every figure names its command
    assert "![1P3D](report/sim_1P3D.png)" in md and (tmp_path / "report" / "sim_1P3D.png").stat().st_size > 1000
    assert "![weights](report/sim_weights.png)" in md and (tmp_path / "report" / "sim_weights.png").exists()
    assert md.count("| 1P3D | mid_bal |") == 2  # one row per rate
    saved = json.loads((tmp_path / "report" / "sim.json").read_text())
    assert [r["qps"] for r in saved["grids"][0]["rows"]] == [1.0, 2.0]
    assert all(list(r["seed_violations"]) == ["0", "1"] for r in saved["grids"][0]["rows"])
    assert "on the means over seeds 0, 1" in md and "--seeds 0,1" in md
    assert [p["w_tpot"] for p in saved["weights"]["points"]] == [1.0, 4.0]
    # --reuse-sim re-renders from the saved figures without simulating
    (tmp_path / "REPORT.md").unlink()
    assert report.main(["--out-dir", str(tmp_path), "--skip-live", "--reuse-sim"]) == 0
    assert "| 1P3D | mid_bal |" in (tmp_path / "REPORT.md").read_text()


def test_report_rejects_bad_options_with_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        report.main(["--loads", ",", "--skip-live"])
    assert e.value.code == 2 and "--loads" in capsys.readouterr().err


FAKE_COMPARE = {
    "workers": {"prefill": "http://p", "decode": "http://d"},
    "systems": [  # the shape ppd-bench compare writes
        {
            "system": "ppd",
            "rounds": [{"round": 1, "busy_share": {"http://p": 0.55, "http://d": 0.7}, "loadavg": [2.5, 2.0, 1.0]}],
            "result": {
                "summary": {
                    "turn2plus": {
                        "ok": 8,
                        "ttft_ms": {"p50": 100.0, "p90": 300.0},
                        "tpot_ms": {"p50": 40.0},
                        "route_share": {"local": 0.9},
                    },
                    "all": {"success_rate": 1.0},
                }
            },
        },
        {
            "system": "sglang-router",
            "result": {
                "summary": {
                    "turn2plus": {
                        "ok": 8,
                        "ttft_ms": {"p50": 400.0, "p90": 900.0},
                        "tpot_ms": {"p50": 42.0},
                        "route_share": {"pd": 1.0},
                    },
                    "all": {"success_rate": 1.0},
                }
            },
        },
        {"system": "smg", "error": "smg not installed"},
    ],
}


def test_the_live_section_shows_ratios_against_sglang_router(tmp_path):
    md = "\n".join(
        report_render.render_live(
            {"command": "ppd-bench compare --sessions 4", "seconds": 60, "doc": FAKE_COMPARE}, tmp_path
        )
    )
    assert "| ppd | 100 / 300 | 40.0 | 90.0% | 100.0% | 0.25 | 0.95 | 55.0% / 70.0% | 2.5 |" in md
    assert "| sglang-router | 400 / 900 | 42.0 | 0.0% | 100.0% | 1.00 | 1.00 | - | - |" in md
    assert "| smg | not run: smg not installed |" in md
    assert "`ppd-bench compare --sessions 4`" in md and (tmp_path / "live_compare.png").exists()


def test_validate_sim_compares_side_by_side_within_the_tolerance():
    measured = {
        "summary": {
            "turn1": {"ttft_ms": {"p50": 500.0}},
            "all": {"tpot_ms": {"p50": 40.0}, "e2e_ms": {"p50": 2000.0}},
            "turn2plus": {"ttft_ms": {"p50": 100.0, "p90": 200.0}, "route_share": {"local": 0.8}},
        }
    }
    sim = {
        "results": [
            {
                "turn1_ttft_ms": {"p50": 450.0},
                "turn2plus_ttft_ms": {"p50": 120.0, "p90": 300.0},
                "tpot_ms": {"p50": 38.0},
                "e2e_ms": {"p50": 1900.0},
                "turn2plus_local_share": 0.8,
            }
        ]
    }
    rows = {r["name"]: r for r in validate_sim.compare(measured, sim, 0.25)}
    assert rows["turn-2+ TTFT p50"]["ratio"] == pytest.approx(1.2) and rows["turn-2+ TTFT p50"]["ok"]
    assert rows["turn-2+ TTFT p90"]["ratio"] == pytest.approx(1.5) and rows["turn-2+ TTFT p90"]["ok"] is False
    assert rows["TPOT p50"]["ok"] and rows["turn-1 TTFT p50"]["ok"] is None  # informational, not gated
    md = "\n".join(
        report_render.render_validation(
            {
                "command": "python benchmarks/validate_sim.py",
                "seconds": 300,
                "doc": {"metrics": [r for r in rows.values() if r["gated"]], "conditions": "1P1D", "notes": []},
            },
            Path("/tmp"),
        )
    )
    assert "| turn-2+ TTFT p90 | 200 | 300 | 1.50 | **no** |" in md


@pytest.mark.parametrize(
    "argv,needle",
    [(["--rate", "0"], "--rate"), (["--link-gbs", "fast"], "--link-gbs"), (["--reuse", "/nonexistent-dir"], "--reuse")],
)
def test_validate_sim_rejects_bad_options_with_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        validate_sim.main(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def _weight_system(w: str, local: int, tpot: float) -> dict:
    t2 = {
        "ok": 6,
        "ttft_ms": {"p50": 150.0, "p90": 200.0},
        "tpot_ms": {"p50": tpot},
        "routes": {"local": local, "pd": 6 - local},
        "route_share": {"local": local / 6},
    }
    return {"system": f"ppd@tpot={w}", "result": {"summary": {"turn2plus": t2, "all": {"success_rate": 1.0}}}}


def test_the_live_weights_sweep_says_whether_local_share_and_tpot_fall():
    doc = {"systems": [_weight_system("0.25", 6, 50.0), _weight_system("4", 3, 45.0), _weight_system("16", 0, 46.0)]}
    md = "\n".join(report_render.render_live_weights({"command": "ppd-bench compare", "seconds": 9, "doc": doc}))
    assert "| 4 | 50.0% (3 of 6) | 45.0 | 150 | 100.0% | - | - |" in md
    assert "Local share falls monotonically with the weight;" in md and "TPOT p50 does not fall monotonically" in md
    assert report_render.render_live_weights(None) == []


def test_the_live_weights_sweep_names_a_rise_in_turns():
    doc = {"systems": [_weight_system("1", 5, 50.0), _weight_system("4", 6, 45.0)]}
    md = "\n".join(report_render.render_live_weights({"command": "ppd-bench compare", "seconds": 9, "doc": doc}))
    assert "does not fall monotonically with the weight (from w_tpot 1 to 4: 5 of 6 -> 6 of 6 turns local)" in md


def test_report_rejects_bad_live_weights_with_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        report.main(["--live-weights", "1,1", "--skip-live"])
    assert e.value.code == 2 and "--live-weights" in capsys.readouterr().err


def test_the_live_weights_sweep_runs_on_its_own_load_and_the_comparison_on_its(monkeypatch, tmp_path):
    # the comparison's long-prompt-cpu is prefill-bound (local wins TPOT too): the sweep needs a load
    # where local buys TTFT with TPOT, and two rounds against run-to-run noise
    seen: list[list[str]] = []

    def fake_run(argv, **_):
        seen.append(argv)
        return type("Done", (), {"returncode": 1, "stderr": ""})()

    monkeypatch.setattr(report.subprocess, "run", fake_run)
    a = report.build_parser().parse_args(["--live-weights", "1,8"])
    assert report.run_live_weights(a, tmp_path) is None and report.run_live(a, tmp_path) is None
    weights, live = seen
    assert weights[weights.index("--workload") + 1] == "big_paste" and "--rounds" in weights
    assert "ppd@tpot=1,ppd@tpot=8" in weights
    assert live[live.index("--workload") + 1] == "long-prompt-cpu" and "--rounds" not in live
