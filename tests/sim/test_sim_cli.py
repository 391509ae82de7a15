"""The ``ppd-sim`` command: table and JSON output, presets and profile files, errors naming bad values."""

from __future__ import annotations

import json

import pytest

from ppd_server.profiling import roofline_profile, save_profile
from ppd_sim.cli import main

SMALL = ["--qps", "2", "--duration", "5", "--quiet"]


def test_table_has_a_column_per_policy_and_the_promised_rows(capsys):
    assert (
        main(["--policies", "pd,local,threshold:512,ppd", "--slo-ttft-ms", "200", "--slo-tpot-ms", "30", *SMALL]) == 0
    )
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "threshold:512" in line)
    assert header.split() == ["pd", "local", "threshold:512", "ppd"]
    for row in (
        "turn-1 TTFT p50 ms",
        "turn-2+ TTFT p99 ms",
        "TPOT p99 ms",
        "turn-2+ routed local",
        "KV moved GB",
        "SLO attainment",
    ):
        assert row in out
    assert "1P3D llama-3.1-8b@h100" in out and "new sessions/s (~" in out and "requests/s)" in out
    assert "success (in timeout)" in out


def test_json_to_stdout_carries_config_and_figures(capsys):
    assert main(["--policies", "pd,local", "--json", "-", "--cluster", "2P2D", *SMALL]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["cluster"] == "2P2D" and data["config"]["kv_bytes_per_token"] == 131072
    pd, local = data["results"]
    assert (pd["policy"], local["policy"]) == ("pd", "local")
    assert pd["finished"] == pd["requests"] > 0 and pd["turn2plus_local_share"] == 0.0
    assert local["turn2plus_local_share"] == 1.0 and local["kv_gb_moved"] < pd["kv_gb_moved"]
    assert pd["slo_attainment"] is None  # no SLO given


def test_json_file_and_a_profile_file(tmp_path, capsys):
    prof = tmp_path / "prof.json"
    save_profile(roofline_profile(8.0, 312.0, 2039.0, 131072), prof)
    out = tmp_path / "out.json"
    assert main(["--policies", "ppd", "--profile", str(prof), "--json", str(out), *SMALL]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["profile"] == str(prof)
    assert data["config"]["coefficients"]["prefill_per_token_ms"] == pytest.approx(2 * 8e9 / (312e12 * 0.55) * 1e3)
    assert "ppd" in capsys.readouterr().out  # the table is printed too


def test_unified_fleet_routes_replica(capsys):
    assert main(["--policies", "replica", "--cluster", "2R", "--json", "-", *SMALL]) == 0
    (res,) = json.loads(capsys.readouterr().out)["results"]
    assert res["kv_gb_moved"] == 0 and res["finished"] == res["requests"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--policies", "pd,bogus"], "'bogus'"),
        (["--policies", "threshold:abc"], "threshold:abc"),
        (["--cluster", "3X"], "--cluster '3X'"),
        (["--qps", "-1"], "--qps"),
        (["--qps", "500", "--duration", "3600"], "limit is 100000"),
        (["--link-gbs", "0"], "--link-gbs"),
        (["--chunk-tokens", "0"], "--chunk-tokens"),
        (["--gpu", "tpu"], "--gpu 'tpu'"),
        (["--model", "gpt5"], "--model 'gpt5'"),
        (["--workload", "nope"], "--workload 'nope'"),
        (["--turns", "9-2"], "--turns"),
        (["--turns", "many"], "--turns 'many'"),
        (["--slo-ttft-ms", "0"], "--slo-ttft-ms"),
        (["--w-tpot", "nan"], "--w-tpot"),
        (["--profile", "/nonexistent/p.json"], "cannot read profile"),
        (["--kv-capacity-tokens", "100", "--workload", "big_paste"], "--kv-capacity-tokens 100"),
        (["--qps", "abc"], "--qps"),
        (["--poll-interval-ms", "-5"], "--poll-interval-ms"),
        (["--client-max-tokens", "lots"], "--client-max-tokens 'lots'"),
        (["--client-max-tokens", "0"], "--client-max-tokens"),
        (["--link-backlog", "guess"], "--link-backlog"),
        (["--request-timeout-s", "0"], "--request-timeout-s"),
    ],
)
def test_bad_values_exit_2_with_a_message_naming_them(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main([*args, "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_trace_line_is_named(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text('[[10, 5]]\n{"turns": 3}\n')
    with pytest.raises(SystemExit):
        main(["--trace", str(trace), *SMALL])
    assert "line 2" in capsys.readouterr().err


def test_progress_goes_to_stderr(capsys):
    assert main(["--policies", "pd", "--qps", "1", "--duration", "3"]) == 0
    captured = capsys.readouterr()
    assert "ppd-sim: pd:" in captured.err and "ppd-sim: pd:" not in captured.out


def test_router_calibration_options(capsys):
    assert main(["--policies", "ppd", "--router-profile", "builtin", "--online-fit", "--json", "-", *SMALL]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["router_profile"] == "builtin" and data["config"]["online_fit"] is True
    assert data["results"][0]["cost_model"]["online_fit"] is True
    with pytest.raises(SystemExit):
        main(["--router-profile", "/nonexistent.json", *SMALL])
    assert "cannot read profile" in capsys.readouterr().err


def test_what_the_router_knows_defaults_to_the_live_router_and_is_in_the_json(capsys):
    assert main(["--policies", "ppd", "--json", "-", *SMALL]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["poll_interval_ms"], config["client_max_tokens"], config["link_backlog"]) == (500.0, 2048, "router")
    args = ["--poll-interval-ms", "0", "--client-max-tokens", "exact", "--link-backlog", "true"]
    assert main(["--policies", "ppd", "--json", "-", *args, *SMALL]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["poll_interval_ms"], config["client_max_tokens"], config["link_backlog"]) == (0.0, None, "true")


def test_request_timeout_and_success_rate(capsys):
    assert main(["--policies", "pd", "--request-timeout-s", "0.05", "--json", "-", *SMALL]) == 0
    data = json.loads(capsys.readouterr().out)
    (res,) = data["results"]
    assert data["config"]["request_timeout_s"] == 0.05
    assert data["config"]["requests_per_s"] == pytest.approx(data["config"]["turns_total"] / 5)
    assert res["finished"] == res["turns_planned"] and res["timed_out"] == res["finished"]  # every answer takes > 50 ms
    assert res["success_rate"] == 0.0


def test_reasons_say_why_turns_went_where_they_went(capsys):
    assert main(["--policies", "pd,local", "--reasons", "--json", "-", *SMALL]) == 0
    pd, local = json.loads(capsys.readouterr().out)["results"]
    assert pd["turn2plus_reasons"]["top"] == {
        "pd: policy pd (always prefill -> decode)": pd["turn2plus_reasons"]["turns"]
    }
    assert pd["turn2plus_reasons"]["turns"] == local["turn2plus_reasons"]["turns"] > 0
    assert local["turn2plus_reasons"]["top"] == {
        "local: policy local (# uncached tokens)": local["turn2plus_reasons"]["turns"]
    }
    assert main(["--policies", "ppd", "--reasons", "--slo-tpot-ms", "30", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "ppd: why turns 2+ went where they went" in out
    assert any(line.strip().split()[1].endswith("%") and "#" in line for line in out.splitlines() if "S=#" in line)


def test_reason_kind_masks_figures_and_workers():
    from ppd_sim.report import reason_kind

    assert (
        reason_kind("pd: over sim://d12's TPOT budget (local prefill 11ms > 5.6ms per step); S=-2.1 (ttft 3ms)")
        == "pd: over <worker>'s TPOT budget (local prefill #ms > #ms per step)"
    )
