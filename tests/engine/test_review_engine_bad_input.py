"""Review findings: malformed chat messages must be a 400 with an OpenAI error body, never a 500."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("message", [
    {"role": ["user"], "content": "x"},
    {"role": "user", "content": [{"type": "text", "text": 5}]},
    {"role": "assistant", "content": "x", "tool_calls": 7},
], ids=["unhashable-role", "non-string-text-part", "non-list-tool-calls"])
async def test_malformed_chat_message_is_400_not_500(unified, message):
    client, _ = unified
    r = await client.post("/v1/chat/completions", json={"messages": [message], "max_tokens": 2})
    body = await r.json()
    assert r.status == 400, body
    assert body["error"]["param"].startswith("messages[0]")


async def test_tool_call_with_a_non_object_function_is_not_a_500(unified):
    client, _ = unified
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": "x"}]}]
    r = await client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status in (200, 400), await r.text()


async def test_null_max_completion_tokens_falls_back_to_max_tokens(unified):
    client, _ = unified
    body = {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": None, "max_tokens": 3,
            "temperature": 0, "ignore_eos": True}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status == 200
    assert (await r.json())["usage"]["completion_tokens"] == 3
