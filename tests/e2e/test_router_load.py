"""The router under load, scaled down for CI (``benchmarks/router_load.py`` at full size: 1,000
streams for 60 s and 100,000 conversations): real processes over real HTTP - the router, a fast
fake prefill and decode worker, the load generator. Asserts what must hold whatever the machine's
speed: every request answered exactly once (counted at the client and at both workers), no
failed request, the session table never above its bound while ten times more conversations pass.
No timing assert; RSS growth is printed, not asserted (10 s is too short to judge memory).
The second test runs the same generator over a real embedded 1P1D cluster (SmolLM2), briefly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_concurrent_streams_and_churn_answer_every_request_exactly_once(tmp_path):
    out = tmp_path / "load.json"
    argv = [
        sys.executable, str(BENCH / "router_load.py"),
        "--sessions", "200", "--seconds", "10", "--turns", "3", "--tokens", "4", "--token-interval-ms", "100",
        "--conversations", "3000", "--churn-concurrency", "16", "--max-sessions", "300",
        "--warmup-s", "3", "--json", str(out), "--router-log", str(tmp_path / "router.log"),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=280)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    print(json.dumps(r, indent=2))
    eo = r["exactly_once"]
    assert eo["requests_sent"] > 3000 + 200, "phase B sent at least one turn per session"
    assert eo["answered_exactly_once_client"] == eo["requests_sent"] == eo["router_counted"]
    assert eo["lost"] == 0 and eo["duplicated_client"] == 0
    assert eo["decode_not_exactly_once"] == 0 and eo["prefill_not_as_routed"] == 0
    assert eo["unknown_ids_at_workers"] == 0
    assert r["failures"] == 0, r["failure_examples"]
    assert r["distinct_conversations"] >= 10 * r["session_table"]["bound"]
    assert 0 < r["session_table"]["max_seen"] <= r["session_table"]["bound"]
    assert set(eo["routes"]) <= {"pd", "local"} and eo["routes"].get("pd", 0) > 0


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_sustained_multi_turn_on_the_embedded_cluster_answers_every_turn_once(tmp_path):
    """The same load generator over ``ppd-server --embedded 1P1D`` (real SmolLM2 workers): a
    short churn of distinct conversations, then concurrent multi-turn streams. Exactly once at
    the client and in the router's own count; the table bounded."""
    out = tmp_path / "embedded.json"
    argv = [
        sys.executable, str(BENCH / "router_load.py"), "--embedded", "1P1D",
        "--sessions", "4", "--seconds", "15", "--turns", "3", "--tokens", "4",
        "--conversations", "30", "--churn-concurrency", "2", "--max-sessions", "10", "--warmup-s", "3",
        "--json", str(out), "--router-log", str(tmp_path / "router.log"),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=580)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    print(json.dumps(r, indent=2))
    eo = r["exactly_once"]
    assert eo["requests_sent"] >= 30 + 4
    assert eo["answered_exactly_once_client"] == eo["requests_sent"] == eo["router_counted"]
    assert eo["lost"] == 0 and eo["duplicated_client"] == 0
    assert r["failures"] == 0, r["failure_examples"]
    assert 0 < r["session_table"]["max_seen"] <= 10
    assert r["phase_b"]["requests"] > r["phase_b"]["conversations"], "some conversation reached turn 2"
