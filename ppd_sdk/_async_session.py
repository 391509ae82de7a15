"""``AsyncChatSession``: the asyncio twin of :class:`~ppd_sdk.ChatSession` over
``openai.AsyncOpenAI``; same arguments, same behaviour, awaitable turns."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

import openai

from ._base import SessionBase, resolve_api_key, resolve_base_url
from ._core import SessionState, StreamAccumulator, TurnPlan, reply_from_completion
from ._exceptions import PPDError, from_openai
from ._types import Message, Reply
from .wire import SLO, Weights


class AsyncChatSession(SessionBase[openai.AsyncOpenAI]):
    """A conversation over ``openai.AsyncOpenAI``; see :class:`~ppd_sdk.ChatSession`::

        async with AsyncChatSession(base_url="http://127.0.0.1:30000") as chat:
            reply = await chat.send("Hello")
            async with chat.stream("Go on") as s:
                async for delta in s:
                    print(delta, end="")
            print((await s.get_reply()).route)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        client: openai.AsyncOpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        conversation_id: str | None = None,
        system: str | None = None,
        history: Sequence[Message] | None = None,
        slo: SLO | Mapping[str, float] | None = None,
        weights: Weights | Mapping[str, float] | None = None,
        preset: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        timeout: float | Any = None,
        max_retries: int = 1,
        retry_backoff_s: float = 0.25,
        send_ppd_body: bool = True,
        provider_name: str = "ppd",
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        owns = client is None
        if client is None:
            client = openai.AsyncOpenAI(base_url=resolve_base_url(base_url), api_key=resolve_api_key(api_key))
        state = self._initial_state(model, conversation_id, system, history, slo, weights, preset, tools, send_ppd_body)
        self._setup(
            client, owns, state, timeout=timeout, max_retries=max_retries, retry_backoff_s=retry_backoff_s, provider_name=provider_name,
            tracer_provider=tracer_provider, meter_provider=meter_provider,
        )

    async def send(self, content: str | Sequence[Any] | None = None, **kwargs: Any) -> Reply:
        """One non-streamed turn; see :meth:`ChatSession.send`."""
        await self._ensure_model(kwargs)
        plan = self._plan(content, False, kwargs)
        span = self._start_span(plan)
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                reply = await self._send_once(plan)
                break
            except Exception as exc:
                err = from_openai(exc)
                wait = self._retry_wait(err, attempt)
                if wait is not None:
                    attempt += 1
                    span.retried(err, wait)
                    await asyncio.sleep(wait)
                    continue
                span.fail(err, time.perf_counter() - started)
                if err is exc:
                    raise
                raise err from exc
        self._state.commit(plan, reply)
        span.finish(reply, time.perf_counter() - started)
        return reply

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
        if kwargs.get("model") or self._state.model:
            return
        try:
            models = await self._client.models.list()
        except Exception as exc:
            raise from_openai(exc) from exc
        if not models.data:
            raise PPDError("the server lists no model; pass model=...")
        self._state.model = models.data[0].id

    def fork(self, conversation_id: str | None = None) -> AsyncChatSession:
        """A new conversation sharing this one's history; see :meth:`ChatSession.fork`."""
        return self._with_state(self._state.forked(conversation_id))

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any], **kwargs: Any) -> AsyncChatSession:
        """Restore a session saved with :meth:`to_json`."""
        state = SessionState.from_dict(json.loads(data) if isinstance(data, str) else data)
        state.model = kwargs.pop("model", None) or state.model
        session = cls(model=state.model, **kwargs)
        session._state = state
        return session

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> AsyncChatSession:
        """Restore a session written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"), **kwargs)

    async def close(self) -> None:
        """Close the HTTP client if this session created it."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> AsyncChatSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncReplyStream:
    """The text deltas of one streamed async turn (``async for``); then ``await
    get_reply()``. The history is updated only when the stream was read to the end."""

    def __init__(self, session: AsyncChatSession, content: Any, kwargs: dict[str, Any]) -> None:
        self._session = session
        self._content = content
        self._kwargs = kwargs
        self._reply: Reply | None = None
        self._iterator: AsyncIterator[str] | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

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
        plan = session._plan(self._content, True, self._kwargs)
        span = session._start_span(plan)
        started = time.perf_counter()
        attempt = 0
        finished = False
        try:
            while True:
                acc = StreamAccumulator(plan, time.perf_counter())
                try:
                    raw = await session._client.chat.completions.with_raw_response.create(**plan.request)
                    stream = raw.parse()
                    async with stream:
                        async for chunk in stream:
                            delta = acc.add(chunk, time.perf_counter())
                            if delta:
                                yield delta
                    reply = acc.reply(raw.headers, time.perf_counter(), raw.request_id)
                    break
                except Exception as exc:
                    err = from_openai(exc)
                    wait = session._retry_wait(err, attempt, acc.started_output)
                    if wait is not None:
                        attempt += 1
                        span.retried(err, wait)
                        await asyncio.sleep(wait)
                        continue
                    span.fail(err, time.perf_counter() - started)
                    finished = True
                    if err is exc:
                        raise
                    raise err from exc
            session._state.commit(plan, reply)
            self._reply = reply
            span.finish(reply, time.perf_counter() - started)
            finished = True
        finally:
            if not finished:
                span.fail(PPDError("stream closed before the end of the turn"), time.perf_counter() - started)
