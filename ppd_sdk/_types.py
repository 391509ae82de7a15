"""What a turn returns: :class:`Reply` with :class:`Usage`, :class:`ToolCall` and the
server's routing decision (:class:`~ppd_sdk.wire.RouteInfo`, absent on a plain
OpenAI-compatible server)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .wire import RouteInfo

#: One chat message in the OpenAI format (``{"role": ..., "content": ..., ...}``).
Message = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Token counts of one turn. ``prompt_tokens`` includes ``cached_tokens`` (the prompt
    tokens the server found in its prefix cache); ``cached_tokens`` is None when the server
    does not report it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for. ``arguments`` is the raw JSON text the model
    wrote; :meth:`parsed_arguments` decodes it."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """The arguments as Python data (raises ``json.JSONDecodeError`` if the model wrote bad JSON)."""
        return json.loads(self.arguments) if self.arguments else {}

    def to_message_part(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Reply:
    """The answer to one turn.

    ``route`` is the server's routing decision (``route.route`` is ``"local"``, ``"pd"`` or
    ``"replica"``; ``route.decode`` / ``route.prefill`` name the workers), or None when the
    server is a plain OpenAI-compatible endpoint. ``ttft_s`` is the time to the first
    streamed chunk (None for a non-streamed turn)::

        reply = session.send("Hello")
        print(reply.text, reply.cached_tokens, reply.route.route if reply.route else "-")
    """

    text: str
    conversation_id: str
    turn: int
    model: str
    usage: Usage = field(default_factory=Usage)
    route: RouteInfo | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    response_id: str | None = None
    request_id: str | None = None

    @property
    def cached_tokens(self) -> int | None:
        """Shortcut for ``usage.cached_tokens``."""
        return self.usage.cached_tokens

    def assistant_message(self) -> Message:
        """The assistant message this reply adds to the history."""
        msg: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [tc.to_message_part() for tc in self.tool_calls]
            if not self.text:
                msg["content"] = None
        return msg
