"""An in-process fake OpenAI-compatible chat server for SDK unit tests, plugged into the
real ``openai`` client through ``httpx2.MockTransport`` (no sockets). It answers like the
PPD router (X-PPD-* headers, ``ppd`` body field, cached tokens) unless ``routing=False``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai


@dataclass
class FakeOpenAI:
    routing: bool = True
    body_routing: bool = True  # False: only the X-PPD-* headers carry the decision
    failures: list[Any] = field(default_factory=list)  # per request: a status, a Response or an exception
    tool_call: dict[str, Any] | None = None  # answer the next request with this tool call
    error_after_first_chunk: bool = False
    requests: list[httpx2.Request] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)

    # -- clients -----------------------------------------------------------------------------
    def client(self) -> openai.OpenAI:
        http = httpx2.Client(transport=httpx2.MockTransport(self.handle))
        return openai.OpenAI(base_url="http://fake.test:8080/v1", api_key="k", http_client=http)

    def async_client(self) -> openai.AsyncOpenAI:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))
        return openai.AsyncOpenAI(base_url="http://fake.test:8080/v1", api_key="k", http_client=http)

    # -- server ------------------------------------------------------------------------------
    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if request.url.path == "/v1/models":
            return httpx2.Response(
                200,
                json={
                    "object": "list",
                    "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "t"}],
                },
            )
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            if isinstance(failure, httpx2.Response):
                return failure
            err = {
                "error": {
                    "message": f"fake failure {failure}",
                    "type": "invalid_request_error",
                    "param": "ppd.slo",
                    "code": None,
                }
            }
            return httpx2.Response(failure, json=err)
        # Like the router: the explicit turn, else inferred from the history.
        inferred = (
            1
            + sum(m.get("role") == "assistant" for m in body["messages"])
            + sum(m.get("role") == "tool" for m in body["messages"])
        )
        turn = int(request.headers.get("x-ppd-turn", inferred))
        prompt = sum(len(str(m.get("content") or "").split()) + 4 for m in body["messages"])
        cached = 0 if turn == 1 else prompt - 6
        text = f"answer {turn}"
        route = "pd" if turn == 1 else "local"
        ppd = {
            "route": route,
            "turn": turn,
            "conversation_id": request.headers.get("x-ppd-conversation-id"),
            "policy": "ppd",
            "decode": "http://d0",
            "prefill": "http://p0" if route == "pd" else None,
            "cached_tokens": cached,
            "reason": "fake",
            "predicted": {
                "local": {"ttft_ms": 10.0, "tpot_ms": 20.0, "score": 0.5},
                "pd": {"ttft_ms": 30.0, "tpot_ms": 19.0, "score": 0.0},
            },
        }
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": 2,
            "total_tokens": prompt + 2,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        headers = {"x-request-id": f"req-{len(self.bodies)}"}
        if self.routing:
            headers.update({"X-PPD-Route": route, "X-PPD-Decode": "http://d0", "X-PPD-Turn": str(turn)})
            if route == "pd":
                headers["X-PPD-Prefill"] = "http://p0"
        tool_call, self.tool_call = self.tool_call, None
        if body.get("stream"):
            return httpx2.Response(
                200,
                headers={**headers, "content-type": "text/event-stream"},
                stream=_Events(self._chunks(body, text, usage, ppd, tool_call)),
            )
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if tool_call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
            finish = "tool_calls"
        out: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        if self.routing and self.body_routing:
            out["ppd"] = ppd
        return httpx2.Response(200, headers=headers, json=out)

    def _chunks(
        self,
        body: dict[str, Any],
        text: str,
        usage: dict[str, Any],
        ppd: dict[str, Any],
        tool_call: dict[str, Any] | None,
    ) -> Iterator[dict[str, Any]]:
        base = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        if tool_call is not None:
            fn = tool_call["function"]
            half = len(fn["arguments"]) // 2
            parts = [
                {
                    "index": 0,
                    "id": tool_call["id"],
                    "type": "function",
                    "function": {"name": fn["name"], "arguments": fn["arguments"][:half]},
                },
                {"index": 0, "function": {"arguments": fn["arguments"][half:]}},
            ]
            for part in parts:
                yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}]}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        else:
            for i, word in enumerate(text.split(" ")):
                yield {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"content": word if i == 0 else " " + word}, "finish_reason": None}
                    ],
                }
                if self.error_after_first_chunk:
                    yield {"error": {"message": "worker died", "type": "server_error", "param": None, "code": 502}}
                    return
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if (body.get("stream_options") or {}).get("include_usage"):
            last: dict[str, Any] = {**base, "choices": [], "usage": usage}
            if self.routing and self.body_routing:
                last["ppd"] = ppd
            yield last


class _Events(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """SSE body usable by both the sync and the async client."""

    def __init__(self, chunks: Iterator[dict[str, Any]]) -> None:
        self._data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"

    def __iter__(self) -> Iterator[bytes]:
        yield self._data

    async def __aiter__(self) -> Any:
        yield self._data
