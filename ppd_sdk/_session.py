"""``ChatSession``: a multi-turn conversation over a synchronous ``openai.OpenAI`` client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import openai

from ._base import ReplyStreamBase, SessionBase
from ._core import StreamAccumulator, TurnPlan, reply_from_completion
from ._exceptions import from_openai
from ._types import Reply


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

    def _new_client(self, base_url: str, api_key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=base_url, api_key=api_key)

    # -- turns -----------------------------------------------------------------------------
    def send(self, content: str | Sequence[Any] | None = None, **kwargs: Any) -> Reply:
        """One non-streamed turn. ``content`` is the user message (None: continue after tool
        results). Keyword arguments: ``model``, ``tools``, ``tool_choice``, ``slo``,
        ``weights``, ``preset``, ``timeout`` and any ``chat.completions.create`` parameter
        (``temperature``, ``max_tokens``, ``extra_headers``, ...)."""
        self._ensure_model(kwargs)
        turn = self._begin_turn(content, False, kwargs)
        while True:
            try:
                reply = self._send_once(turn.plan)
            except Exception as exc:  # mapped by the turn; every failure is on its span
                time.sleep(turn.wait_before_retry(exc))
            else:
                return turn.succeed(reply)

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
        if not self._needs_model_list(kwargs):
            return
        try:
            models = self._client.models.list()
        except Exception as exc:
            raise from_openai(exc) from exc
        self._adopt_first_model(models)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP client if this session created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplyStream(ReplyStreamBase["ChatSession", Iterator[str]]):
    """The text deltas of one streamed turn; ``reply`` is the final :class:`Reply`.

    Use it as an iterator (ideally in a ``with`` block, so an abandoned stream is closed)::

        with session.stream("Tell me a story") as s:
            for delta in s:
                print(delta, end="")
        print(s.reply.ttft_s)

    The history is updated only when the stream has been read to the end.
    """

    def __iter__(self) -> Iterator[str]:
        return self._text_iterator()

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
        turn = session._begin_turn(self._content, True, self._kwargs)
        try:
            while True:
                acc = StreamAccumulator(turn.plan, time.perf_counter())
                try:
                    raw = session._client.chat.completions.with_raw_response.create(**turn.plan.request)
                    stream = raw.parse()
                    with stream:
                        for chunk in stream:
                            delta = acc.add(chunk, time.perf_counter())
                            if delta:
                                yield delta
                    reply = acc.reply(raw.headers, time.perf_counter(), raw.request_id)
                except Exception as exc:
                    time.sleep(turn.wait_before_retry(exc, acc.started_output))
                else:
                    self._reply = turn.succeed(reply)
                    return
        finally:
            turn.end_if_abandoned()
