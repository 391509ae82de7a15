"""sim_grid over several seeds: a cell's figures are the means over its seeds and the invariant
is checked on them, while each seed's own verdict is kept."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pytest
import sim_grid
import sim_weights


def _summary(policy: str, attainment: float, ttft: float) -> dict:
    return {
        "policy": policy,
        "slo_attainment": attainment,
        "turn2plus_ttft_ms": {"p50": ttft},
        "tpot_ms": {"p50": 10.0},
        "turn2plus_local_share": 0.5 if policy == "ppd" else None,
    }


def test_the_check_runs_on_the_means_and_each_seed_keeps_its_verdict():
    seed0 = sim_grid._row("3P1D", "big_paste", 8, "1x sat", [_summary("pd", 1.0, 40.0), _summary("ppd", 1.0, 41.0)])
    seed1 = sim_grid._row("3P1D", "big_paste", 8, "1x sat", [_summary("pd", 1.0, 44.0), _summary("ppd", 1.0, 39.0)])
    assert sim_grid.check(seed0) and not sim_grid.check(seed1)  # ppd slower than pd on seed 0 only
    mean = sim_grid._mean_row([seed0, seed1])
    assert mean.ttft2_p50 == {"pd": 42.0, "ppd": 40.0}
    assert mean.local_share == {"pd": None, "ppd": 0.5}
    assert sim_grid.check(mean) == []
    worse = sim_grid._row("3P1D", "big_paste", 8, "1x sat", [_summary("pd", 1.0, 40.0), _summary("ppd", 0.9, 45.0)])
    assert len(sim_grid.check(sim_grid._mean_row([seed0, worse]))) == 2  # attainment 95% < 100 - 2, and TTFT


def test_seeds_reach_the_simulator_and_one_seed_is_the_old_grid():
    spec = sim_grid.GridSpec(seeds=(3, 4))
    argv = sim_grid._argv(spec, "1P3D", "mid_bal", 2.0, ["ppd"], seed=4)
    assert argv[argv.index("--seed") + 1] == "4"
    assert sim_grid._argv(spec, "1P3D", "mid_bal", 2.0, ["pd"])[argv.index("--seed") + 1] == "3"  # the ladder's
    only = sim_grid._row("1P3D", "mid_bal", 2, "fixed", [_summary("ppd", 1.0, 20.0)])
    assert sim_grid._mean_row([only]) is only


@pytest.mark.parametrize("seeds", ["0,x", ","])
def test_bad_seeds_are_a_one_line_error_with_exit_2(capsys, seeds):
    with pytest.raises(SystemExit) as e:
        sim_grid.main(["--seeds", seeds])
    assert e.value.code == 2
    assert f"bad --seeds {seeds!r}" in capsys.readouterr().err


def test_a_sweep_step_is_paired_by_seed_with_its_standard_error():
    # seed-to-seed levels differ a lot (0.2 vs 0.8); the paired step is the same -0.1 in each seed
    mean, se = sim_grid.paired_difference([0.3, 0.9, 0.5], [0.2, 0.8, 0.4])
    assert mean == pytest.approx(-0.1) and se == pytest.approx(0.0, abs=1e-12)
    mean, se = sim_grid.paired_difference([0.5, 0.5, None], [0.6, 0.4, 0.9])  # a seed without a figure is left out
    assert mean == pytest.approx(0.0) and se == pytest.approx(0.1)
    assert sim_grid.paired_difference([0.5], [0.4]) == (pytest.approx(-0.1), None)
    assert sim_grid.paired_difference([None], [0.4]) == (None, None)


def test_a_rise_in_local_share_says_whether_it_is_beyond_the_noise():
    row = sim_weights.SweepRow(1.0, 0.6, 7.0, 28.0, step=0.001, step_se=0.015)
    assert sim_weights._noise(row) == " (+0.1 points, SE 1.5: within noise)"
    row = sim_weights.SweepRow(1.0, 0.6, 7.0, 28.0, step=0.05, step_se=0.01)
    assert sim_weights._noise(row) == " (+5.0 points, SE 1.0: beyond noise)"
    assert sim_weights._noise(sim_weights.SweepRow(1.0, 0.6, 7.0, 28.0, step=0.05)) == ""  # one seed: no error


def test_the_router_options_of_a_cell_reach_the_simulator():
    # --sim-args / --router-args may idealise the router (report.py's help names the poll lag):
    # the grid once built its Simulation without them, and every cell ran the live defaults
    base = [
        "--policies",
        "ppd",
        "--cluster",
        "1P3D",
        "--qps",
        "16",
        "--duration",
        "10",
        "--workload",
        "big_paste",
        "--seed",
        "0",
    ]
    lagged = sim_grid.simulate(base)[0]
    assert sim_grid.simulate([*base, "--poll-interval-ms", "0"])[0] != lagged
    assert sim_grid.simulate([*base, "--client-max-tokens", "exact"])[0] != lagged


def test_a_cell_carries_ppds_gap_to_pd_paired_by_seed():
    # seed levels 40 / 44 / 50 ms; ppd is 1 ms slower than pd in every seed: the gap is +1.0 with
    # no spread, which a mean of the two columns alone would not show
    samples = [
        sim_grid._row("3P1D", "huge_paste", 8, "0.5x sat", [_summary("pd", 1.0, t), _summary("ppd", 1.0, t + 1.0)])
        for t in (40.0, 44.0, 50.0)
    ]
    row = sim_grid.cell_row(samples, [0, 1, 2])
    assert row.ttft2_gap == (pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
    assert row.violations and all(row.seed_violations[s] for s in (0, 1, 2))
    assert row.as_dict()["turn2plus_ttft_p50_gap_ms"] == {"mean": pytest.approx(1.0), "se": pytest.approx(0.0)}
    assert sim_grid.format_gap(row.ttft2_gap) == "+1.0 (0.0)" and sim_grid.format_gap((None, None)) == "-"
    assert "+1.0 (0.0)" in sim_grid.format_grid([row])
