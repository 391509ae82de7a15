"""Shaping worker responses for the client: observe tokens and timings, attach ``ppd``.

Non-streaming: the worker's JSON gets a ``ppd`` field (the :class:`ppd_sdk.wire.RouteInfo`).
Streaming (SSE): events are relayed as soon as each one is complete; only the events that
carry usage (OpenAI: the final ``choices: []`` chunk; ``/generate``: every chunk's
``meta_info``) are parsed. The router always asks the worker for ``include_usage`` so it can
observe prompt/cached tokens; if the client did not ask, that extra usage chunk is dropped,
otherwise it carries ``ppd``. On ``/generate`` the chunk with a ``finish_reason`` carries it.

A worker can answer 200 and then send garbage mid-stream. Every event is checked, cheaply (a
per-token ``json.loads`` would cost ~5 us a token): each line must be an SSE field (``data``,
``event``, ``id``, ``retry``) or a comment, each ``data`` payload ``[DONE]`` or framed as a JSON
object (``{...}``; the events the router parses anyway, usage and errors and every ``/generate``
event, must parse), and an event may not grow past ``MAX_EVENT_BYTES`` without ending. The first
malformed event sets :attr:`SSEShaper.malformed` and stops the relay there: the caller retries
the turn (nothing sent yet) or ends the client's stream with an SSE error event and ``[DONE]``.
Nothing after ``[DONE]`` is relayed. CRLF line ends are accepted (normalised to LF).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

try:  # a declared dependency of the server extra; the stdlib gives the same JSON, several times slower
    from orjson import dumps as _orjson_dumps
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover
    _orjson_dumps = _orjson_loads = None  # type: ignore[assignment]

Kind = Literal["chat", "completion", "generate"]


@dataclass(slots=True)
class TurnUsage:
    """What the worker reported and what the router timed, for one turn."""

    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    kv_transfer_bytes: int | None = None
    prefill_cached_tokens: int | None = None  # P->D: the prefill worker's own hit (engine meta_info)
    first_token_at: float | None = None  # perf_counter() of the first token event (streams)
    last_token_at: float | None = None

    def absorb(self, kind: Kind, obj: dict[str, Any]) -> None:
        meta = obj.get("meta_info")  # /generate; the embedded engine adds it to OpenAI answers too
        if kind == "generate" and isinstance(meta, dict):
            self._set(meta.get("prompt_tokens"), meta.get("cached_tokens"), meta.get("completion_tokens"))
        usage = obj.get("usage")
        if kind != "generate" and isinstance(usage, dict):
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            self._set(usage.get("prompt_tokens"), cached, usage.get("completion_tokens"))
        if isinstance(meta, dict):
            if isinstance(meta.get("kv_transfer_bytes"), int):
                self.kv_transfer_bytes = meta["kv_transfer_bytes"]
            details = meta.get("cached_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("prefill"), int):
                self.prefill_cached_tokens = details["prefill"]

    def _set(self, prompt: Any, cached: Any, completion: Any) -> None:
        if isinstance(prompt, int):
            self.prompt_tokens = prompt
        if isinstance(cached, int):
            self.cached_tokens = cached
        if isinstance(completion, int):
            self.completion_tokens = completion

    def ttft_ms(self, started_at: float) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - started_at) * 1000.0

    def tpot_ms(self) -> float | None:
        n = self.completion_tokens
        if self.first_token_at is None or self.last_token_at is None or not n or n < 2:
            return None
        return (self.last_token_at - self.first_token_at) * 1000.0 / (n - 1)


RouteInfoFn = Callable[[TurnUsage], dict[str, Any]]

MAX_EVENT_BYTES = 1 << 20  # an SSE event still unfinished past this is garbage, not a token
_SSE_FIELDS = (b"data", b"event", b"id", b"retry")


_UTF8_OBJECT_START = (b"{", b" ", b"\n", b"\r", b"\t")


class _Malformed(Exception):
    pass


def shape_json(kind: Kind, raw: bytes, route_info: RouteInfoFn) -> tuple[bytes, TurnUsage]:
    """Add ``ppd`` to a non-streamed JSON answer; batches (lists) and non-JSON pass untouched."""
    usage = TurnUsage()
    try:
        obj = _read(raw)
    except ValueError:
        return raw, usage
    if not isinstance(obj, dict):
        return raw, usage
    usage.absorb(kind, obj)
    info = route_info(usage)
    end = raw.rstrip()
    if obj and "ppd" not in obj and raw[:1] in _UTF8_OBJECT_START and end.endswith(b"}"):
        # the worker's own bytes, with ``"ppd": ...`` spliced in before the closing brace:
        # re-serialising the whole answer cost more than parsing it. (UTF-8 only: json.loads also
        # takes UTF-16/32 and a BOM, which start otherwise or end in a NUL; those are re-serialised.)
        return b"".join((end[:-1], b', "ppd": ', info_json(info), b"}")), usage
    obj = json.loads(raw)  # re-serialised: the stdlib's exact objects (see _read)
    obj["ppd"] = info
    return json.dumps(obj).encode(), usage


def _read(raw: bytes) -> Any:
    """Parse a worker's JSON to READ it (usage, errors, finish): ``json.loads``'s object for any
    input, bar integers past 64 bits (orjson makes them floats: never a token count). What orjson
    refuses and the stdlib accepts (NaN, 1e400, lone surrogates, a BOM, UTF-16, deep nesting)
    goes to ``json.loads``. An object to re-serialise is parsed by ``json.loads`` itself."""
    if _orjson_loads is not None:
        try:
            return _orjson_loads(raw)
        except ValueError:  # orjson.JSONDecodeError is a json.JSONDecodeError
            pass
    return json.loads(raw)


def info_json(info: dict[str, Any]) -> bytes:
    """The ``ppd`` field (``ppd_sdk.wire.route_body``) as JSON: the same object as ``json.dumps``
    gives, written by orjson (compact separators, non-ASCII as UTF-8) unless one of the predicted
    figures is not finite - orjson would write null where the stdlib writes ``Infinity``/``NaN``,
    which the SDK reads back as the floats they were."""
    if _orjson_dumps is not None:
        predicted = info.get("predicted")
        if predicted is None or (isinstance(predicted, dict) and all(map(_finite, predicted.values()))):
            try:
                return _orjson_dumps(info)
            except TypeError:  # an integer past 64 bits, a type orjson does not know
                pass
    return json.dumps(info).encode()


def _finite(candidate: Any) -> bool:
    return isinstance(candidate, dict) and all(math.isfinite(v) for v in candidate.values() if isinstance(v, float))


class SSEShaper:
    """Incremental SSE relay: ``feed(bytes) -> bytes to send``; ``flush()`` at the end."""

    def __init__(
        self,
        kind: Kind,
        client_wants_usage: bool,
        route_info: RouteInfoFn,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.kind = kind
        self.client_wants_usage = client_wants_usage
        self.route_info = route_info
        self.clock = clock
        self.usage = TurnUsage()
        self.saw_done = False
        self.saw_error = False
        self.malformed: str | None = None  # why the worker's stream is garbage, once it is
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.saw_done or self.malformed is not None:
            return b""  # nothing may follow [DONE]; nothing is relayed past garbage
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:  # a CR that ends this chunk stays and meets its LF in the next one
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._buf = buf
            if len(buf) > MAX_EVENT_BYTES:
                self.malformed = f"an SSE event longer than {MAX_EVENT_BYTES} bytes"
            return b""
        *events, self._buf = buf.split(b"\n\n")
        if len(events) == 1:
            return self._checked(events[0])
        out = []
        for event in events:
            out.append(self._checked(event))
            if self.saw_done or self.malformed is not None:
                break
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        if self.saw_done or self.malformed is not None or not rest.strip():
            return b""
        return self._checked(rest)

    def _checked(self, event: bytes) -> bytes:
        try:
            return self._event(event)
        except _Malformed as e:
            self.malformed = str(e)
            return b""

    def _event(self, event: bytes) -> bytes:
        out = event + b"\n\n"
        if event.startswith(b"data:") and b"\n" not in event:  # the usual one-line event
            payload = event[5:].strip()
        else:
            data = _data_lines(event)
            if data is None:  # comments, event/id/retry only
                return out
            payload = data.strip()
        if payload == b"[DONE]":
            self.saw_done = True
            return out
        if payload[:1] != b"{" or payload[-1:] != b"}":
            raise _Malformed(f"a data line that is not a JSON object: {_excerpt(payload)}")
        now = self.clock()
        if self.kind == "generate":
            return self._generate_event(payload, now, out)
        if b'"usage"' in payload or b'"error"' in payload:
            obj = _parse(payload)
            if "error" in obj:
                self.saw_error = True
                return out
            if isinstance(obj.get("usage"), dict):
                self.usage.absorb(self.kind, obj)
                if not obj.get("choices"):
                    if not self.client_wants_usage:
                        return b""
                    return self._with_ppd(obj, payload)
        self._token(now)
        return out

    def _generate_event(self, payload: bytes, now: float, out: bytes) -> bytes:
        obj = _parse(payload)
        if "error" in obj:
            self.saw_error = True
            return out
        self._token(now)
        self.usage.absorb("generate", obj)
        meta = obj.get("meta_info")
        if isinstance(meta, dict) and meta.get("finish_reason") is not None:
            return self._with_ppd(obj, payload)
        return out

    def _with_ppd(self, obj: dict[str, Any], payload: bytes) -> bytes:
        """The event ``obj`` (parsed from ``payload``) with ``ppd`` added: the worker's own bytes
        with ``"ppd": ...`` spliced in before the closing brace (as :func:`shape_json`), re-serialised
        only when the worker sent a ``ppd`` of its own (replaced), an empty object, or a multi-line
        event (one ``data:`` line goes out)."""
        info = self.route_info(self.usage)
        if obj and "ppd" not in obj and b"\n" not in payload:  # payload: '{...}' (checked by _event)
            return b"".join((b"data: ", payload[:-1], b', "ppd": ', info_json(info), b"}\n\n"))
        obj = json.loads(payload)  # re-serialised: the stdlib's exact objects (see _read)
        obj["ppd"] = info
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    def _token(self, now: float) -> None:
        if self.usage.first_token_at is None:
            self.usage.first_token_at = now
        self.usage.last_token_at = now


def _data_lines(event: bytes) -> bytes | None:
    """The joined ``data`` values of a multi-line event (None: no data line); raises _Malformed
    on a line that is neither an SSE field nor a comment."""
    data = []
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if name not in _SSE_FIELDS:
            raise _Malformed(f"not an SSE line: {_excerpt(line)}")
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        obj = _read(payload)
    except (ValueError, RecursionError):
        raise _Malformed(f"a data line that is not JSON: {_excerpt(payload)}") from None
    if not isinstance(obj, dict):
        raise _Malformed(f"a data line that is not a JSON object: {_excerpt(payload)}")
    return obj


def _excerpt(raw: bytes) -> str:
    return repr(raw[:60]) + ("..." if len(raw) > 60 else "")
