"""End to end: fresh real SmolLM2 prefill and decode workers warm themselves up (no warning in
their logs) and, once /health is 200, show no trace of it: zero counted requests and KV
bytes, no last step, and the warmup's own prompt gets no cache hit through P->D."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from processes import pd_pair

from ppd_engine.warmup import _MESSAGES

pytestmark = pytest.mark.e2e

MODEL_FLAGS = ("--model", "smollm2", "--max-total-tokens", "8192")


def test_fresh_pd_pair_is_warm_and_clean(tmp_path):
    with pd_pair(tmp_path, *MODEL_FLAGS) as (prefill, decode):
        bootstrap = prefill.bootstrap_port
        for proc in (prefill, decode):
            assert "warmup failed" not in proc.log_tail(20000)
            loads = httpx.get(proc.url + "/v1/loads").json()["loads"][0]
            assert loads["last_step_ms"] == 0 and loads["num_used_tokens"] == 0
            assert loads["disaggregation"]["kv_transfer_total_bytes"] == 0
            metrics = httpx.get(proc.url + "/metrics").text
            assert "sglang:num_requests_total{" not in metrics  # no labelled sample yet: nothing counted
        body = {
            "messages": _MESSAGES,
            "max_tokens": 4,
            "temperature": 0,
            "bootstrap_host": "127.0.0.1",
            "bootstrap_port": bootstrap,
            "bootstrap_room": random.randrange(2**63),
        }
        with ThreadPoolExecutor(2) as pool:
            p_future = pool.submit(httpx.post, prefill.url + "/v1/chat/completions", json=body, timeout=60)
            d_future = pool.submit(httpx.post, decode.url + "/v1/chat/completions", json=body, timeout=60)
            p_resp, d_resp = p_future.result(), d_future.result()
        assert p_resp.status_code == 200 and d_resp.status_code == 200, d_resp.text
        assert d_resp.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert p_resp.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        metrics = httpx.get(decode.url + "/metrics").text
        assert 'sglang:num_requests_total{model_name="SmolLM2-135M-Instruct"} 1.0' in metrics, metrics[-3000:]
