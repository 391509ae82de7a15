"""The comparison's pure parts: system validation, ABBA pooling of rounds, the side-by-side table."""

from __future__ import annotations

import pytest
from ppd_bench.compare import CompareConfig, _front_argv, _pool
from ppd_bench.driver import BenchError, RunConfig
from ppd_bench.report import compare_table
from ppd_bench.stats import TurnRecord, summarize


def _result(label: str, ttft2: float, tpot: float, wall: float = 10.0) -> dict:
    recs = [
        TurnRecord(
            "s0", 1, 0.0, 1.0, True, 10, 4, ttft_ms=900, tpot_ms=tpot, e2e_ms=1000, completion_tokens=4, route="pd"
        ),
        TurnRecord(
            "s0", 2, 2.0, 3.0, True, 5, 4, ttft_ms=ttft2, tpot_ms=tpot, e2e_ms=500, completion_tokens=4, route="local"
        ),
    ]
    return {
        "label": label,
        "url": "u",
        "load": {"sessions": 1, "turns": 2, "sessions_per_s": 0.2},
        "config": {},
        "wall_s": wall,
        "hit_deadline": False,
        "summary": summarize(recs, wall),
        "records": [r.to_json() for r in recs],
    }


def test_systems_are_validated():
    CompareConfig(systems=("ppd", "pd", "threshold:128", "ratio:0.5", "sglang-router", "smg")).validate()
    for bad, needle in [(("ppd", "nginx"), "unknown system 'nginx'"), (("pd", "pd"), "twice"), ((), "no system")]:
        with pytest.raises(BenchError, match=needle):
            CompareConfig(systems=bad).validate()
    with pytest.raises(BenchError, match="--rounds"):
        CompareConfig(rounds=0).validate()


def test_rounds_pool_their_records_and_time():
    entry = {
        "system": "ppd",
        "rounds": [
            {"round": 1, "result": _result("ppd", 100, 50)},
            {"round": 2, "error": "did not start"},
            {"round": 3, "result": _result("ppd", 300, 70, wall=30.0)},
        ],
    }
    _pool(entry, RunConfig(url="http://x"))
    res = entry["result"]
    assert res["rounds"] == 2 and res["wall_s"] == 40.0 and res["load"]["sessions"] == 2
    assert res["summary"]["turn2plus"]["ttft_ms"]["p50"] == 200.0 and res["summary"]["all"]["turns"] == 4
    assert {r["session"] for r in res["records"]} == {"r1/s0", "r3/s0"}
    failed = {"system": "smg", "rounds": [{"round": 1, "error": "smg is not installed"}]}
    _pool(failed, RunConfig(url="http://x"))
    assert failed["error"] == "smg is not installed" and "result" not in failed


def test_table_has_ratios_against_the_baseline():
    systems = [
        {"system": "ppd", "result": _result("ppd", 100, 50)},
        {"system": "sglang-router", "result": _result("sr", 400, 50)},
        {"system": "smg", "error": "smg is not installed"},
    ]
    table = compare_table(systems, "sglang-router")
    ppd_row = next(line for line in table.splitlines() if line.startswith("ppd "))
    assert ppd_row.split()[-2:] == ["0.25", "1.00"]
    assert "smg              not run: smg is not installed" in table


def test_front_ends_are_put_in_front_of_the_same_workers():
    for system in ("ppd", "sglang-router", "smg"):
        argv, _env, _ready = _front_argv(system, 8000, "http://127.0.0.1:1", 9, "http://127.0.0.1:2", 8001)
        joined = " ".join(argv)
        assert (
            "--prefill http://127.0.0.1:1 9" in joined
            and "--decode http://127.0.0.1:2" in joined
            and "--port 8000" in joined
        )
    assert "--pd-disaggregation" in " ".join(_front_argv("sglang-router", 1, "p", 2, "d", 3)[0])
    assert "--policy threshold:64" in " ".join(_front_argv("threshold:64", 1, "p", 2, "d", 3)[0])


def test_busy_share_is_each_workers_forward_time_over_the_run(monkeypatch):
    import time

    from ppd_bench import compare

    monkeypatch.setattr(time, "monotonic", lambda: 110.0)
    before = {"http://p": 5.0, "http://d": 1.0, "http://x": None}
    after = {"http://p": 10.5, "http://d": 8.0, "http://x": 3.0}
    assert compare._busy_share(before, after, since=100.0) == {"http://p": 0.55, "http://d": 0.7}


def test_a_system_may_carry_the_clients_tpot_weight():
    from ppd_bench.compare import split_system

    assert split_system("ppd") == ("ppd", None) and split_system("threshold:256") == ("threshold:256", None)
    assert split_system("ppd@tpot=4") == ("ppd", 4.0)
    CompareConfig(systems=("ppd@tpot=0.5", "ppd@tpot=8")).validate()  # the same policy twice, two weights
    for bad in ("ppd@tpot=x", "ppd@ttft=1", "ppd@tpot=-1", "sglang-router@tpot=2", "nope@tpot=1"):
        with pytest.raises(BenchError, match="--systems"):
            CompareConfig(systems=(bad,)).validate()
