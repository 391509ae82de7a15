"""Plots: PNGs from run and compare documents; failed runs are marked; bad files are named."""

from __future__ import annotations

import json

import pytest
from ppd_bench.plot import expand, load_results, plot_all
from ppd_bench.stats import TurnRecord, summarize


def _result(label: str, rate: float, ok: bool = True, w_tpot: float = 1.0) -> dict:
    recs = [
        TurnRecord(
            "s0",
            1,
            0.0,
            1.0,
            True,
            10,
            4,
            ttft_ms=300 * rate,
            tpot_ms=40,
            e2e_ms=500,
            completion_tokens=4,
            prompt_tokens=20,
            cached_tokens=0,
            route="pd",
        ),
        TurnRecord(
            "s0",
            2,
            12.0,
            13.0,
            ok,
            5,
            4,
            error=None if ok else "boom",
            ttft_ms=100 * rate if ok else None,
            tpot_ms=45 if ok else None,
            e2e_ms=300 if ok else None,
            completion_tokens=4 if ok else None,
            prompt_tokens=30,
            cached_tokens=20,
            route="local" if ok else None,
        ),
    ]
    return {
        "label": label,
        "url": "http://x",
        "load": {"sessions_per_s": rate},
        "config": {"w_ttft": 1.0, "w_tpot": w_tpot},
        "hit_deadline": False,
        "summary": summarize(recs, 14.0),
        "records": [r.to_json() for r in recs],
    }


def test_plots_are_drawn_from_runs_and_comparisons(tmp_path):
    runs = [_result("ppd", 0.1), _result("ppd", 0.2, ok=False), _result("pd", 0.1), _result("ppd", 0.1, w_tpot=3.0)]
    (tmp_path / "r.json").write_text(json.dumps(runs[0]))
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "systems": [
                    {"system": "ppd", "result": runs[1]},
                    {"system": "smg", "error": "x"},
                    {"system": "pd", "result": runs[2]},
                ]
            }
        )
    )
    loaded = load_results([str(tmp_path / "r.json"), str(tmp_path / "c.json")])
    assert [r["label"] for r in loaded] == ["ppd", "ppd", "pd"]
    paths = plot_all(loaded + [runs[3]], tmp_path / "plots")
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["latency_vs_load.png", "route_share.png", "ttft_tpot_tradeoff.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ValueError, match=r"x\.json' is not JSON"):
        load_results([str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="not a ppd-bench result"):
        expand({"foo": 1}, "y.json")
    with pytest.raises(ValueError, match="cannot read result"):
        load_results([str(tmp_path / "missing.json")])
