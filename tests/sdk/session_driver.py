"""Drives a ChatSession or an AsyncChatSession through one awaitable API, so every session
test runs once per twin."""

from __future__ import annotations

from typing import Any

from fake_openai import FakeOpenAI

from ppd_sdk import AsyncChatSession, ChatSession, Reply


class Driver:
    """Drives a ChatSession or an AsyncChatSession with one awaitable API."""

    def __init__(self, kind: str, fake: FakeOpenAI) -> None:
        self.kind = kind
        self.fake = fake

    def session(self, **kwargs: Any) -> Any:
        kwargs.setdefault("retry_backoff_s", 0.0)  # retries are tested for count, not for timing
        if self.kind == "sync":
            return ChatSession(client=kwargs.pop("client", None) or self.fake.client(), **kwargs)
        return AsyncChatSession(client=kwargs.pop("client", None) or self.fake.async_client(), **kwargs)

    async def send(self, session: Any, *args: Any, **kwargs: Any) -> Reply:
        result = session.send(*args, **kwargs)
        return await result if self.kind == "async" else result

    async def stream(self, session: Any, *args: Any, **kwargs: Any) -> tuple[list[str], Reply]:
        s = session.stream(*args, **kwargs)
        if self.kind == "sync":
            with s:
                deltas = list(s)
            return deltas, s.reply
        async with s:
            deltas = [d async for d in s]
        return deltas, s.reply

    def restore(self, data: str, **kwargs: Any) -> Any:
        if self.kind == "sync":
            return ChatSession.from_json(data, client=self.fake.client(), **kwargs)
        return AsyncChatSession.from_json(data, client=self.fake.async_client(), **kwargs)
