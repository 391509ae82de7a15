"""What :class:`ChatSession` and :class:`AsyncChatSession` share besides the IO: the
constructor and its options, the session state accessors, persistence, forks, and the
bookkeeping of a turn across its attempts (:class:`TurnAttempts`). The two shells differ only
in how they call the client and wait."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Generic, Mapping, Sequence, TypeVar

from ._core import SessionState, TurnPlan
from ._exceptions import PPDError, from_openai, is_transient, retry_delay
from ._ids import new_conversation_id
from ._telemetry import Telemetry, TurnSpan
from ._types import Message, Reply
from .endpoint import resolve_api_key, resolve_base_url
from .wire import PRESETS, SLO, Weights, hint_attributes, resolve_slo, resolve_weights

ClientT = TypeVar("ClientT")
SessionT = TypeVar("SessionT", bound="SessionBase[Any]")
IteratorT = TypeVar("IteratorT")


class SessionBase(Generic[ClientT]):
    """State and options of a session; subclasses add ``send`` / ``stream`` over a client."""

    _client: ClientT
    _state: SessionState
    _telemetry: Telemetry
    _owns_client: bool
    _timeout: Any
    _max_retries: int
    _retry_backoff_s: float

    def __init__(
        self,
        model: str | None = None,
        *,
        client: ClientT | None = None,
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
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        # Bad hints fail before a client exists, so nothing is left open.
        self._state = self._initial_state(model, conversation_id, system, history, slo, weights, preset, tools, send_ppd_body)
        self._owns_client = client is None
        if client is None:
            client = self._new_client(resolve_base_url(base_url), resolve_api_key(api_key))
        # Retries are this session's policy (once, and only before any token), not openai's.
        self._client = client.with_options(max_retries=0)  # type: ignore[attr-defined]
        self._timeout = timeout
        self._max_retries = max_retries
        self._retry_backoff_s = retry_backoff_s
        base = getattr(client, "base_url", None)
        self._telemetry = Telemetry(
            provider_name,
            getattr(base, "host", None) or None,
            getattr(base, "port", None),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    def _new_client(self, base_url: str, api_key: str) -> ClientT:
        """The client a session makes when none is given (sync or async: the shell decides)."""
        raise NotImplementedError

    @staticmethod
    def _initial_state(
        model: str | None,
        conversation_id: str | None,
        system: str | None,
        history: Sequence[Message] | None,
        slo: SLO | Mapping[str, float] | None,
        weights: Weights | Mapping[str, float] | None,
        preset: str | None,
        tools: list[dict[str, Any]] | None,
        send_ppd_body: bool,
    ) -> SessionState:
        messages: list[Message] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.extend(dict(m) for m in history or ())
        return SessionState(
            conversation_id=conversation_id or new_conversation_id(),
            model=model,
            messages=messages,
            weights=resolve_weights(weights, preset) or PRESETS["balanced"],
            slo=resolve_slo(slo) or SLO(),
            tools=tools,
            send_ppd_body=send_ppd_body,
        )

    # -- state -----------------------------------------------------------------------------
    @property
    def conversation_id(self) -> str:
        """The id sent with every turn (``X-PPD-Conversation-Id`` and ``prompt_cache_key``)."""
        return self._state.conversation_id

    @property
    def parent_conversation_id(self) -> str | None:
        """Set after :meth:`fork` until the fork's first turn has been sent."""
        return self._state.parent_conversation_id

    @property
    def turn(self) -> int:
        """Number of completed turns."""
        return self._state.turn

    @property
    def model(self) -> str | None:
        return self._state.model

    @property
    def messages(self) -> list[Message]:
        """A copy of the history (system, user, assistant and tool messages)."""
        return [dict(m) for m in self._state.messages]

    @property
    def weights(self) -> Weights:
        return self._state.weights

    @property
    def slo(self) -> SLO:
        return self._state.slo

    def set_hints(
        self,
        *,
        slo: SLO | Mapping[str, float] | None = None,
        weights: Weights | Mapping[str, float] | None = None,
        preset: str | None = None,
    ) -> None:
        """Change the default SLO hints for the following turns."""
        new_weights = resolve_weights(weights, preset)
        if new_weights is not None:
            self._state.weights = new_weights
        new_slo = resolve_slo(slo)
        if new_slo is not None:
            self._state.slo = new_slo

    def add_message(self, message: Message) -> None:
        """Append any OpenAI-format message to the history (e.g. a later system message)."""
        if "role" not in message:
            raise ValueError("a message needs a 'role'")
        self._state.messages.append(dict(message))

    def add_tool_result(self, tool_call_id: str, content: str) -> None:
        """Answer a tool call of the last reply; then ``send()`` (no content) continues."""
        self._state.add_tool_result(tool_call_id, content)

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to continue this conversation later (JSON-safe)."""
        return self._state.to_dict()

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path`` (restore with ``load(path, ...)``)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls: type[SessionT], data: str | Mapping[str, Any], **kwargs: Any) -> SessionT:
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
    def load(cls: type[SessionT], path: str | os.PathLike[str], **kwargs: Any) -> SessionT:
        """Restore a session written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"), **kwargs)

    # -- branching -------------------------------------------------------------------------
    def fork(self: SessionT, conversation_id: str | None = None) -> SessionT:
        """A new conversation that shares this one's history (prefix). Its first turn sends
        ``X-PPD-Parent-Conversation-Id`` so the router places it where the prefix is cached."""
        return self._with_state(self._state.forked(conversation_id))

    def _with_state(self: SessionT, state: SessionState) -> SessionT:
        """A session of the same kind sharing this one's client, options and telemetry."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._owns_client = False
        twin._state = state
        return twin

    # -- helpers for the IO shells ----------------------------------------------------------
    def _needs_model_list(self, kwargs: Mapping[str, Any]) -> bool:
        """True when neither the turn nor the session names a model: ask the server."""
        return not (kwargs.get("model") or self._state.model)

    def _adopt_first_model(self, models: Any) -> None:
        """Take the first model of a ``models.list()`` answer as the session's model."""
        if not models.data:
            raise PPDError("the server lists no model; pass model=...")
        self._state.model = models.data[0].id

    def _begin_turn(self, content: Any, stream: bool, kwargs: dict[str, Any]) -> TurnAttempts:
        return TurnAttempts(self, self._plan(content, stream, kwargs))

    def _plan(self, content: Any, stream: bool, kwargs: dict[str, Any]) -> TurnPlan:
        if "stream" in kwargs or "messages" in kwargs:
            raise TypeError("pass neither 'stream' nor 'messages': use stream() for streaming; the session owns the history")
        timeout = kwargs.pop("timeout", None)
        return self._state.plan(
            content,
            stream=stream,
            timeout=timeout if timeout is not None else self._timeout,
            model=kwargs.pop("model", None),
            tools=kwargs.pop("tools", None),
            tool_choice=kwargs.pop("tool_choice", None),
            slo=kwargs.pop("slo", None),
            weights=kwargs.pop("weights", None),
            preset=kwargs.pop("preset", None),
            params=kwargs,
        )

    def _retry_wait(self, err: PPDError, attempt: int, started_output: bool = False) -> float | None:
        """Seconds to wait before retrying a failed attempt, or None to give up: only
        transient errors, only before any token arrived, at most ``max_retries`` times."""
        if started_output or attempt >= self._max_retries or not is_transient(err):
            return None
        return retry_delay(err, self._retry_backoff_s)

    def _start_span(self, plan: TurnPlan) -> TurnSpan:
        span = self._telemetry.start_turn(plan.model, plan.conversation_id, plan.stream, plan.request)
        span.set_attributes(hint_attributes(plan.hints, plan.turn))
        span.inject(plan.request["extra_headers"])
        return span


