"""An in-process fake SGLang worker (aiohttp) for the router's unit tests.

It speaks just enough of SGLang's worker API (``/server_info``, ``/health``, ``/v1/loads``,
``/metrics``, chat/completions/generate, streaming and not) and records every request so tests
can assert on what the router sent. Knobs (attributes) make it fail in the ways that matter:
``fail_status`` (answer with an HTTP error), ``die_after_chunks`` (drop the connection mid-
stream), ``hold`` (an asyncio.Event the answer waits for), ``load`` (what /v1/loads reports).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: Any  # case-insensitive (CIMultiDict)


@dataclass
class FakeWorker:
    role: str = "unified"  # prefill | decode | unified
    bootstrap_port: int = 8998
    conditional_agg: bool = True
    radix: bool = True
    max_total_num_tokens: int = 4096
    kv_bytes_per_token: int = 1000
    model: str = "fake-model"
    n_tokens: int = 3
    cached_tokens: int = 0
    fail_status: int | None = None
    fail_body: dict[str, Any] | None = None
    die_after_chunks: int | None = None
    hold: asyncio.Event | None = None
    load: dict[str, Any] = field(default_factory=dict)
    loads_status: int = 200
    seen: list[Seen] = field(default_factory=list)
    flushes: int = 0
    aborted: asyncio.Event = field(default_factory=asyncio.Event)  # set when a held request's client left
    server: TestServer | None = None

    url: str = ""  # set by start()

    @property
    def mode(self) -> str:
        return "null" if self.role == "unified" else self.role

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/server_info", self._server_info)
        app.router.add_get("/v1/loads", self._loads)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/flush_cache", self._flush)
        app.router.add_get("/model_info", self._model_info)
        for path in ("/v1/chat/completions", "/v1/completions", "/generate"):
            app.router.add_post(path, self._serve)
        return app

    async def start(self) -> FakeWorker:
        self.server = TestServer(self.app(), host="127.0.0.1")
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        running = self.load.get("num_running_reqs", 0)
        return web.Response(
            text=f'# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{{model_name="m"}} {running}\n'
            f'# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{{model_name="m"}} 0\n'
        )

    async def _flush(self, request: web.Request) -> web.Response:
        self.flushes += 1
        return web.Response(text="Cache flushed.\n", status=200 if self.fail_status is None else 400)

    async def _model_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_path": "/models/" + self.model,
                "is_generation": True,
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
            }
        )

    async def _server_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "disaggregation_mode": self.mode,
                "disaggregation_bootstrap_port": self.bootstrap_port,
                "disaggregation_decode_enable_radix_cache": self.radix,
                "disaggregation_decode_enable_conditional_agg": self.conditional_agg,
                "max_total_num_tokens": self.max_total_num_tokens,
                "kv_bytes_per_token": self.kv_bytes_per_token,
                "served_model_name": self.model,
                "model_path": "/models/" + self.model,
                "page_size": 1,
            }
        )

    async def _loads(self, request: web.Request) -> web.Response:
        if self.loads_status != 200:
            return web.Response(status=self.loads_status)
        core = {
            "num_running_reqs": 0,
            "num_waiting_reqs": 0,
            "num_used_tokens": 0,
            "max_total_num_tokens": self.max_total_num_tokens,
            **self.load,
        }
        return web.json_response({"timestamp": 0, "version": "fake", "loads": [{"dp_rank": 0, **core}]})

    def _prompt_tokens(self, path: str, body: dict[str, Any]) -> int:
        if path == "/generate" and isinstance(body.get("input_ids"), list):
            return len(body["input_ids"])
        src = body.get("messages") or body.get("prompt") or body.get("text") or ""
        return max(1, len(json.dumps(src)) // 4)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, body, request.headers.copy()))
        if self.hold is not None:
            try:
                await self.hold.wait()
            except asyncio.CancelledError:  # aiohttp cancels the handler when the client disconnects
                self.aborted.set()
                raise
        if self.fail_status is not None:
            return web.json_response(
                self.fail_body
                or {
                    "error": {"message": f"fake {self.role} failure", "type": "server_error", "code": self.fail_status}
                },
                status=self.fail_status,
            )
        n = 1 if self.role == "prefill" else self.n_tokens
        prompt = self._prompt_tokens(request.path, body)
        if body.get("stream"):
            return await self._stream(request, body, n, prompt)
        if request.path == "/generate":
            return web.json_response(
                {
                    "text": "x" * n,
                    "output_ids": list(range(n)),
                    "meta_info": {
                        "id": "g1",
                        "prompt_tokens": prompt,
                        "completion_tokens": n,
                        "cached_tokens": self.cached_tokens,
                        "finish_reason": {"type": "length", "length": n},
                    },
                }
            )
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": n,
            "total_tokens": prompt + n,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }
        if request.path == "/v1/chat/completions":
            choice = {"index": 0, "message": {"role": "assistant", "content": "tok " * n}, "finish_reason": "length"}
            return web.json_response(
                {"id": "c1", "object": "chat.completion", "model": self.model, "choices": [choice], "usage": usage}
            )
        return web.json_response(
            {
                "id": "c1",
                "object": "text_completion",
                "model": self.model,
                "choices": [{"index": 0, "text": "tok " * n, "finish_reason": "length"}],
                "usage": usage,
            }
        )

    async def _stream(self, request: web.Request, body: dict[str, Any], n: int, prompt: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunks: list[dict[str, Any]] = []
        for i in range(n):
            if request.path == "/generate":
                chunks.append(
                    {
                        "text": "x" * (i + 1),
                        "output_ids": list(range(i + 1)),
                        "meta_info": {
                            "id": "g1",
                            "prompt_tokens": prompt,
                            "completion_tokens": i + 1,
                            "cached_tokens": self.cached_tokens,
                            "finish_reason": {"type": "length", "length": n} if i == n - 1 else None,
                        },
                    }
                )
            else:
                delta = {"content": "tok "} if request.path == "/v1/chat/completions" else None
                choice = (
                    {"index": 0, "delta": delta, "finish_reason": "length" if i == n - 1 else None}
                    if delta
                    else {"index": 0, "text": "tok ", "finish_reason": "length" if i == n - 1 else None}
                )
                chunks.append({"id": "c1", "object": "chat.completion.chunk", "choices": [choice], "usage": None})
        so = body.get("stream_options") or {}
        if request.path != "/generate" and so.get("include_usage"):
            chunks.append(
                {
                    "id": "c1",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": n,
                        "total_tokens": prompt + n,
                        "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
                    },
                }
            )
        for i, chunk in enumerate(chunks):
            if self.die_after_chunks is not None and i >= self.die_after_chunks:
                request.transport.close()  # the worker "dies": connection gone mid-stream
                return resp
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(0)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@dataclass
class HeadersThenHold(FakeWorker):
    """Answers 200 with ``answer_headers`` at once, then holds the body until ``hold`` is set, so
    the router is left reading the answer; ``aborted`` is set when the router drops the request."""

    answer_headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(None)  # type: ignore[arg-type]
        resp = web.StreamResponse(headers=self.answer_headers)
        await resp.prepare(request)
        assert self.hold is not None
        try:
            await self.hold.wait()
        except asyncio.CancelledError:
            self.aborted.set()
            raise
        return resp
