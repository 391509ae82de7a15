"""benchmarks/gpu_check.py must not rot: its CPU smoke run (every section, small sizes) passes
here, and its JSON carries each section a GPU run reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_gpu_check_quick_on_cpu_runs_every_section(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--device",
            "cpu",
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["correctness"]["ok"] is True
    assert results["engine"]["decode"] and results["engine"]["prefill"]
    assert set(results["engine"]["stall"]) >= {"alone_ms", "full_step_ms", "append_step_ms", "stall_ratio"}
    assert results["kv_transfer"]["same_host_kind"] == "shm"
    assert results["kv_transfer"]["tcp_gbps"] > 0 and results["kv_transfer"]["same_host_gbps"] > 0
    policies = {row["policy"]: row for row in results["serving"]["policies"]}
    assert set(policies) == {"pd", "local", "ppd"}
    assert all(row["failed"] == 0 for row in policies.values())
    assert policies["pd"]["share_local"] == 0 and policies["local"]["share_local"] == 1
    assert "kv transfer" in run.stdout and "ppd" in run.stdout


def test_gpu_check_refuses_a_missing_gpu_in_one_line():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda:7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "cuda:7" in run.stderr and "Traceback" not in run.stderr
