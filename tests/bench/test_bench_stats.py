"""Per-turn-class figures: percentiles, success, goodput under SLOs, route mix, cached share."""

from __future__ import annotations

import pytest
from ppd_bench.stats import TurnRecord, percentile, summarize


def _rec(
    turn: int, ttft: float, tpot: float, ok: bool = True, route: str | None = "local", cached: int = 0
) -> TurnRecord:
    return TurnRecord(
        "s",
        turn,
        0.0,
        1.0,
        ok,
        10,
        5,
        error=None if ok else "HTTP 500: x",
        ttft_ms=ttft if ok else None,
        tpot_ms=tpot if ok else None,
        e2e_ms=ttft + 4 * tpot if ok else None,
        prompt_tokens=100 if ok else None,
        completion_tokens=5 if ok else None,
        cached_tokens=cached if ok else None,
        route=route if ok else None,
    )


def test_percentile_interpolates_like_numpy():
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 90) == 90.0
    assert percentile([10.0, 0.0], 25) == 2.5  # unsorted input


def test_summary_splits_turn_classes_and_counts_goodput():
    records = [
        _rec(1, 1000, 50, route="pd"),
        _rec(1, 3000, 50, route="pd"),
        _rec(2, 100, 40, cached=90),
        _rec(3, 200, 80, cached=95),
        _rec(2, 150, 45, route="pd", cached=50),
        _rec(3, 0, 0, ok=False),
    ]
    s = summarize(records, wall_s=10.0, slo_ttft_ms=500.0, slo_tpot_ms=60.0)
    t1, t2, all_ = s["turn1"], s["turn2plus"], s["all"]
    assert (t1["turns"], t2["turns"], all_["turns"]) == (2, 4, 6)
    assert t1["ttft_ms"]["p50"] == 2000.0 and t1["slo_attainment"] == 0.0
    assert t2["ok"] == 3 and t2["failed"] == 1 and t2["success_rate"] == 0.75
    assert t2["slo_attainment"] == 0.5  # 100/40 and 150/45 meet both; 200/80 misses TPOT; the failure counts against
    assert t2["goodput_turns_per_s"] == 0.2
    assert t2["routes"] == {"local": 2, "pd": 1} and t2["route_share"]["local"] == pytest.approx(0.667, abs=1e-3)
    assert t2["cached_tokens"] == 235 and t2["cached_share"] == pytest.approx(235 / 300, abs=1e-3)
    assert t2["errors"] == {"HTTP 500: x": 1}
    assert all_["output_tokens_per_s"] == 2.5  # 5 ok turns x 5 tokens / 10 s


def test_without_slos_every_successful_turn_is_good():
    s = summarize([_rec(1, 5000, 500), _rec(2, 1, 1, ok=False)], wall_s=1.0)
    assert s["all"]["slo_attainment"] == 0.5 and s["turn2plus"]["ttft_ms"]["p50"] is None


def test_records_round_trip():
    r = _rec(2, 10.5, 3.25, cached=7)
    assert TurnRecord.from_json(r.to_json()) == r
