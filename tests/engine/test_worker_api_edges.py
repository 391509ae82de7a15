"""The worker in-process on the synthetic model, at its edges: malformed chat messages and deeply
nested bodies are a 400 (never a 500), a multi-token stop string cuts a stream exactly where it
cuts the non-streamed answer, and zero-token requests answer with no token (also through P->D)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from .conftest import serve_worker, sse_chunks

# --- malformed chat messages must be a 400 with an OpenAI error body, never a 500.


@pytest.mark.parametrize(
    "message",
    [
        {"role": ["user"], "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": 5}]},
        {"role": "assistant", "content": "x", "tool_calls": 7},
    ],
    ids=["unhashable-role", "non-string-text-part", "non-list-tool-calls"],
)
async def test_malformed_chat_message_is_400_not_500(unified, message):
    client, _ = unified
    r = await client.post("/v1/chat/completions", json={"messages": [message], "max_tokens": 2})
    body = await r.json()
    assert r.status == 400, body
    assert body["error"]["param"].startswith("messages[0]")


async def test_tool_call_with_a_non_object_function_is_not_a_500(unified):
    client, _ = unified
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": "x"}]},
    ]
    r = await client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status in (200, 400), await r.text()


async def test_null_max_completion_tokens_falls_back_to_max_tokens(unified):
    client, _ = unified
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": None,
        "max_tokens": 3,
        "temperature": 0,
        "ignore_eos": True,
    }
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status == 200
    assert (await r.json())["usage"]["completion_tokens"] == 3


# --- a deeply nested JSON body (json.loads raises RecursionError, not
# ValueError) must be a 400 like any other unparsable body, not a 500.


@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions", "/v1/completions", "/abort_request"])
async def test_deeply_nested_json_body_is_400(unified, path):
    client, _ = unified
    r = await client.post(path, data="[" * 100_000 + "]" * 100_000, headers={"Content-Type": "application/json"})
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["type"] == "invalid_request_error"


# --- with a multi-token stop string, an OpenAI stream must not send the start
# of the stop string before it is matched (the non-streamed answer trims it, so the streamed
# deltas would add up to a different text).

PROMPT = "Tell me a story about a cat"


async def _stop_inside_free_output(client, path: str, body: dict) -> str:
    free = await (await client.post(path, json={**body, "max_tokens": 16, "temperature": 0})).json()
    choice = free["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    if len(text) < 2:
        pytest.skip("synthetic output too short for a two-character stop string")
    return text[:2]  # two characters = two tokens of the synthetic byte-level tokenizer


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}),
        ("/v1/completions", {"prompt": PROMPT}),
    ],
    ids=["chat", "completions"],
)
async def test_streamed_text_equals_the_non_streamed_text_with_a_multi_token_stop(unified, path, body):
    client, _ = unified
    stop = await _stop_inside_free_output(client, path, body)
    request = {**body, "max_tokens": 16, "temperature": 0, "stop": [stop]}
    plain = await (await client.post(path, json=request)).json()
    choice = plain["choices"][0]
    expected = choice["message"]["content"] if "message" in choice else choice["text"]
    assert choice["finish_reason"] == "stop" and expected == ""
    chunks = await sse_chunks(await client.post(path, json={**request, "stream": True}))
    pieces = [
        c["choices"][0]["delta"].get("content") or "" if "delta" in c["choices"][0] else c["choices"][0]["text"]
        for c in chunks
        if c != "[DONE]" and c["choices"]
    ]
    assert "".join(pieces) == expected, json.dumps(pieces)


# --- max_new_tokens=0 (SGLang: prefill only) must produce no output token;
# the engine sampled and returned one, exceeding the client's limit.


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
        body = {
            "text": "hello there",
            "sampling_params": {"max_new_tokens": 0},
            "bootstrap_host": "127.0.0.1",
            "bootstrap_port": p_worker.bootstrap.port,
            "bootstrap_room": random.randrange(2**63),
        }
        p_resp, d_resp = await asyncio.gather(
            p_client.post("/generate", json=body), d_client.post("/generate", json=body)
        )
        assert p_resp.status == 200, await p_resp.text()
        d_body = await d_resp.json()
        assert d_resp.status == 200, d_body
        assert d_body["output_ids"] == []