class TurnAttempts:
    """One turn across its attempts, without IO: the span, the clock and the retry count.
    A shell sends ``plan.request``; on an error it waits :meth:`wait_before_retry` seconds
    and tries again (that call raises instead when the turn gives up); on success it calls
    :meth:`succeed`. A failed turn never commits, so the history stays as it was."""

    def __init__(self, session: SessionBase[Any], plan: TurnPlan) -> None:
        self.plan = plan
        self._session = session
        self._span = session._start_span(plan)
        self._started = time.perf_counter()
        self._attempt = 0
        self._ended = False

    def wait_before_retry(self, exc: Exception, started_output: bool = False) -> float:
        """Seconds to wait before the next attempt after ``exc``; when the turn gives up,
        records the failure and raises ``exc`` mapped onto :class:`PPDError`."""
        err = from_openai(exc)
        wait = self._session._retry_wait(err, self._attempt, started_output)
        if wait is None:
            self._end_failed(err)
            if err is exc:
                raise exc
            raise err from exc
        self._attempt += 1
        self._span.retried(err, wait)
        return wait

    def succeed(self, reply: Reply) -> Reply:
        """Commit the turn to the history and finish its span."""
        self._session._state.commit(self.plan, reply)
        self._span.finish(reply, time.perf_counter() - self._started)
        self._ended = True
        return reply

    def end_if_abandoned(self) -> None:
        """A stream closed before the end neither succeeded nor gave up: record it as failed."""
        if not self._ended:
            self._end_failed(PPDError("stream closed before the end of the turn"))

    def _end_failed(self, err: PPDError) -> None:
        self._span.fail(err, time.perf_counter() - self._started)
        self._ended = True


class ReplyStreamBase(Generic[SessionT, IteratorT]):
    """What a streamed turn holds in either shell: the turn's arguments until the first
    iteration starts the request, the text iterator, and the final reply once read to the end."""

    def __init__(self, session: SessionT, content: Any, kwargs: dict[str, Any]) -> None:
        self._session = session
        self._content = content
        self._kwargs = kwargs
        self._reply: Reply | None = None
        self._iterator: IteratorT | None = None

    def _text_iterator(self) -> IteratorT:
        """The one text iterator of this turn; the first call starts the request."""
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    def _run(self) -> IteratorT:
        """The shell's generator: the request, its retries and the text deltas."""
        raise NotImplementedError
