"""The PPD wire contract: the one module that names every header, body field and span
attribute that the client (``ppd_sdk``, ``langchain_ppd``) and the router (``ppd_server``,
``ppd_sim``) exchange, with the one function that folds hints into a request
(:meth:`Hints.apply`) and the one that reads them back (:func:`parse_hints`).

Client -> router (on ``/v1/chat/completions``, ``/v1/completions``, ``/generate``). What
:meth:`Hints.apply` sends, each hint once (plus the id as OpenAI's own cache key):

* conversation id: header ``X-PPD-Conversation-Id`` and body ``prompt_cache_key``;
* fork: header ``X-PPD-Parent-Conversation-Id``; turn: header ``X-PPD-Turn`` (optional: the
  router infers it);
* absolute SLO targets: headers ``X-SLO-TTFT-Ms`` / ``X-SLO-TPOT-Ms`` (the Gateway API
  Inference Extension convention);
* relative weights: body ``ppd: {"weights": {"ttft": w, "tpot": w}}``.

What :func:`parse_hints` accepts from any client: the above, and as fallbacks for clients that
can only set a body, ``ppd.conversation_id``, ``ppd.parent_conversation_id``, ``ppd.turn``,
``ppd.slo: {"ttft_ms", "tpot_ms"}`` and ``ppd.preset`` (a name of :data:`PRESETS`). Headers win
over the body; for the id, the header, then ``prompt_cache_key``, then ``ppd.conversation_id``.
Bad hints raise :class:`WireError` naming the field (the router answers HTTP 400).

Router -> client: headers ``X-PPD-Route``, ``X-PPD-Decode``, ``X-PPD-Prefill``, ``X-PPD-Turn``
(:func:`route_headers`); the final JSON (or the final usage chunk of a stream) carries ``ppd`` =
:class:`RouteInfo` (built by the router with :func:`route_body`, read by :func:`parse_route`).

Traces: the SDK's ``chat {model}`` span and the router's ``ppd.route`` span name the same thing
the same way (``ATTR_*`` below, :func:`hint_attributes`, :func:`route_attributes`).

Everything here is pure data and validation: no I/O, safe for the router's hot path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# -- headers and body fields --------------------------------------------------------------------
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
_BODY_KEYS = frozenset({"conversation_id", "parent_conversation_id", "turn", "weights", "slo", "preset"})

# -- span attributes (one name per concept, on the SDK's span and on the router's) --------------
ATTR_CONVERSATION_ID = "gen_ai.conversation.id"
ATTR_TURN = "ppd.turn"
ATTR_WEIGHT_TTFT = "ppd.weights.ttft"  # what the request asked for
ATTR_WEIGHT_TPOT = "ppd.weights.tpot"
ATTR_SLO_TTFT_MS = "ppd.slo.ttft_ms"
ATTR_SLO_TPOT_MS = "ppd.slo.tpot_ms"
ATTR_POLICY_WEIGHT_TTFT = "ppd.policy.weights.ttft"  # what the policy scored with (router span)
ATTR_POLICY_WEIGHT_TPOT = "ppd.policy.weights.tpot"
ATTR_ROUTE = "ppd.route"
ATTR_POLICY = "ppd.policy"
ATTR_DECODE = "ppd.decode"
ATTR_PREFILL = "ppd.prefill"
ATTR_REASON = "ppd.reason"
ATTR_SCORE = "ppd.score"
ATTR_CACHED_TOKENS = "ppd.cached_tokens"


def attr_candidate(route: str, field: str) -> str:
    """``ppd.candidate.{route}.{field}``: one predicted figure (``ttft_ms``, ``tpot_ms``, ``score``)."""
    return f"ppd.candidate.{route}.{field}"


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
NO_SLO = SLO()


def resolve_weights(weights: Weights | Mapping[str, float] | None, preset: str | None = None) -> Weights | None:
    """Explicit weights win over a preset name; None means "not given". A bad preset or bad
    weights raise ValueError (a pydantic ``ValidationError`` for the weights)."""
    if weights is not None:
        return weights if isinstance(weights, Weights) else Weights.model_validate(weights)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[preset]
    return None


def resolve_slo(slo: SLO | Mapping[str, float] | None) -> SLO | None:
    """An :class:`SLO` from an SLO or a mapping; None means "not given"."""
    if slo is None or isinstance(slo, SLO):
        return slo
    return SLO.model_validate(slo)


class Hints(_Frozen):
    """Everything a request tells the router about its conversation and its SLO."""

    conversation_id: str | None = None
    parent_conversation_id: str | None = None
    turn: int | None = Field(default=None, ge=1)
    weights: Weights = PRESETS["balanced"]
    slo: SLO = NO_SLO

    def apply(
        self, headers: Mapping[str, str] | None = None, body: Mapping[str, Any] | None = None, *, ppd_body: bool = True
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """Copies of ``headers`` and ``body`` carrying these hints, each once (see the module
        docstring). ``ppd_body=False`` leaves out the ``ppd`` body field (the weights) for a
        server that rejects unknown fields; the headers and ``prompt_cache_key`` still go."""
        h = dict(headers or {})
        b = dict(body or {})
        if self.conversation_id is not None:
            h[HEADER_CONVERSATION_ID] = self.conversation_id
            b[PROMPT_CACHE_KEY] = self.conversation_id
        if self.parent_conversation_id is not None:
            h[HEADER_PARENT_CONVERSATION_ID] = self.parent_conversation_id
        if self.turn is not None:
            h[HEADER_TURN] = str(self.turn)
        if self.slo.ttft_ms is not None:
            h[HEADER_SLO_TTFT_MS] = _fmt(self.slo.ttft_ms)
        if self.slo.tpot_ms is not None:
            h[HEADER_SLO_TPOT_MS] = _fmt(self.slo.tpot_ms)
        if ppd_body:
            b[BODY_FIELD] = {"weights": {"ttft": self.weights.ttft, "tpot": self.weights.tpot}}
        return h, b


def hint_attributes(hints: Hints, turn: int | None = None) -> dict[str, Any]:
    """Span attributes of a request's hints (the SDK's span and the router's carry the same)."""
    attrs: dict[str, Any] = {ATTR_WEIGHT_TTFT: hints.weights.ttft, ATTR_WEIGHT_TPOT: hints.weights.tpot}
    if hints.conversation_id is not None:
        attrs[ATTR_CONVERSATION_ID] = hints.conversation_id
    turn = turn if turn is not None else hints.turn
    if turn is not None:
        attrs[ATTR_TURN] = turn
    if hints.slo.ttft_ms is not None:
        attrs[ATTR_SLO_TTFT_MS] = hints.slo.ttft_ms
    if hints.slo.tpot_ms is not None:
        attrs[ATTR_SLO_TPOT_MS] = hints.slo.tpot_ms
    return attrs


