"""`measure_profile` against a real ppd-worker subprocess (synthetic model): the HTTP driving,
cache-hit accounting and fitting work end to end. Timing values are not asserted."""

from __future__ import annotations

import math

import pytest

from ppd_server.profile import ProfileError, measure_profile
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.types import COEFFICIENT_NAMES

# tests/ is on sys.path (rootdir conftest): the engine tests' launcher ends its process by PID.
from processes import free_port, worker_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def synthetic_worker(tmp_path_factory):
    with worker_process(tmp_path_factory.mktemp("synthetic_worker"), "synthetic", "--model", "synthetic") as proc:
        yield proc.url


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
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProfileError, match=url):
        measure_profile(url, timeout_s=2.0)
