"""Helpers for the router app's unit tests: a router app over in-process fake SGLang workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from fake_sglang import FakeWorker

from ppd_server.config import PrefillSpec, RouterConfig
from ppd_server.http.app import STATE, AppState, create_app


@asynccontextmanager
async def router_over(
    workers: list[FakeWorker], *, tracer_provider: Any = None, tokens: Any = None, **config: Any
) -> AsyncIterator[tuple[TestClient, AppState]]:
    """Start the fakes, then a router app over them (no background polling unless asked)."""
    for w in workers:
        await w.start()
    cfg = RouterConfig(
        prefill=tuple(PrefillSpec(w.url, w.bootstrap_port) for w in workers if w.role == "prefill"),
        decode=tuple(w.url for w in workers if w.role == "decode"),
        worker=tuple(w.url for w in workers if w.role == "unified"),
        load_interval_s=config.pop("load_interval_s", 3600.0),
        **config,
    )
    app = create_app(cfg, tracer_provider=tracer_provider, tokens=tokens)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, app[STATE]
    finally:
        await client.close()
        for w in workers:
            await w.close()


def chat_body(content: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], "max_tokens": 3, **extra}


async def eventually(condition: Callable[[], Any], timeout_s: float = 3.0) -> bool:
    """Poll ``condition`` every 10 ms until it holds or ``timeout_s`` passes; returns the last result.
    Callers assert on the state afterwards, so a timeout fails there with the real values."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return bool(condition())
