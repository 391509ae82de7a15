"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions`` over ``Worker.generate``.

SGLang extras are accepted (``top_k``, ``ignore_eos``, ``stop_token_ids``, ``rid``, bootstrap
fields, ``do_local_prefill``); unknown keys are ignored. ``usage.prompt_tokens_details.cached_tokens``
is always present. Only n=1 is served (else 400). With ``tools``, the definitions are rendered by
the chat template and Hermes ``<tool_call>`` blocks in the output become ``tool_calls``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .errors import InvalidRequest
from .http_common import WORKER, meta_info, parse_common, raise_if_failed, read_json, stream_sse
from .request import Result
from .sampling import SamplingParams
from .tool_calls import parse_tool_calls, safe_prefix_len
from .worker import Worker

_ROLES = {"system", "developer", "user", "assistant", "tool"}
# OpenAI/SGLang request keys that map onto sampling_params.
_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "skip_special_tokens",
    "no_stop_trim",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_p",
    "n",
    "logit_bias",
)


def add_openai_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)


def _sampling(body: dict[str, Any], worker: Worker, default_max: int) -> SamplingParams:
    params = {k: body[k] for k in _SAMPLING_KEYS if body.get(k) is not None}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:  # an explicit null does not hide max_tokens
        max_tokens = body.get("max_tokens")
    params["max_new_tokens"] = default_max if max_tokens is None else max_tokens
    if body.get("seed") is not None:
        params["sampling_seed"] = body["seed"]
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs"):
        raise InvalidRequest("logprobs are not supported by this engine", param="logprobs")
    if params.get("n", 1) != 1:
        raise InvalidRequest("only n=1 is supported", param="n")
    return SamplingParams.from_dict(params)


def _usage(result: Result) -> dict[str, Any]:
    req, completion = result.req, len(result.output_ids)
    return {
        "prompt_tokens": req.prompt_len,
        "completion_tokens": completion,
        "total_tokens": req.prompt_len + completion,
        "prompt_tokens_details": {"cached_tokens": req.cached_tokens},
        "reasoning_tokens": 0,
    }


def _finish(result: Result, has_tool_calls: bool = False) -> str | None:
    reason = result.finish_reason
    if reason is None:
        return None
    if has_tool_calls:
        return "tool_calls"
    return {"stop": "stop", "length": "length"}.get(reason.get("type") or "", "abort")


def _meta(result: Result) -> dict[str, Any]:
    info = meta_info(result)
    return {
        k: info[k]
        for k in ("id", "cached_tokens", "cached_tokens_details", "kv_transfer_bytes", "finish_reason", "e2e_latency")
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _usage_chunks(body: dict[str, Any], head: dict[str, Any], result: Result) -> list[dict[str, Any]]:
    """The closing usage chunk of a stream (``head``: its id/object/created/model), sent only
    when the client asked for it with ``stream_options.include_usage``."""
    if not _include_usage(body):
        return []
    return [{**head, "choices": [], "usage": _usage(result), "meta_info": _meta(result)}]


async def _final_result(results: AsyncIterator[Result]) -> Result:
    """The last (finished) result of a non-streamed request; a failed request raises."""
    last = None
    async for result in results:
        last = result
    assert last is not None
    raise_if_failed(last)
    return last


# ---- chat --------------------------------------------------------------------------------
def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or message["role"] not in _ROLES:
            raise InvalidRequest(f"messages[{i}] needs a role in {sorted(_ROLES)}", param=f"messages[{i}]")
        message = dict(message)
        content = message.get("content")
        if isinstance(content, list):
            parts = [
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text", ""), str)
            ]
            if len(parts) != len(content):
                raise InvalidRequest(
                    f"messages[{i}].content: only text parts are supported", param=f"messages[{i}].content"
                )
            message["content"] = "".join(parts)
        elif content is None:
            message["content"] = ""
        elif not isinstance(content, str):
            raise InvalidRequest(
                f"messages[{i}].content must be a string or a list of text parts", param=f"messages[{i}].content"
            )
        if message["role"] == "developer":
            message["role"] = "system"
        if not isinstance(message.get("tool_calls") or [], list):
            raise InvalidRequest(f"messages[{i}].tool_calls must be a list", param=f"messages[{i}].tool_calls")
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                try:
                    function["arguments"] = json.loads(function["arguments"])
                except ValueError:
                    pass
        out.append(message)
    return out


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None or body.get("tool_choice") == "none":
        return None
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict) for t in tools
    ):
        raise InvalidRequest("tools must be a list of {type: function, function: {...}}", param="tools")
    return tools or None


