"""End to end on the real SmolLM2-135M-Instruct, real worker processes, real KV over TCP,
the real openai client and the real sglang-router (PD mode)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI
from processes import free_port, pd_router_process, worker_process

pytestmark = pytest.mark.e2e

MODEL_FLAGS = ("--model", "smollm2", "--max-total-tokens", "8192")
QUESTION = [{"role": "user", "content": "What is the capital of Germany?"}]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-e2e")


@pytest.fixture(scope="module")
def unified(tmp_dir):
    with worker_process(tmp_dir, "unified", *MODEL_FLAGS) as proc:
        yield proc


@pytest.fixture(scope="module")
def prefill(tmp_dir):
    port = free_port()
    with worker_process(
        tmp_dir,
        "prefill",
        *MODEL_FLAGS,
        "--disaggregation-mode",
        "prefill",
        "--disaggregation-bootstrap-port",
        str(port),
    ) as proc:
        proc.bootstrap_port = port
        yield proc


@pytest.fixture(scope="module")
def decode(tmp_dir):
    with worker_process(
        tmp_dir,
        "decode",
        *MODEL_FLAGS,
        "--disaggregation-mode",
        "decode",
        "--disaggregation-decode-enable-radix-cache",
        "--disaggregation-decode-enable-conditional-agg",
    ) as proc:
        yield proc


def chat_pd(prefill, decode, messages, **extra) -> dict:
    """What a PD router does: the same body, with bootstrap fields, to both workers at once."""
    body = {
        "messages": messages,
        "max_tokens": 40,
        "temperature": 0,
        "bootstrap_host": "127.0.0.1",
        "bootstrap_port": prefill.bootstrap_port,
        "bootstrap_room": random.randrange(2**63),
        **extra,
    }
    with ThreadPoolExecutor(2) as pool:
        p_future = pool.submit(httpx.post, prefill.url + "/v1/chat/completions", json=body, timeout=120)
        d_future = pool.submit(httpx.post, decode.url + "/v1/chat/completions", json=body, timeout=120)
        p_resp, d_resp = p_future.result(), d_future.result()
    assert p_resp.status_code == 200, p_resp.text
    assert d_resp.status_code == 200, d_resp.text
    return d_resp.json()


def kv_bytes_per_token(proc) -> int:
    return httpx.get(proc.url + "/server_info").json()["kv_bytes_per_token"]


def test_germany_answer_is_berlin_on_unified_and_1p1d_identically(unified, prefill, decode):
    client = OpenAI(base_url=unified.url + "/v1", api_key="none")
    answer = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=40, temperature=0)
    unified_text = answer.choices[0].message.content
    assert "Berlin" in unified_text
    pd = chat_pd(prefill, decode, QUESTION)
    assert pd["choices"][0]["message"]["content"] == unified_text
    prompt_tokens = pd["usage"]["prompt_tokens"]
    assert pd["meta_info"]["kv_transfer_bytes"] == prompt_tokens * kv_bytes_per_token(decode)


def test_second_turn_cached_on_decode_via_pd_and_via_local_prefill(prefill, decode):
    first = [{"role": "user", "content": "Name three colours of the rainbow."}]
    turn1 = chat_pd(prefill, decode, first)
    history = first + [{"role": "assistant", "content": turn1["choices"][0]["message"]["content"]}]
    turn1_prompt = turn1["usage"]["prompt_tokens"]

    second = history + [{"role": "user", "content": "And one more?"}]
    turn2 = chat_pd(prefill, decode, second)
    meta = turn2["meta_info"]
    decode_hit = meta["cached_tokens_details"]["device"]
    assert decode_hit >= turn1_prompt - 16  # turn 1 (prompt and answer) stayed on D
    assert turn2["usage"]["prompt_tokens_details"]["cached_tokens"] >= decode_hit
    assert meta["kv_transfer_bytes"] == (turn2["usage"]["prompt_tokens"] - decode_hit) * kv_bytes_per_token(decode)
    assert meta["kv_transfer_bytes"] < turn2["usage"]["prompt_tokens"] * kv_bytes_per_token(decode)

    third = second + [
        {"role": "assistant", "content": turn2["choices"][0]["message"]["content"]},
        {"role": "user", "content": "Thanks!"},
    ]
    local = httpx.post(
        decode.url + "/v1/chat/completions",
        timeout=120,
        json={"messages": third, "max_tokens": 20, "temperature": 0, "do_local_prefill": True},
    ).json()
    assert local["usage"]["prompt_tokens_details"]["cached_tokens"] >= turn2["usage"]["prompt_tokens"] - 16
    assert local["meta_info"]["kv_transfer_bytes"] == 0


def test_real_sglang_router_serves_multi_turn_chat_streaming_and_not(tmp_dir, prefill, decode):
    with pd_router_process(tmp_dir, prefill.url, prefill.bootstrap_port, decode.url) as router:
        client = OpenAI(base_url=router.url + "/v1", api_key="none", max_retries=0, timeout=120)
        messages = list(QUESTION)
        reply = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=40, temperature=0)
        text = reply.choices[0].message.content
        assert "Berlin" in text
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "And of France?"}]
        stream = client.chat.completions.create(
            model="smollm2",
            messages=messages,
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(pieces).strip()
        assert usage is not None and usage.prompt_tokens_details.cached_tokens > 0
        messages += [{"role": "assistant", "content": "".join(pieces)}, {"role": "user", "content": "Thanks."}]
        third = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=20, temperature=0)
        assert third.usage.prompt_tokens_details.cached_tokens > usage.prompt_tokens_details.cached_tokens

        def conversation(topic: str) -> list[int]:
            history, cached = [{"role": "user", "content": f"Tell me one fact about {topic}."}], []
            for follow_up in ("Another one?", "Thanks."):
                reply = client.chat.completions.create(model="smollm2", messages=history, max_tokens=24, temperature=0)
                cached.append(reply.usage.prompt_tokens_details.cached_tokens)
                history += [
                    {"role": "assistant", "content": reply.choices[0].message.content},
                    {"role": "user", "content": follow_up},
                ]
            return cached

        with ThreadPoolExecutor(4) as pool:  # concurrent conversations: rooms and transfers interleave
            cached_per_turn = list(pool.map(conversation, ["cats", "rivers", "stars", "bread"]))
        assert all(turns[1] > 0 for turns in cached_per_turn)
