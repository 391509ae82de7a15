"""What :class:`ChatSession` and :class:`AsyncChatSession` share besides the IO: options,
client setup, the session state accessors, persistence and fork bookkeeping."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Generic, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

from ._core import SessionState, TurnPlan, resolve_slo, resolve_weights
from ._exceptions import PPDError, is_transient, retry_delay
from ._ids import new_conversation_id
from ._telemetry import Telemetry, TurnSpan
from ._types import Message
from .wire import PRESETS, SLO, Weights

ClientT = TypeVar("ClientT")
SessionT = TypeVar("SessionT", bound="SessionBase[Any]")

#: Where ``ppd-server`` listens by default; ``PPD_BASE_URL`` overrides it.
DEFAULT_BASE_URL = "http://127.0.0.1:30000"


def resolve_base_url(base_url: str | None) -> str:
    """The OpenAI base URL (with ``/v1``) for a server root or an explicit API base."""
    url = (base_url or os.environ.get("PPD_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return url if urlsplit(url).path else url + "/v1"


def resolve_api_key(api_key: str | None) -> str:
    # A PPD router without --api-key ignores the key; openai refuses an empty one.
    return api_key or os.environ.get("PPD_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"


class SessionBase(Generic[ClientT]):
    """State and options of a session; subclasses add ``send`` / ``stream`` over a client."""

    _client: ClientT
    _state: SessionState
    _telemetry: Telemetry
    _owns_client: bool
    _timeout: Any
    _max_retries: int
    _retry_backoff_s: float

    def _setup(
        self,
        client: ClientT,
        owns_client: bool,
        state: SessionState,
        *,
        timeout: Any,
        max_retries: int,
        retry_backoff_s: float,
        provider_name: str,
        tracer_provider: Any,
        meter_provider: Any,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        # Retries are this session's policy (once, and only before any token), not openai's.
        self._client = client.with_options(max_retries=0)  # type: ignore[attr-defined]
        self._owns_client = owns_client
        self._state = state
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

    def _with_state(self: SessionT, state: SessionState) -> SessionT:
        """A session of the same kind sharing this one's client, options and telemetry."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._owns_client = False
        twin._state = state
        return twin

    # -- helpers for the IO shells ----------------------------------------------------------
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
        span.set_hints(plan.hints.weights.model_dump(), plan.hints.slo.model_dump(), plan.turn)
        span.inject(plan.request["extra_headers"])
        return span
