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
