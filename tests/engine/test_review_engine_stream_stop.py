"""Review finding: with a multi-token stop string, an OpenAI stream must not send the start
of the stop string before it is matched (the non-streamed answer trims it, so the streamed
deltas would add up to a different text)."""

from __future__ import annotations

import json

import pytest

from .test_worker_api import sse_chunks

PROMPT = "Tell me a story about a cat"


async def _stop_inside_free_output(client, path: str, body: dict) -> str:
    free = await (await client.post(path, json={**body, "max_tokens": 16, "temperature": 0})).json()
    choice = free["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    if len(text) < 2:
        pytest.skip("synthetic output too short for a two-character stop string")
    return text[:2]   # two characters = two tokens of the synthetic byte-level tokenizer


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}),
    ("/v1/completions", {"prompt": PROMPT}),
], ids=["chat", "completions"])
async def test_streamed_text_equals_the_non_streamed_text_with_a_multi_token_stop(unified, path, body):
    client, _ = unified
    stop = await _stop_inside_free_output(client, path, body)
    request = {**body, "max_tokens": 16, "temperature": 0, "stop": [stop]}
    plain = await (await client.post(path, json=request)).json()
    choice = plain["choices"][0]
    expected = choice["message"]["content"] if "message" in choice else choice["text"]
    assert choice["finish_reason"] == "stop" and expected == ""
    chunks = await sse_chunks(await client.post(path, json={**request, "stream": True}))
    pieces = [c["choices"][0]["delta"].get("content") or "" if "delta" in c["choices"][0]
              else c["choices"][0]["text"] for c in chunks if c != "[DONE]" and c["choices"]]
    assert "".join(pieces) == expected, json.dumps(pieces)
