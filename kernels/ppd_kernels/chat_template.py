"""Chat-template rendering (torch-free), with OpenAI-style tool use on any template.

Templates are rendered like Hugging Face does: a sandboxed jinja2 environment with
``trim_blocks`` and ``lstrip_blocks``, ``raise_exception`` and a plain-JSON ``tojson``.

Tool format (Hermes-style), used whenever the model's template does not handle tools itself:
- tool definitions go into the system prompt inside ``<tools></tools>``, one JSON object per line;
- the model calls a tool by emitting ``<tool_call>{"name": "...", "arguments": {...}}</tool_call>``
  (the engine's ``ppd_engine.tool_calls`` parses these out of generated text);
- earlier assistant ``tool_calls`` are rendered in that same form, and ``tool`` role messages
  carry their result inside ``<tool_response></tool_response>``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TOOLS_PREAMBLE = (
    "You can call functions. Their signatures are listed inside <tools></tools>. "
    "To call one, answer with a JSON object holding the function name and its arguments "
    "inside <tool_call></tool_call> tags, for example:\n"
    '<tool_call>{"name": "function_name", "arguments": {"arg": "value"}}</tool_call>\n'
)


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.source = source or CHATML_TEMPLATE
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(self.source)
        self._bos_token, self._eos_token = bos_token, eos_token
        self.handles_tools = "tools" in self.source
        self.handles_tool_calls = "tool_calls" in self.source

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        messages = [self._normalize(m) for m in messages]
        if tools and not self.handles_tools:
            messages = _with_tools_in_system_prompt(messages, tools)
            tools = None
        return self._template.render(
            messages=messages,
            tools=tools or None,
            add_generation_prompt=add_generation_prompt,
            bos_token=self._bos_token,
            eos_token=self._eos_token,
        )

    def _normalize(self, message: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"each chat message needs a 'role', got {message!r}")
        message = dict(message, content=_content_text(message.get("content")))
        if self.handles_tool_calls:
            return message
        if message.get("tool_calls"):
            calls = "\n".join(format_tool_call(c) for c in message.pop("tool_calls"))
            message["content"] = f"{message['content']}\n{calls}" if message["content"] else calls
        elif message["role"] == "tool":
            message["content"] = f"<tool_response>\n{message['content']}\n</tool_response>"
        return message


def format_tool_call(call: dict[str, Any]) -> str:
    """An OpenAI ``tool_calls`` entry (or a bare {"name", "arguments"}) as a <tool_call> tag."""
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # keep the model-produced string verbatim
    payload = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>{payload}</tool_call>"


def _with_tools_in_system_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    listing = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    block = f"{_TOOLS_PREAMBLE}<tools>\n{listing}\n</tools>"
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{block}")
        return [first, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def _content_text(content: Any) -> str:
    """OpenAI content may be None, a string or a list of parts; templates want a string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    raise ValueError(f"unsupported message content {content!r}")


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def _raise_exception(message: str) -> None:
    raise ValueError(f"chat template error: {message}")
