"""`measure_profile` against a real ppd-worker subprocess (synthetic model): the HTTP driving,
cache-hit accounting and fitting work end to end. Timing values are not asserted."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ppd_server.profile import ProfileError, measure_profile
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.types import COEFFICIENT_NAMES

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def synthetic_worker():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppd_server.engine", "--model", "synthetic", "--port", str(port), "--threads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ppd-worker exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ppd-worker did not become healthy in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_measure_profile_drives_a_real_worker(synthetic_worker):
    prof = measure_profile(
        synthetic_worker, prefill_lengths=(16, 64, 256), append_prefixes=(128,), append_lengths=(16, 64),
        decode_batches=(1, 2, 4), decode_contexts=(32,), decode_steps=6, repeats=1,
    )
    assert prof["model"] and prof["kv_bytes_per_token"] > 0
    assert set(prof["coefficients"]) == set(COEFFICIENT_NAMES)
    assert all(math.isfinite(v) and v >= 0 for v in prof["coefficients"].values())
    kinds = [s["kind"] for s in prof["samples"]]
    assert kinds.count("prefill") == 3 + 2 and kinds.count("decode") == 3
    appends = [s for s in prof["samples"] if s["kind"] == "prefill" and s["cached"] > 0]
    # the worker's radix cache served the prefix: the appends computed only the new tokens
    assert len(appends) == 2 and all(s["new"] < 128 for s in appends)
    assert [s["batch"] for s in prof["samples"] if s["kind"] == "decode"] == [1, 2, 4]
    assert CostModel(prof).coefficients("http://w", "unified").to_dict() == pytest.approx(prof["coefficients"])


def test_measure_profile_names_an_unreachable_worker():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ProfileError, match=url):
        measure_profile(url, timeout_s=2.0)
