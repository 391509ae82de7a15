"""The ppd-bench CLI: bad input is one line naming the value, exit status 2; every option is
explained; ``workload`` writes files that ``run`` and ppd-sim read."""

from __future__ import annotations

import argparse
import json

import pytest
from ppd_bench.cli import build_parser, main

from ppd_server.fleet.launcher import free_port


def _fails(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    for n in needles:
        assert n in err, (n, err)


def test_unknown_workload(capsys):
    _fails(
        capsys,
        ["run", "--url", "http://127.0.0.1:9", "--workload", "nope"],
        "unknown workload 'nope'",
        "long-context-cpu",
    )
    _fails(capsys, ["workload", "nope", "--out", "x"], "unknown workload 'nope'")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rate", "-1"),
        ("--rate", "nan"),
        ("--duration", "0"),
        ("--sessions", "0"),
        ("--slo-ttft-ms", "-5"),
        ("--w-tpot", "-1"),
        ("--think-s", "-2"),
    ],
)
def test_bad_numbers_are_named(capsys, flag, value):
    _fails(capsys, ["run", "--url", "http://127.0.0.1:9", flag, value], flag, value)


def test_not_a_number_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--url", "http://127.0.0.1:9", "--rate", "fast"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--rate" in err and "'fast'" in err


def test_bad_url(capsys):
    _fails(capsys, ["run", "--url", "localhost:30000"], "--url 'localhost:30000'")


def test_unreachable_url(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    _fails(capsys, ["run", "--url", url, "--sessions", "1", "--no-progress"], f"cannot reach --url '{url}'")


def test_malformed_trace(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"turns": [{"input_tokens": 5, "output_tokens": 5}]}\n{"turns": [{"input_tokens": "many"}]}\n')
    _fails(capsys, ["run", "--url", "http://127.0.0.1:9", "--workload", str(bad)], str(bad), "line 2", "bad turn 1")
    _fails(capsys, ["workload", "--import", str(bad), "--out", str(tmp_path / "o.jsonl")], str(bad), "line 1")


def test_compare_and_plot_errors_name_the_value(capsys, tmp_path):
    _fails(capsys, ["compare", "--systems", "ppd,vllm-router"], "unknown system 'vllm-router'")
    _fails(capsys, ["compare", "--rate", "-3"], "--rate", "-3")
    _fails(capsys, ["plot", str(tmp_path / "none.json"), "--out", str(tmp_path)], "none.json")


def test_every_option_is_explained():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == {"workload", "run", "plot", "compare"}
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if action.help != argparse.SUPPRESS:
                assert action.help and len(action.help) > 10, (name, action.dest)
        assert sub.description


def test_workload_command_writes_a_file_run_and_sim_read(capsys, tmp_path):
    out = tmp_path / "w.jsonl"
    assert (
        main(["workload", "long-context-cpu", "--sessions", "3", "--seed", "2", "--rate", "0.5", "--out", str(out)])
        == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3 and all(len(s["turns"]) == 5 and "arrival_ms" in s for s in lines)
    assert 1300 < lines[0]["turns"][0]["input_tokens"] < 1700 and lines[0]["turns"][1]["output_tokens"] == 32
    assert "wrote 3 sessions (15 turns)" in capsys.readouterr().err
    from ppd_sim.cli import main as sim_main

    assert (
        sim_main(
            [
                "--trace",
                str(out),
                "--qps",
                "1",
                "--duration",
                "60",
                "--policies",
                "pd",
                "--quiet",
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "s.json").read_text())["config"]["conversations"] == 3
    capsys.readouterr()
    assert (
        main(
            [
                "workload",
                "mid_bal",
                "--sessions",
                "2",
                "--turns",
                "3",
                "--first-turn",
                "large",
                "--jitter",
                "0",
                "--out",
                "-",
            ]
        )
        == 0
    )
    sessions = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [[(t["input_tokens"], t["output_tokens"]) for t in s["turns"]] for s in sessions] == [
        [(1024, 1024), (128, 128), (128, 128)]
    ] * 2
