"""The PPD wire contract: the one place that names every header and body field that the
client (``ppd_sdk``) and the router (``ppd_server``) exchange. Both sides import it.

Client -> router (on ``/v1/chat/completions``, ``/v1/completions``, ``/generate``):

* conversation id: header ``X-PPD-Conversation-Id``; else body ``prompt_cache_key``
  (OpenAI's own cache-routing key); else body ``ppd.conversation_id``. No id: a one-shot turn 1.
* fork: header ``X-PPD-Parent-Conversation-Id`` or body ``ppd.parent_conversation_id``.
* turn: header ``X-PPD-Turn`` or body ``ppd.turn`` (optional; the router infers it).
* SLO hints: body ``ppd: {"weights": {"ttft": w, "tpot": w}, "slo": {"ttft_ms": x, "tpot_ms": y}}``
  or a ``"preset"`` name; headers ``X-SLO-TTFT-Ms`` / ``X-SLO-TPOT-Ms`` (Gateway API Inference
  Extension convention). Headers win over the body for the absolute targets.

Router -> client: headers ``X-PPD-Route``, ``X-PPD-Decode``, ``X-PPD-Prefill``, ``X-PPD-Turn``;
the final JSON (or the final usage chunk of a stream) carries ``ppd`` = :class:`RouteInfo`.

Everything here is pure data and validation: no I/O, safe for the router's hot path.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

HEADER_CONVERSATION_ID = "X-PPD-Conversation-Id"
HEADER_PARENT_CONVERSATION_ID = "X-PPD-Parent-Conversation-Id"
HEADER_TURN = "X-PPD-Turn"
HEADER_SLO_TTFT_MS = "X-SLO-TTFT-Ms"
HEADER_SLO_TPOT_MS = "X-SLO-TPOT-Ms"
HEADER_ROUTE = "X-PPD-Route"
HEADER_DECODE = "X-PPD-Decode"
HEADER_PREFILL = "X-PPD-Prefill"
BODY_FIELD = "ppd"
PROMPT_CACHE_KEY = "prompt_cache_key"

Route = Literal["local", "pd", "replica"]
ROUTES: tuple[str, ...] = ("local", "pd", "replica")

MAX_CONVERSATION_ID_LEN = 256


class WireError(ValueError):
    """Invalid PPD hints. ``param`` names the offending field, for an OpenAI-style 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SLO(_Frozen):
    """Absolute latency targets for one turn, in milliseconds. ``None`` means no target."""

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)

    @field_validator("ttft_ms", "tpot_ms")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number of milliseconds")
        return v


class Weights(_Frozen):
    """Relative weights of TTFT and TPOT in the PPD score (the paper's w_ttft / w_tpot)."""

    ttft: float = Field(default=1.0, ge=0, le=1000)
    tpot: float = Field(default=1.0, ge=0, le=1000)


#: Named weight presets: TTFT-priority 2:1, balanced 1:1, TPOT-priority 1:2 (the PPD paper's).
PRESETS: dict[str, Weights] = {
    "interactive": Weights(ttft=2.0, tpot=1.0),
    "balanced": Weights(ttft=1.0, tpot=1.0),
    "throughput": Weights(ttft=1.0, tpot=2.0),
}


class Hints(_Frozen):
    """Everything a request tells the router about its conversation and its SLO."""

    conversation_id: str | None = None
    parent_conversation_id: str | None = None
    turn: int | None = Field(default=None, ge=1)
    weights: Weights = Weights()
    slo: SLO = SLO()

    def body_field(self) -> dict[str, Any]:
        """The ``ppd`` body object that carries these hints."""
        out: dict[str, Any] = {"weights": self.weights.model_dump()}
        slo = self.slo.model_dump(exclude_none=True)
        if slo:
            out["slo"] = slo
        if self.conversation_id is not None:
            out["conversation_id"] = self.conversation_id
        if self.parent_conversation_id is not None:
            out["parent_conversation_id"] = self.parent_conversation_id
        if self.turn is not None:
            out["turn"] = self.turn
        return out

    def headers(self) -> dict[str, str]:
        """The request headers that carry these hints."""
        h: dict[str, str] = {}
        if self.conversation_id is not None:
            h[HEADER_CONVERSATION_ID] = self.conversation_id
        if self.parent_conversation_id is not None:
            h[HEADER_PARENT_CONVERSATION_ID] = self.parent_conversation_id
        if self.turn is not None:
            h[HEADER_TURN] = str(self.turn)
        if self.slo.ttft_ms is not None:
            h[HEADER_SLO_TTFT_MS] = _fmt(self.slo.ttft_ms)
        if self.slo.tpot_ms is not None:
            h[HEADER_SLO_TPOT_MS] = _fmt(self.slo.tpot_ms)
        return h