# -- the router's answer ------------------------------------------------------------------------
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


def route_body(
    route: str,
    turn: int,
    conversation_id: str | None,
    policy: str,
    decode: str | None,
    prefill: str | None,
    cached_tokens: int | None,
    reason: str,
    predicted: Iterable[tuple[str, float, float, float | None]],
) -> dict[str, Any]:
    """The ``ppd`` response field (a :class:`RouteInfo`) as a plain dict, cheap for the router's
    hot path. ``predicted``: (route, ttft_ms, tpot_ms, score) per candidate."""
    return {
        "route": route, "turn": turn, "conversation_id": conversation_id, "policy": policy,
        "decode": decode, "prefill": prefill, "cached_tokens": cached_tokens, "reason": reason,
        "predicted": {name: {"ttft_ms": round(ttft, 3), "tpot_ms": round(tpot, 3),
                             "score": None if score is None else round(score, 4)}
                      for name, ttft, tpot, score in predicted},
    }  # fmt: skip


def route_headers(route: str, turn: int, decode: str | None, prefill: str | None) -> dict[str, str]:
    """The ``X-PPD-*`` response headers of a routed turn."""
    h = {HEADER_ROUTE: route, HEADER_DECODE: decode or "", HEADER_TURN: str(turn)}
    if prefill:
        h[HEADER_PREFILL] = prefill
    return h


def parse_route(body_ppd: Any, headers: Mapping[str, str], turn: int) -> RouteInfo | None:
    """The router's decision as a client reads it: the body's ``ppd`` field, else the
    ``X-PPD-*`` headers, else None (a plain OpenAI-compatible server)."""
    if isinstance(body_ppd, Mapping):
        # A newer router may add fields; the predictions are the first thing to give up.
        for data in (dict(body_ppd), {k: v for k, v in body_ppd.items() if k != "predicted"}):
            try:
                return RouteInfo.model_validate(data)
            except ValidationError:
                continue
    route = _get_header(headers, HEADER_ROUTE)
    if route not in ROUTES:
        return None
    raw_turn = _get_header(headers, HEADER_TURN) or ""
    return RouteInfo(
        route=route,  # type: ignore[arg-type]  # checked against ROUTES above
        turn=int(raw_turn) if raw_turn.isdigit() else turn,
        decode=_get_header(headers, HEADER_DECODE) or None,
        prefill=_get_header(headers, HEADER_PREFILL) or None,
    )


