"""Every example runs to completion against the real embedded cluster (``ppd_router``);
route_report prints turn 1 as ``pd`` and a route plus cached tokens for the later turns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).parent.parent.parent / "examples"


def _run(script: str, base_url: str, *args: str) -> str:
    env = {**os.environ, "PPD_BASE_URL": base_url}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("script", ["three_turn_session.py", "async_sessions.py", "langgraph_agent.py"])
def test_example_runs_on_the_cluster(ppd_router: str, script: str) -> None:
    out = _run(script, ppd_router)
    print(out)
    assert "route=pd" in out


def test_route_report(ppd_router: str) -> None:
    out = _run("route_report.py", ppd_router, "--turns", "4")
    print(out)
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[0][1] == "pd"
    for row in rows[1:]:
        route, cached = row[1], row[-2]
        assert route in ("local", "pd") and cached.isdigit() and int(cached) > 0
