"""``AsyncChatSession``: the asyncio twin of :class:`~ppd_sdk.ChatSession` over
``openai.AsyncOpenAI``; same arguments, same behaviour, awaitable turns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import openai

from ._base import ReplyStreamBase, SessionBase
from ._core import StreamAccumulator, TurnPlan, reply_from_completion
from ._exceptions import from_openai
from ._types import Reply


class AsyncChatSession(SessionBase[openai.AsyncOpenAI]):
    """A conversation over ``openai.AsyncOpenAI``; see :class:`~ppd_sdk.ChatSession`::

    async with AsyncChatSession(base_url="http://127.0.0.1:30000") as chat:
        reply = await chat.send("Hello")
        async with chat.stream("Go on") as s:
            async for delta in s:
                print(delta, end="")
        print((await s.get_reply()).route)
    """

    def _new_client(self, base_url: str, api_key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=base_url, api_key=api_key)

    async def send(self, content: str | Sequence[Any] | None = None, **kwargs: Any) -> Reply:
        """One non-streamed turn; see :meth:`ChatSession.send`."""
        await self._ensure_model(kwargs)
        turn = self._begin_turn(content, False, kwargs)
        while True:
            try:
                reply = await self._send_once(turn.plan)
            except Exception as exc:  # mapped by the turn; every failure is on its span
                await asyncio.sleep(turn.wait_before_retry(exc))
            else:
                return turn.succeed(reply)

    def stream(self, content: str | Sequence[Any] | None = None, **kwargs: Any) -> AsyncReplyStream:
        """One streamed turn; iterate with ``async for``, then ``await s.get_reply()``.
        The request starts on the first iteration."""
        return AsyncReplyStream(self, content, kwargs)

    async def _send_once(self, plan: TurnPlan) -> Reply:
        started = time.perf_counter()
        raw = await self._client.chat.completions.with_raw_response.create(**plan.request)
        completion = raw.parse()
        return reply_from_completion(plan, completion, raw.headers, time.perf_counter() - started, raw.request_id)

    async def _ensure_model(self, kwargs: Mapping[str, Any]) -> None:
        if not self._needs_model_list(kwargs):
            return
        try:
            models = await self._client.models.list()
        except Exception as exc:
            raise from_openai(exc) from exc
        self._adopt_first_model(models)

    async def close(self) -> None:
        """Close the HTTP client if this session created it."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> AsyncChatSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncReplyStream(ReplyStreamBase["AsyncChatSession", AsyncIterator[str]]):
    """The text deltas of one streamed async turn (``async for``); then ``await
    get_reply()``. The history is updated only when the stream was read to the end."""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._text_iterator()

    @property
    def reply(self) -> Reply:
        """The final reply; raises ``RuntimeError`` before the stream was read to the end."""
        if self._reply is None:
            raise RuntimeError("the turn is not complete: read the stream to the end (`await get_reply()`)")
        return self._reply

    async def get_reply(self) -> Reply:
        """The final reply (reads the rest of the stream first if needed)."""
        async for _ in self:
            pass
        return self.reply

    async def close(self) -> None:
        """Stop reading; an unfinished turn is not added to the history."""
        if self._iterator is not None and self._reply is None:
            await self._iterator.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncReplyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> AsyncIterator[str]:
        session = self._session
        await session._ensure_model(self._kwargs)
        turn = session._begin_turn(self._content, True, self._kwargs)
        try:
            while True:
                acc = StreamAccumulator(turn.plan, time.perf_counter())
                try:
                    raw = await session._client.chat.completions.with_raw_response.create(**turn.plan.request)
                    stream = raw.parse()
                    async with stream:
                        async for chunk in stream:
                            delta = acc.add(chunk, time.perf_counter())
                            if delta:
                                yield delta
                    reply = acc.reply(raw.headers, time.perf_counter(), raw.request_id)
                except Exception as exc:
                    await asyncio.sleep(turn.wait_before_retry(exc, acc.started_output))
                else:
                    self._reply = turn.succeed(reply)
                    return
        finally:
            turn.end_if_abandoned()
