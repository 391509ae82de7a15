"""A prefill and a decode worker in one process (synthetic model), KV moved over real TCP
sockets: outputs match a unified worker, incremental transfer on turn 2, do_local_prefill,
and clear errors when the other side never shows up."""

from __future__ import annotations

import asyncio
import random

from .conftest import serve_worker

GREEDY = {"temperature": 0, "max_new_tokens": 10}


def pd_body(worker_prefill, text: str, **extra) -> dict:
    return {
        "text": text,
        "sampling_params": GREEDY,
        "bootstrap_host": "127.0.0.1",
        "bootstrap_port": worker_prefill.bootstrap.port,
        "bootstrap_room": random.randrange(2**63),
        **extra,
    }


async def via_pd(prefill, decode, text: str, path: str = "/generate", body: dict | None = None):
    (p_client, p_worker), (d_client, _) = prefill, decode
    body = body or pd_body(p_worker, text)
    p_resp, d_resp = await asyncio.gather(p_client.post(path, json=body), d_client.post(path, json=body))
    assert p_resp.status == 200, await p_resp.text()
    assert d_resp.status == 200, await d_resp.text()
    return await p_resp.json(), await d_resp.json()


async def test_pd_output_matches_unified_and_prefill_answers_like_sglang(prefill, decode, unified):
    text = "The quick brown fox jumps over the lazy dog"
    p_body, d_body = await via_pd(prefill, decode, text)
    u_body = await (await unified[0].post("/generate", json={"text": text, "sampling_params": GREEDY})).json()
    assert d_body["output_ids"] == u_body["output_ids"]
    assert d_body["text"] == u_body["text"]
    assert p_body["meta_info"]["finish_reason"] == {"type": "length", "length": 0}
    assert len(p_body["output_ids"]) == 1 and p_body["output_ids"][0] == d_body["output_ids"][0]
    bpt = decode[1].runner.kv_bytes_per_token
    prompt_tokens = d_body["meta_info"]["prompt_tokens"]
    assert d_body["meta_info"]["kv_transfer_bytes"] == prompt_tokens * bpt
    assert p_body["meta_info"]["kv_transfer_bytes"] == prompt_tokens * bpt


async def test_second_turn_transfers_only_the_uncached_suffix(prefill, decode):
    first_text = "Turn one of a conversation that is long enough to fill several pages. "
    _, d1 = await via_pd(prefill, decode, first_text)
    history = first_text + d1["text"]
    second_text = history + " And a follow-up question?"
    _, d2 = await via_pd(prefill, decode, second_text)
    meta = d2["meta_info"]
    decode_hit = meta["cached_tokens_details"]["device"]
    assert decode_hit > d1["meta_info"]["prompt_tokens"] - 8  # turn 1's prompt (and some output) is on D
    bpt = decode[1].runner.kv_bytes_per_token
    assert meta["kv_transfer_bytes"] == (meta["prompt_tokens"] - decode_hit) * bpt
    assert meta["cached_tokens"] >= decode_hit


async def test_do_local_prefill_on_decode_hits_its_cache_and_matches_unified(prefill, decode, unified):
    first_text = "Local prefill conversation, first turn with enough text for pages. "
    _, d1 = await via_pd(prefill, decode, first_text)
    second_text = first_text + d1["text"] + " Next?"
    d_client = decode[0]
    d2 = await (
        await d_client.post(
            "/generate", json={"text": second_text, "sampling_params": GREEDY, "do_local_prefill": True}
        )
    ).json()
    assert d2["meta_info"]["cached_tokens"] > d1["meta_info"]["prompt_tokens"] - 8
    assert d2["meta_info"]["kv_transfer_bytes"] == 0
    u = await (await unified[0].post("/generate", json={"text": second_text, "sampling_params": GREEDY})).json()
    assert d2["output_ids"] == u["output_ids"]


async def test_pd_chat_completions_stream(prefill, decode):
    p_worker = prefill[1]
    body = {
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 5,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "bootstrap_host": "127.0.0.1",
        "bootstrap_port": p_worker.bootstrap.port,
        "bootstrap_room": random.randrange(2**63),
    }
    p_resp, d_resp = await asyncio.gather(
        prefill[0].post("/v1/chat/completions", json=body), decode[0].post("/v1/chat/completions", json=body)
    )
    assert p_resp.status == 200 and d_resp.status == 200
    text = await d_resp.text()
    assert text.rstrip().endswith("data: [DONE]") and '"usage"' in text
    await p_resp.read()


async def test_prefill_without_a_decode_fetch_times_out_with_503():
    async with serve_worker(disaggregation_mode="prefill", kv_transfer_timeout=0.5) as (client, worker):
        r = await client.post("/generate", json=pd_body(worker, "nobody comes"))
        assert r.status == 503 and "bootstrap_room" in (await r.json())["error"]["message"]
        assert worker.scheduler.num_running == 0


async def test_decode_with_unreachable_prefill_fails_with_503(decode):
    client, worker = decode
    body = {
        "text": "x",
        "sampling_params": GREEDY,
        "bootstrap_host": "127.0.0.1",
        "bootstrap_port": 9,
        "bootstrap_room": 1,
    }
    r = await client.post("/generate", json=body)
    assert r.status == 503 and "bootstrap" in (await r.json())["error"]["message"]
    assert worker.scheduler.num_running == 0


async def test_fake_bootstrap_host_never_connects(prefill):
    client, worker = prefill
    body = {
        "text": "warmup",
        "sampling_params": GREEDY,
        "bootstrap_host": "2.2.2.2",
        "bootstrap_port": 1,
        "bootstrap_room": 0,
    }
    r = await client.post("/generate", json=body)
    assert r.status == 200 and (await r.json())["meta_info"]["kv_transfer_bytes"] == 0


async def test_decode_arriving_first_and_a_rate_capped_link(decode, unified):
    async with serve_worker(disaggregation_mode="prefill", kv_link_gbps=0.2) as (p_client, p_worker):
        text = "Decode comes first, prefill later, over a slow link"
        body = pd_body(p_worker, text)
        d_task = asyncio.ensure_future(decode[0].post("/generate", json=body))
        await asyncio.sleep(0.2)
        p_resp = await p_client.post("/generate", json=body)
        d_resp = await d_task
        assert p_resp.status == 200 and d_resp.status == 200
        u = await (await unified[0].post("/generate", json={"text": text, "sampling_params": GREEDY})).json()
        assert (await d_resp.json())["output_ids"] == u["output_ids"]
        assert not p_worker.bootstrap._rooms


async def test_seeded_sampling_is_the_same_through_pd_and_unified(prefill, decode, unified):
    params = {"temperature": 0.9, "top_p": 0.95, "max_new_tokens": 10, "sampling_seed": 42}
    text = "Seeded sampling must not depend on where tokens are sampled"
    body = {**pd_body(prefill[1], text), "sampling_params": params}
    _, d_body = await via_pd(prefill, decode, text, body=body)
    u_body = await (await unified[0].post("/generate", json={"text": text, "sampling_params": params})).json()
    assert d_body["output_ids"] == u_body["output_ids"]
