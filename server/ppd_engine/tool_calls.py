"""Hermes-style tool calls: the model writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
(the format the chat templates of SmolLM2/Qwen2 and our fallback rendering describe).

``parse_tool_calls`` splits a finished output into plain content and OpenAI ``tool_calls``;
``safe_prefix_len`` tells a stream how much text it can emit without leaking a call's markup.
A block whose JSON does not parse is left in the content (never silently dropped).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        call = _to_call(match.group(1))
        if call is None:
            continue
        kept.append(text[position : match.start()])
        position = match.end()
        calls.append(call)
    kept.append(text[position:])
    content = "".join(kept).strip()
    return (content or None) if calls else text, calls


def _to_call(raw: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw.strip())
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": obj["name"], "arguments": arguments},
    }


def safe_prefix_len(text: str) -> int:
    """Length of the prefix of ``text`` that is certainly not part of a tool call."""
    start = text.find(OPEN)
    if start >= 0:
        return start
    for keep in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-keep:]):
            return len(text) - keep
    return len(text)
