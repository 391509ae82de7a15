"""Review finding: max_new_tokens=0 (SGLang: prefill only) must produce no output token;
the engine sampled and returned one, exceeding the client's limit."""

from __future__ import annotations

import asyncio
import random

from .conftest import serve_worker


async def test_zero_max_new_tokens_returns_no_token(unified):
    client, _ = unified
    r = await client.post("/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 0}})
    body = await r.json()
    assert r.status == 200, body
    assert body["output_ids"] == [] and body["text"] == ""
    assert body["meta_info"]["finish_reason"] == {"type": "length", "length": 0}


async def test_zero_max_tokens_completion_is_empty(unified):
    client, _ = unified
    r = await client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 0})
    body = await r.json()
    assert body["choices"][0]["text"] == "" and body["usage"]["completion_tokens"] == 0


async def test_zero_max_new_tokens_through_pd_returns_no_token(prefill):
    p_client, p_worker = prefill
    async with serve_worker(disaggregation_mode="decode") as (d_client, _):
        body = {"text": "hello there", "sampling_params": {"max_new_tokens": 0},
                "bootstrap_host": "127.0.0.1", "bootstrap_port": p_worker.bootstrap.port,
                "bootstrap_room": random.randrange(2 ** 63)}
        p_resp, d_resp = await asyncio.gather(p_client.post("/generate", json=body),
                                              d_client.post("/generate", json=body))
        assert p_resp.status == 200, await p_resp.text()
        d_body = await d_resp.json()
        assert d_resp.status == 200, d_body
        assert d_body["output_ids"] == []