def route_attributes(
    route: str,
    *,
    policy: str | None = None,
    reason: str | None = None,
    decode: str | None = None,
    prefill: str | None = None,
    score: float | None = None,
    cached_tokens: int | None = None,
    predicted: Iterable[tuple[str, float, float, float | None]] = (),
) -> dict[str, Any]:
    """Span attributes of a routing decision; ``None`` values are left out. The router calls it
    with its Decision, the SDK with the :class:`RouteInfo` it received: the same names."""
    attrs: dict[str, Any] = {ATTR_ROUTE: route}
    for key, value in ((ATTR_POLICY, policy), (ATTR_REASON, reason), (ATTR_DECODE, decode), (ATTR_PREFILL, prefill),
                       (ATTR_SCORE, score), (ATTR_CACHED_TOKENS, cached_tokens)):
        if value is not None:
            attrs[key] = value
    for name, ttft, tpot, cand_score in predicted:
        attrs[attr_candidate(name, "ttft_ms")] = float(ttft)
        attrs[attr_candidate(name, "tpot_ms")] = float(tpot)
        if cand_score is not None:
            attrs[attr_candidate(name, "score")] = float(cand_score)
    return attrs


# -- parsing ------------------------------------------------------------------------------------
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


def _model(cls: type[_Frozen], value: Any, param: str) -> Any:
    try:
        return cls.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise WireError(f"invalid {param}{'.' + where if where else ''}: {err.get('msg')}", param) from None


def _turn(raw: Any, param: str) -> int | None:
    if raw is None:
        return None
    turn: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        turn = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        turn = int(raw)
    if turn is None or turn < 1:
        raise WireError(f"{param} must be a positive integer, got {raw!r}", param)
    return turn


def parse_hints(headers: Mapping[str, str], body: Mapping[str, Any]) -> Hints:
    """Read a request's PPD hints from its headers and JSON body, once, into :class:`Hints`.

    ``headers`` may be any case-insensitive mapping (aiohttp's, httpx's) or a plain dict.
    Raises :class:`WireError` naming the bad field; never anything else. A conversation that
    names itself as its parent is a WireError too.
    """
    raw = body.get(BODY_FIELD)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise WireError("'ppd' must be an object", BODY_FIELD)
    unknown = sorted(set(raw) - _BODY_KEYS)
    if unknown:
        raise WireError(f"unknown field(s) in 'ppd': {', '.join(unknown)}", f"ppd.{unknown[0]}")

    conv = _check_id(_get_header(headers, HEADER_CONVERSATION_ID), HEADER_CONVERSATION_ID)
    if conv is None:
        conv = _check_id(body.get(PROMPT_CACHE_KEY), PROMPT_CACHE_KEY)
    if conv is None:
        conv = _check_id(raw.get("conversation_id"), "ppd.conversation_id")
    parent_param = HEADER_PARENT_CONVERSATION_ID
    parent = _check_id(_get_header(headers, parent_param), parent_param)
    if parent is None:
        parent_param = "ppd.parent_conversation_id"
        parent = _check_id(raw.get("parent_conversation_id"), parent_param)
    if parent is not None and parent == conv:
        raise WireError("a conversation cannot be its own parent", parent_param)

    header_turn = _get_header(headers, HEADER_TURN)
    turn = _turn(header_turn, HEADER_TURN) if header_turn is not None else _turn(raw.get("turn"), "ppd.turn")

    preset = raw.get("preset")
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise WireError(f"unknown ppd.preset {preset!r}; choose one of {', '.join(PRESETS)}", "ppd.preset")
    weights_raw = raw.get("weights")
    weights: Weights = (
        _model(Weights, weights_raw, "ppd.weights") if weights_raw is not None else PRESETS[preset or "balanced"]
    )
    slo_raw = raw.get("slo")
    slo_body: SLO = _model(SLO, slo_raw, "ppd.slo") if slo_raw is not None else NO_SLO

    ttft = _header_ms(headers, HEADER_SLO_TTFT_MS)
    tpot = _header_ms(headers, HEADER_SLO_TPOT_MS)
    slo = slo_body
    if ttft is not None or tpot is not None:
        slo = SLO(
            ttft_ms=ttft if ttft is not None else slo_body.ttft_ms,
            tpot_ms=tpot if tpot is not None else slo_body.tpot_ms,
        )
    # Every field was validated above: construct without validating twice (hot path).
    return Hints.model_construct(conversation_id=conv, parent_conversation_id=parent, turn=turn, weights=weights, slo=slo)