def chat_message(text: str, tools: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The assistant message of a finished output (tool calls parsed out when tools were given)."""
    content, calls = parse_tool_calls(text) if tools else (text, [])
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return message, calls


def _stop_safe_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the prefix of an unfinished output that cannot be the start of a stop
    string: a stream holds the rest back, since a matched stop string is cut from the answer."""
    longest = max((len(stop) for stop in stops), default=0)
    for keep in range(min(longest - 1, len(text)), 0, -1):
        if any(stop.startswith(text[-keep:]) for stop in stops):
            return len(text) - keep
    return len(text)


def _trimmed_stops(sampling: SamplingParams) -> tuple[str, ...]:
    return () if sampling.no_stop_trim else sampling.stop


class ChatDeltas:
    """Turns cumulative output texts into OpenAI stream deltas. With tools, text that may be
    part of a ``<tool_call>`` is held back; at the end, parsed calls go out as ``tool_calls``.
    Text that may be the start of one of ``stops`` is held back until it is not."""

    def __init__(self, tools: bool, stops: tuple[str, ...] = ()) -> None:
        self.tools = tools
        self.stops = stops
        self.sent_chars = 0
        self.sent_role = False

    def next(self, text: str, finished: bool) -> tuple[dict[str, Any], bool]:
        calls = parse_tool_calls(text)[1] if self.tools and finished else []
        upto = safe_prefix_len(text) if self.tools and (calls or not finished) else len(text)
        if not finished:
            upto = min(upto, _stop_safe_len(text, self.stops))
        delta: dict[str, Any] = {}
        if not self.sent_role:
            delta["role"] = "assistant"
            delta["content"] = ""
            self.sent_role = True
        if upto > self.sent_chars:
            delta["content"] = text[self.sent_chars : upto]
            self.sent_chars = upto
        if calls:
            delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(calls)]
        return delta, bool(calls)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER]
    body = await read_json(request)
    messages, tools = _messages(body), _tools(body)
    sampling = _sampling(body, worker, default_max=worker.context_limit)
    try:
        prompt = worker.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True)
    except Exception as exc:  # template errors are the client's messages' fault
        raise InvalidRequest(f"cannot render the chat template: {exc}", param="messages") from None
    inp = parse_common(body, worker.tokenizer.encode(prompt), sampling)
    results = worker.generate(inp)
    cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), worker.served_model_name

    if not body.get("stream"):
        last = await _final_result(results)
        message, calls = chat_message(last.text, bool(tools))
        reason = last.finish_reason or {}
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _finish(last, bool(calls)),
                        "matched_stop": reason.get("matched"),
                    }
                ],
                "usage": _usage(last),
                "meta_info": _meta(last),
            }
        )

    deltas = ChatDeltas(bool(tools), _trimmed_stops(sampling))
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

    def shape(result: Result) -> dict[str, Any] | None:
        delta, has_calls = deltas.next(result.text, result.finished)
        finish = _finish(result, has_calls)
        if not delta and finish is None:
            return None
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    return await stream_sse(request, results, shape, lambda result: _usage_chunks(body, head, result))


# ---- completions -------------------------------------------------------------------------
async def completions(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER]
    body = await read_json(request)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        prompt_ids = worker.tokenizer.encode(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt_ids = prompt
    else:
        raise InvalidRequest(
            "prompt must be a string or a list of token ids (batches are not supported)", param="prompt"
        )
    if body.get("suffix"):
        raise InvalidRequest("suffix is not supported", param="suffix")
    sampling = _sampling(body, worker, default_max=16)
    echo = prompt if body.get("echo") and isinstance(prompt, str) else ""
    inp = parse_common(body, prompt_ids, sampling)
    results = worker.generate(inp)
    cid, created, model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), worker.served_model_name

    def choice(text: str, result: Result) -> dict[str, Any]:
        reason = result.finish_reason or {}
        return {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": _finish(result),
            "matched_stop": reason.get("matched"),
        }

    head = {"id": cid, "object": "text_completion", "created": created, "model": model}
    if not body.get("stream"):
        last = await _final_result(results)
        return web.json_response(
            {**head, "choices": [choice(echo + last.text, last)], "usage": _usage(last), "meta_info": _meta(last)}
        )

    sent = {"chars": 0, "echoed": False}

    stops = _trimmed_stops(sampling)

    def shape(result: Result) -> dict[str, Any]:
        upto = len(result.text) if result.finished else _stop_safe_len(result.text, stops)
        text = result.text[sent["chars"] : upto]
        sent["chars"] = max(sent["chars"], upto)
        if not sent["echoed"]:
            text, sent["echoed"] = echo + text, True
        return {**head, "choices": [choice(text, result)]}

    return await stream_sse(request, results, shape, lambda result: _usage_chunks(body, head, result))
