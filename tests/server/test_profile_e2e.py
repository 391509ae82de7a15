"""`ppd-server profile` end to end: the real command starts an embedded SmolLM2 ppd-worker,
drives the tiny grid over HTTP (prefill, append over a cached prefix, decode, mixed) and writes
a profile the router and ppd-sim load. Timing values are not asserted, only their shape."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

# tests/ is on sys.path (rootdir conftest): the one test process launcher
from processes import free_port

from ppd_server.profiling import ProfileError, load_profile, measure_profile
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.types import COEFFICIENT_NAMES

pytestmark = pytest.mark.e2e


def test_ppd_server_profile_measures_an_embedded_worker_and_writes_a_loadable_profile(tmp_path):
    out = tmp_path / "p.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ppd_server.cli import main; sys.exit(main())",
            "profile",
            "--grid",
            "tiny",
            "--threads",
            "1",
            "--max-seconds",
            "60",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[ppd-server profile] 0/8 prefill" in proc.stderr and "8/8 fit" in proc.stderr  # progress
    prof = load_profile(out)
    assert set(prof["coefficients"]) == set(COEFFICIENT_NAMES)
    assert all(math.isfinite(v) and v >= 0 for v in prof["coefficients"].values())
    assert prof["kv_bytes_per_token"] > 0 and prof["skipped"] == 0 and prof["grid"]["decode_batches"] == [1, 2, 3]
    kinds = [s["kind"] for s in prof["samples"]]
    assert kinds.count("prefill") == 4 and kinds.count("mixed") == 1 and kinds.count("decode") >= 3
    appends = [s for s in prof["samples"] if s["kind"] == "prefill" and s["cached"] > 0]
    # the worker's radix cache served the prefix: the append computed only the new tokens
    assert len(appends) == 1 and appends[0]["new"] < 64
    mixed = next(s for s in prof["samples"] if s["kind"] == "mixed")
    assert mixed["batch"] == 2 and mixed["context"] >= 2 * 32 and mixed["ms"] > 0
    assert set(prof["fit"]) == {"prefill_abs_pct_err", "decode_abs_pct_err", "mixed_abs_pct_err"}
    assert CostModel(prof).coefficients("http://w", "unified").to_dict() == pytest.approx(prof["coefficients"])
    assert json.loads(proc.stdout)["coefficients"] == prof["coefficients"]


def test_measure_profile_names_an_unreachable_worker():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProfileError, match=url):
        measure_profile(url, timeout_s=2.0)
