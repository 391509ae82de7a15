"""``ppd-bench run`` as a real process against a real ppd-server (embedded 1P1D, SmolLM2): it
shows progress, writes the JSON, and reads the route and cached tokens from the responses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from processes import STARTUP_TIMEOUT_S, free_port, router_argv, started

from ppd_sim.workload import Session
from ppd_sim.workload_file import write_sessions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def router_url():
    port = free_port()
    argv = router_argv(
        port,
        "--policy",
        "ppd",
        "--embedded",
        "1P1D",
        "--load-interval",
        "0.5",
        "--startup-timeout",
        str(STARTUP_TIMEOUT_S),
    )
    with started("ppd-server", argv, port, timeout=STARTUP_TIMEOUT_S) as router:
        yield router.url


def test_run_against_a_real_router_shows_progress_and_writes_json(router_url, tmp_path):
    workload = tmp_path / "w.jsonl"
    write_sessions(workload, [Session(f"s{k}", ((64, 8), (16, 8), (16, 8)), (100.0, 100.0)) for k in range(2)])
    out = tmp_path / "res.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ppd_bench",
            "run",
            "--url",
            router_url,
            "--workload",
            str(workload),
            "--rate",
            "2",
            "--sessions",
            "2",
            "--deadline",
            "120",
            "--slo-ttft-ms",
            "60000",
            "--label",
            "ppd",
            "--out",
            str(out),
            "--save-workload",
            str(tmp_path / "ran.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ppd:" in proc.stderr and "6/6" in proc.stderr and "turn" in proc.stderr  # the progress bar
    assert "turn2plus" in proc.stdout  # the table
    res = json.loads(out.read_text())
    s = res["summary"]
    assert s["all"]["turns"] == 6 and s["all"]["success_rate"] == 1.0 and res["hit_deadline"] is False
    assert s["turn1"]["routes"] == {"pd": 2}
    assert sum(s["turn2plus"]["routes"].values()) == 4 and set(s["turn2plus"]["routes"]) <= {"local", "pd"}
    assert s["turn2plus"]["cached_tokens"] > 0 and s["turn2plus"]["ttft_ms"]["p50"] > 0
    for rec in res["records"]:
        assert rec["completion_tokens"] == 8  # ignore_eos + max_tokens
        assert rec["prompt_tokens"] >= rec["requested_input_tokens"]
    assert res["load"]["sessions_per_s"] == 2 and res["load"]["offered_requests_per_s"] == 6
    ran = [json.loads(x) for x in (tmp_path / "ran.jsonl").read_text().splitlines()]
    assert len(ran) == 2 and all("arrival_ms" in x for x in ran)
