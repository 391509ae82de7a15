"""An in-process fake OpenAI-compatible streaming endpoint for the driver's unit tests: it
answers ``/v1/models`` and streamed ``/v1/chat/completions`` with ``max_tokens`` chunks, a usage
chunk carrying a ``ppd`` route, and records every request's headers and body. ``fail_turns``
makes the given turn numbers answer HTTP 500; ``hang_turns`` never answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class FakeEndpoint:
    def __init__(
        self, fail_turns: tuple[int, ...] = (), hang_turns: tuple[int, ...] = (), token_delay_s: float = 0.002
    ) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.fail_turns, self.hang_turns, self.token_delay_s = fail_turns, hang_turns, token_delay_s
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        turn = int(request.headers.get("X-PPD-Turn", "1"))
        if turn in self.fail_turns:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if turn in self.hang_turns:
            await asyncio.sleep(3600)
        route = "pd" if turn == 1 else "local"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-PPD-Route": route})
        await resp.prepare(request)
        n = int(body["max_tokens"])
        head = {"id": "x", "object": "chat.completion.chunk", "model": body["model"]}
        prompt = sum(len(str(m["content"]).split()) for m in body["messages"])
        for i in range(n):
            await asyncio.sleep(self.token_delay_s)
            delta = {"content": "w "} if i else {"role": "assistant", "content": "w "}
            chunk = {
                **head,
                "choices": [{"index": 0, "delta": delta, "finish_reason": "length" if i == n - 1 else None}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        cached = 0 if turn == 1 else prompt // 2
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "prompt_tokens_details": {"cached_tokens": cached}}
        final = {**head, "choices": [], "usage": usage, "ppd": {"route": route, "turn": turn, "cached_tokens": cached}}
        await resp.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp
