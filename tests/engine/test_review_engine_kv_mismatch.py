"""Review finding: a decode worker must refuse KV for a prompt of another length than its
own (the two sides got different prompts: a router bug, or a P/D pair with different
tokenizers/templates) with a clear 503, instead of decoding from mismatched KV."""

from __future__ import annotations

import asyncio
import random

from .conftest import serve_worker

GREEDY = {"temperature": 0, "max_new_tokens": 4}


async def test_decode_refuses_kv_of_a_different_prompt_length(prefill):
    p_client, p_worker = prefill
    async with serve_worker(disaggregation_mode="decode") as (d_client, _):
        boot = {"bootstrap_host": "127.0.0.1", "bootstrap_port": p_worker.bootstrap.port,
                "bootstrap_room": random.randrange(2 ** 63), "sampling_params": GREEDY}
        p_resp, d_resp = await asyncio.gather(
            p_client.post("/generate", json={"text": "short prompt", **boot}),
            d_client.post("/generate", json={"text": "a considerably longer prompt on the decode side", **boot}))
        assert d_resp.status == 503, await d_resp.text()
        assert "prompt" in (await d_resp.json())["error"]["message"]
        assert p_resp.status == 503, await p_resp.text()
