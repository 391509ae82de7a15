"""``ChatSession``: a multi-turn conversation over a synchronous ``openai.OpenAI`` client."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import openai

from ._base import SessionBase, resolve_api_key, resolve_base_url
from ._core import SessionState, StreamAccumulator, TurnPlan, reply_from_completion
from ._exceptions import PPDError, from_openai
from ._telemetry import TurnSpan
from ._types import Message, Reply
from .wire import SLO, Weights


class ChatSession(SessionBase[openai.OpenAI]):
    """A conversation with a PPD router (or any OpenAI-compatible server).

    Every turn carries the conversation id, the turn number and the SLO hints, and returns
    a :class:`Reply` with the server's routing decision::

        from ppd_sdk import ChatSession, SLO

        with ChatSession(base_url="http://127.0.0.1:30000", system="Be brief.",
                         preset="interactive", slo=SLO(ttft_ms=500)) as chat:
            print(chat.send("Name a prime number.").text)
            with chat.stream("And another one?") as s:
                for delta in s:
                    print(delta, end="", flush=True)
            print(s.reply.route, s.reply.usage.cached_tokens)

    ``model`` defaults to the first model the server lists. ``client`` may be your own
    ``openai.OpenAI``; otherwise one is made from ``base_url`` (default ``$PPD_BASE_URL`` or
    http://127.0.0.1:30000) and ``api_key``. A turn that fails before any token on a
    transient error (connection, timeout, 429, 502/503/504) is retried ``max_retries`` times
    (default once) after ``retry_backoff_s`` (or the server's Retry-After, capped at 5 s);
    a failed turn leaves the history unchanged.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        client: openai.OpenAI | None = None,
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
            client = openai.OpenAI(base_url=resolve_base_url(base_url), api_key=resolve_api_key(api_key))
        state = self._initial_state(model, conversation_id, system, history, slo, weights, preset, tools, send_ppd_body)
        self._setup(
            client, owns, state, timeout=timeout, max_retries=max_retries, retry_backoff_s=retry_backoff_s, provider_name=provider_name,
            tracer_provider=tracer_provider, meter_provider=meter_provider,
        )

    # -- turns -----------------------------------------------------------------------------
    def send(self, content: str | Sequence[Any] | None = None, **kwargs: Any) -> Reply:
        """One non-streamed turn. ``content`` is the user message (None: continue after tool
        results). Keyword arguments: ``model``, ``tools``, ``tool_choice``, ``slo``,
        ``weights``, ``preset``, ``timeout`` and any ``chat.completions.create`` parameter
        (``temperature``, ``max_tokens``, ``extra_headers``, ...)."""
        self._ensure_model(kwargs)
        plan = self._plan(content, False, kwargs)
        span = self._start_span(plan)
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                reply = self._send_once(plan)
                break
            except Exception as exc:  # mapped below; the span records every failure
                err = from_openai(exc)
                wait = self._retry_wait(err, attempt)
                if wait is not None:
                    attempt += 1
                    span.retried(err, wait)
                    time.sleep(wait)
                    continue
                span.fail(err, time.perf_counter() - started)
                if err is exc:
                    raise
                raise err from exc
        self._state.commit(plan, reply)
        span.finish(reply, time.perf_counter() - started)
        return reply

    def stream(self, content: str | Sequence[Any] | None = None, **kwargs: Any) -> ReplyStream:
        """One streamed turn: iterate the returned :class:`ReplyStream` for text deltas,
        then read ``.reply``. Same arguments as :meth:`send`. The request starts on the
        first iteration."""
        return ReplyStream(self, content, kwargs)

    def _send_once(self, plan: TurnPlan) -> Reply:
        started = time.perf_counter()
        raw = self._client.chat.completions.with_raw_response.create(**plan.request)
        completion = raw.parse()
        return reply_from_completion(plan, completion, raw.headers, time.perf_counter() - started, raw.request_id)

    def _ensure_model(self, kwargs: Mapping[str, Any]) -> None:
        if kwargs.get("model") or self._state.model:
            return
        try:
            models = self._client.models.list()
        except Exception as exc:
            raise from_openai(exc) from exc
        if not models.data:
            raise PPDError("the server lists no model; pass model=...")
        self._state.model = models.data[0].id

    # -- branching and persistence ------------------------------------------------------------
    def fork(self, conversation_id: str | None = None) -> ChatSession:
        """A new conversation that shares this one's history (prefix). Its first turn sends
        ``X-PPD-Parent-Conversation-Id`` so the router places it where the prefix is cached."""
        return self._with_state(self._state.forked(conversation_id))

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any], **kwargs: Any) -> ChatSession:
        """Restore a session saved with :meth:`to_json` (same conversation id, turn, history
        and hints). ``kwargs`` are connection and telemetry options of the constructor
        (``client``, ``base_url``, ``api_key``, ``timeout``, ``tracer_provider``...) and
        optionally ``model``; the saved state wins over any history or hint argument."""
        state = SessionState.from_dict(json.loads(data) if isinstance(data, str) else data)
        state.model = kwargs.pop("model", None) or state.model
        session = cls(model=state.model, **kwargs)
        session._state = state
        return session

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> ChatSession:
        """Restore a session written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"), **kwargs)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP client if this session created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplyStream:
    """The text deltas of one streamed turn; ``reply`` is the final :class:`Reply`.

    Use it as an iterator (ideally in a ``with`` block, so an abandoned stream is closed)::

        with session.stream("Tell me a story") as s:
            for delta in s:
                print(delta, end="")
        print(s.reply.ttft_s)

    The history is updated only when the stream has been read to the end.
    """

    def __init__(self, session: ChatSession, content: Any, kwargs: dict[str, Any]) -> None:
        self._session = session
        self._content = content
        self._kwargs = kwargs
        self._reply: Reply | None = None
        self._iterator: Iterator[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    @property
    def reply(self) -> Reply:
        """The final reply (reads the rest of the stream first if needed)."""
        if self._reply is None:
            for _ in self:
                pass
        if self._reply is None:
            raise RuntimeError("this turn did not complete (it failed or was closed early)")
        return self._reply

    def close(self) -> None:
        """Stop reading; an unfinished turn is not added to the history."""
        if self._iterator is not None and self._reply is None:
            self._iterator.close()  # type: ignore[attr-defined]

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> Iterator[str]:
        session = self._session
        session._ensure_model(self._kwargs)
        plan = session._plan(self._content, True, self._kwargs)
        span: TurnSpan = session._start_span(plan)
        started = time.perf_counter()
        attempt = 0
        finished = False
        try:
            while True:
                acc = StreamAccumulator(plan, time.perf_counter())
                try:
                    raw = session._client.chat.completions.with_raw_response.create(**plan.request)
                    stream = raw.parse()
                    with stream:
                        for chunk in stream:
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
                        time.sleep(wait)
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
