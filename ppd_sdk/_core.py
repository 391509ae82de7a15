"""The IO-free heart of a chat session, shared by :class:`ChatSession` and
:class:`AsyncChatSession`: what to send for a turn (:meth:`SessionState.plan`), how to read
the answer (:func:`reply_from_completion`, :class:`StreamAccumulator`), and how the history
changes once a turn has succeeded (:meth:`SessionState.commit`). A failed turn never calls
``commit``, so the history stays as it was.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ._ids import new_conversation_id
from ._types import Message, Reply, ToolCall, Usage
from .wire import BODY_FIELD, PRESETS, SLO, Hints, RouteInfo, Weights, parse_route, resolve_slo, resolve_weights

STATE_VERSION = 1


@dataclass(frozen=True)
class TurnPlan:
    """One request, fully decided before any I/O: ``request`` is the keyword arguments of
    ``client.chat.completions.create`` (hints in ``extra_headers`` / ``extra_body``)."""

    conversation_id: str
    turn: int
    model: str
    stream: bool
    hints: Hints
    new_messages: tuple[Message, ...]
    request: dict[str, Any]


@dataclass
class SessionState:
    """Conversation id, history, turn counter and default hints of one session."""

    conversation_id: str = field(default_factory=new_conversation_id)
    model: str | None = None
    messages: list[Message] = field(default_factory=list)
    turn: int = 0  # completed turns
    parent_conversation_id: str | None = None  # sent on the first turn after a fork only
    weights: Weights = field(default_factory=lambda: PRESETS["balanced"])
    slo: SLO = field(default_factory=SLO)
    tools: list[dict[str, Any]] | None = None
    send_ppd_body: bool = True

    def plan(
        self,
        content: str | Sequence[Any] | None,
        *,
        stream: bool,
        model: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        slo: SLO | Mapping[str, float] | None = None,
        weights: Weights | Mapping[str, float] | None = None,
        preset: str | None = None,
        timeout: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> TurnPlan:
        """Build the next turn's request. ``content=None`` continues after tool results."""
        chosen_model = model or self.model
        if not chosen_model:
            raise ValueError("no model: pass model=... to the session or the turn")
        new: tuple[Message, ...] = ()
        if content is not None:
            new = ({"role": "user", "content": content},)
        elif not self.messages or self.messages[-1].get("role") not in ("tool", "user"):
            raise ValueError("send(None) continues a conversation only after add_tool_result() or a user message")
        turn = self.turn + 1
        hints = Hints(
            conversation_id=self.conversation_id,
            parent_conversation_id=self.parent_conversation_id,
            turn=turn,
            weights=resolve_weights(weights, preset) or self.weights,
            slo=resolve_slo(slo) or self.slo,
        )
        request: dict[str, Any] = dict(params or {})
        request.update(model=chosen_model, messages=[*copy.deepcopy(self.messages), *new])
        if stream:
            request.update(stream=True, stream_options={"include_usage": True})
        chosen_tools = tools if tools is not None else self.tools
        if chosen_tools:
            request["tools"] = chosen_tools
            if tool_choice is not None:
                request["tool_choice"] = tool_choice
        request["extra_headers"], request["extra_body"] = hints.apply(
            request.pop("extra_headers", None), request.pop("extra_body", None), ppd_body=self.send_ppd_body
        )
        if timeout is not None:
            request["timeout"] = timeout
        return TurnPlan(self.conversation_id, turn, chosen_model, stream, hints, new, request)

    def commit(self, plan: TurnPlan, reply: Reply) -> None:
        """Record a successful turn: the new messages, the assistant's answer, the turn count."""
        self.messages.extend(copy.deepcopy(list(plan.new_messages)))
        self.messages.append(reply.assistant_message())
        self.turn = plan.turn
        self.parent_conversation_id = None

    def add_tool_result(self, tool_call_id: str, content: str) -> None:
        self.messages.append({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def forked(self, conversation_id: str | None) -> SessionState:
        """A new conversation that starts from (a copy of) this one's history."""
        child = copy.deepcopy(self)
        child.conversation_id = conversation_id or new_conversation_id()
        child.parent_conversation_id = self.conversation_id
        return child

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "conversation_id": self.conversation_id,
            "parent_conversation_id": self.parent_conversation_id,
            "model": self.model,
            "turn": self.turn,
            "messages": copy.deepcopy(self.messages),
            "weights": self.weights.model_dump(),
            "slo": self.slo.model_dump(),
            "tools": copy.deepcopy(self.tools),
            "send_ppd_body": self.send_ppd_body,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported session state version {data.get('version')!r} (expected {STATE_VERSION})")
        return cls(
            conversation_id=str(data["conversation_id"]),
            parent_conversation_id=data.get("parent_conversation_id"),
            model=data.get("model"),
            turn=int(data.get("turn", 0)),
            messages=list(data.get("messages", [])),
            weights=Weights.model_validate(data.get("weights") or {}),
            slo=SLO.model_validate(data.get("slo") or {}),
            tools=data.get("tools"),
            send_ppd_body=bool(data.get("send_ppd_body", True)),
        )


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def usage_from(raw: Any, route: RouteInfo | None = None) -> Usage:
    """``usage`` of an OpenAI response (object or dict) as :class:`Usage`."""
    if raw is None:
        return Usage(cached_tokens=route.cached_tokens if route else None)
    cached = _get(_get(raw, "prompt_tokens_details"), "cached_tokens")
    if cached is None and route is not None:
        cached = route.cached_tokens
    return Usage(
        prompt_tokens=int(_get(raw, "prompt_tokens") or 0),
        completion_tokens=int(_get(raw, "completion_tokens") or 0),
        cached_tokens=int(cached) if cached is not None else None,
    )


def reply_from_completion(
    plan: TurnPlan, completion: Any, headers: Mapping[str, str], latency_s: float, request_id: str | None
) -> Reply:
    """Read a non-streamed ``ChatCompletion``."""
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice is not None else None
    tool_calls = tuple(
        ToolCall(id=tc.id, name=tc.function.name, arguments=tc.function.arguments or "")
        for tc in (getattr(message, "tool_calls", None) or [])
        if getattr(tc, "function", None) is not None
    )
    route = parse_route(_get(completion, BODY_FIELD), headers, plan.turn)
    return Reply(
        text=(getattr(message, "content", None) or ""),
        conversation_id=plan.conversation_id,
        turn=plan.turn,
        model=completion.model or plan.model,
        usage=usage_from(completion.usage, route),
        route=route,
        tool_calls=tool_calls,
        finish_reason=getattr(choice, "finish_reason", None),
        latency_s=latency_s,
        response_id=completion.id,
        request_id=request_id,
    )


class StreamAccumulator:
    """Folds ``ChatCompletionChunk``s into a :class:`Reply`. ``add`` returns the text delta."""

    def __init__(self, plan: TurnPlan, started: float) -> None:
        self.plan = plan
        self.started = started
        self.first_chunk_at: float | None = None
        self._text: list[str] = []
        self._tools: dict[int, dict[str, str]] = {}
        self._usage: Any = None
        self._ppd: Any = None
        self._finish: str | None = None
        self._model: str | None = None
        self._id: str | None = None

    @property
    def started_output(self) -> bool:
        """True once a token (text or tool call) has arrived: no retry after this point."""
        return self.first_chunk_at is not None

    def add(self, chunk: Any, now: float) -> str:
        self._model = self._model or getattr(chunk, "model", None)
        self._id = self._id or getattr(chunk, "id", None)
        if getattr(chunk, "usage", None) is not None:
            self._usage = chunk.usage
        ppd = _get(chunk, BODY_FIELD)
        if ppd is not None:
            self._ppd = ppd
        delta_text = ""
        for choice in getattr(chunk, "choices", None) or []:
            if choice.finish_reason:
                self._finish = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                delta_text += delta.content
            for tc in delta.tool_calls or []:
                slot = self._tools.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
                if self.first_chunk_at is None:
                    self.first_chunk_at = now
        if delta_text:
            self._text.append(delta_text)
            if self.first_chunk_at is None:
                self.first_chunk_at = now
        return delta_text

    def reply(self, headers: Mapping[str, str], now: float, request_id: str | None) -> Reply:
        route = parse_route(self._ppd, headers, self.plan.turn)
        return Reply(
            text="".join(self._text),
            conversation_id=self.plan.conversation_id,
            turn=self.plan.turn,
            model=self._model or self.plan.model,
            usage=usage_from(self._usage, route),
            route=route,
            tool_calls=tuple(ToolCall(t["id"], t["name"], t["arguments"]) for _, t in sorted(self._tools.items())),
            finish_reason=self._finish,
            ttft_s=(self.first_chunk_at - self.started) if self.first_chunk_at is not None else None,
            latency_s=now - self.started,
            response_id=self._id,
            request_id=request_id,
        )
