"""Shaping worker responses for the client: observe tokens and timings, attach ``ppd``.

Non-streaming: the worker's JSON gets a ``ppd`` field (the :class:`ppd_sdk.wire.RouteInfo`).
Streaming (SSE): events are relayed as soon as each one is complete; only the events that
carry usage (OpenAI: the final ``choices: []`` chunk; ``/generate``: every chunk's
``meta_info``) are parsed. The router always asks the worker for ``include_usage`` so it can
observe prompt/cached tokens; if the client did not ask, that extra usage chunk is dropped,
otherwise it carries ``ppd``. On ``/generate`` the chunk with a ``finish_reason`` carries it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

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


def shape_json(kind: Kind, raw: bytes, route_info: RouteInfoFn) -> tuple[bytes, TurnUsage]:
    """Add ``ppd`` to a non-streamed JSON answer; batches (lists) and non-JSON pass untouched."""
    usage = TurnUsage()
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw, usage
    if not isinstance(obj, dict):
        return raw, usage
    usage.absorb(kind, obj)
    obj["ppd"] = route_info(usage)
    return json.dumps(obj).encode(), usage


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
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        if b"\n\n" not in self._buf:
            return b""
        *events, self._buf = self._buf.split(b"\n\n")
        return b"".join(self._event(e) for e in events)

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return self._event(rest) if rest.strip() else b""

    def _event(self, event: bytes) -> bytes:
        out = event + b"\n\n"
        if not event.startswith(b"data:"):
            return out
        payload = event[5:].strip()
        if payload == b"[DONE]":
            self.saw_done = True
            return out
        now = self.clock()
        if self.kind == "generate":
            return self._generate_event(payload, now, out)
        if b'"usage"' in payload or b'"error"' in payload:
            try:
                obj = json.loads(payload)
            except ValueError:
                return out
            if isinstance(obj, dict) and "error" in obj:
                self.saw_error = True
                return out
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                self.usage.absorb(self.kind, obj)
                if not obj.get("choices"):
                    if not self.client_wants_usage:
                        return b""
                    obj["ppd"] = self.route_info(self.usage)
                    return b"data: " + json.dumps(obj).encode() + b"\n\n"
        self._token(now)
        return out

    def _generate_event(self, payload: bytes, now: float, out: bytes) -> bytes:
        try:
            obj = json.loads(payload)
        except ValueError:
            return out
        if not isinstance(obj, dict):
            return out
        if "error" in obj:
            self.saw_error = True
            return out
        self._token(now)
        self.usage.absorb("generate", obj)
        meta = obj.get("meta_info")
        if isinstance(meta, dict) and meta.get("finish_reason") is not None:
            obj["ppd"] = self.route_info(self.usage)
            return b"data: " + json.dumps(obj).encode() + b"\n\n"
        return out

    def _token(self, now: float) -> None:
        if self.usage.first_token_at is None:
            self.usage.first_token_at = now
        self.usage.last_token_at = now