class Predicted(_Frozen):
    """The cost model's prediction for one candidate route."""

    ttft_ms: float
    tpot_ms: float
    score: float | None = None


class RouteInfo(BaseModel):
    """The router's answer about one turn: the ``ppd`` field of the final response body."""

    model_config = ConfigDict(extra="allow")

    route: Route
    turn: int
    conversation_id: str | None = None
    policy: str | None = None
    decode: str | None = None
    prefill: str | None = None
    cached_tokens: int | None = None
    reason: str | None = None
    predicted: dict[str, Predicted] = Field(default_factory=dict)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _get_header(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:
        v = headers.get(name.lower())
    return v


def _check_id(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_CONVERSATION_ID_LEN:
        raise WireError(f"{param} must be a non-empty string of at most {MAX_CONVERSATION_ID_LEN} characters", param)
    return value


def _header_ms(headers: Mapping[str, str], name: str) -> float | None:
    raw = _get_header(headers, name)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise WireError(f"header {name} must be a number of milliseconds, got {raw!r}", name) from None
    if not math.isfinite(v) or v <= 0:
        raise WireError(f"header {name} must be a positive number of milliseconds, got {raw!r}", name)
    return v


def parse_hints(headers: Mapping[str, str], body: Mapping[str, Any]) -> Hints:
    """Read a request's PPD hints from its headers and JSON body.

    ``headers`` may be any case-insensitive mapping (aiohttp's, httpx's) or a plain dict.
    Raises :class:`WireError` naming the bad field; never anything else.
    """
    raw = body.get(BODY_FIELD)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise WireError("'ppd' must be an object", BODY_FIELD)
    known = {"conversation_id", "parent_conversation_id", "turn", "weights", "slo", "preset"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise WireError(f"unknown field(s) in 'ppd': {', '.join(unknown)}", f"ppd.{unknown[0]}")

    conv = _check_id(_get_header(headers, HEADER_CONVERSATION_ID), HEADER_CONVERSATION_ID)
    if conv is None:
        conv = _check_id(body.get(PROMPT_CACHE_KEY), PROMPT_CACHE_KEY)
    if conv is None:
        conv = _check_id(raw.get("conversation_id"), "ppd.conversation_id")
    parent = _check_id(_get_header(headers, HEADER_PARENT_CONVERSATION_ID), HEADER_PARENT_CONVERSATION_ID)
    if parent is None:
        parent = _check_id(raw.get("parent_conversation_id"), "ppd.parent_conversation_id")

    turn_raw: Any = _get_header(headers, HEADER_TURN)
    turn_param = HEADER_TURN
    if turn_raw is None:
        turn_raw, turn_param = raw.get("turn"), "ppd.turn"
    turn: int | None = None
    if turn_raw is not None:
        if isinstance(turn_raw, int) and not isinstance(turn_raw, bool):
            turn = turn_raw
        elif isinstance(turn_raw, str) and turn_raw.strip().isascii() and turn_raw.strip().isdigit():  # "²".isdigit()
            turn = int(turn_raw)
        if turn is None or turn < 1:
            raise WireError(f"{turn_param} must be a positive integer, got {turn_raw!r}", turn_param)

    preset = raw.get("preset")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise WireError(f"unknown ppd.preset {preset!r}; choose one of {', '.join(PRESETS)}", "ppd.preset")
    try:
        weights = Weights.model_validate(raw["weights"]) if raw.get("weights") is not None else PRESETS.get(preset or "balanced")
        slo_body = SLO.model_validate(raw["slo"]) if raw.get("slo") is not None else SLO()
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        field = "weights" if "weights" in raw and _fails(Weights, raw.get("weights")) else "slo"
        raise WireError(f"invalid ppd.{field}{'.' + where if where else ''}: {err.get('msg')}", f"ppd.{field}") from None

    ttft = _header_ms(headers, HEADER_SLO_TTFT_MS)
    tpot = _header_ms(headers, HEADER_SLO_TPOT_MS)
    slo = SLO(
        ttft_ms=ttft if ttft is not None else slo_body.ttft_ms,
        tpot_ms=tpot if tpot is not None else slo_body.tpot_ms,
    )
    assert weights is not None
    return Hints(conversation_id=conv, parent_conversation_id=parent, turn=turn, weights=weights, slo=slo)


def _fails(model: type[BaseModel], value: Any) -> bool:
    try:
        model.model_validate(value)
        return False
    except ValidationError:
        return True
