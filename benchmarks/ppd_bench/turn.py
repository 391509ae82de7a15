"""One benchmark turn: a streamed chat request carrying the PPD hints, timed, read back.

TTFT is the first chunk that carries a choice; TPOT the rest of the answer over its remaining
tokens (the server's ``usage.completion_tokens``). The routing decision comes back from the
``ppd`` field of the final chunk (route, workers, the policy's reason and its predictions per
candidate) or the ``X-PPD-*`` headers; cached tokens from ``usage.prompt_tokens_details``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from ppd_bench.stats import TurnRecord
from ppd_sdk.wire import BODY_FIELD, HEADER_DECODE, HEADER_PREFILL, HEADER_ROUTE, SLO, Hints, Weights

if TYPE_CHECKING:
    from ppd_bench.driver import RunConfig


async def send_turn(
    client: httpx.AsyncClient,
    model: str,
    cfg: RunConfig,
    now: Callable[[], float],
    cid: str,
    session: str,
    turn: int,
    messages: list[dict[str, Any]],
    n_in: int,
    n_out: int,
) -> tuple[TurnRecord, str]:
    """One streamed chat turn; (its record, the answer's text)."""
    hints = Hints(
        conversation_id=cid,
        turn=turn,
        weights=Weights(ttft=cfg.w_ttft, tpot=cfg.w_tpot),
        slo=SLO(ttft_ms=cfg.slo_ttft_ms, tpot_ms=cfg.slo_tpot_ms),
    )
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": n_out,
        "temperature": 0.0,
    }
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    # the SDK's one fold of the hints: id as header + prompt_cache_key, SLOs as headers, weights in `ppd`
    hint_headers, body = hints.apply(None, body, ppd_body=cfg.body_hints)
    sent = now()
    first: float | None = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    ppd: dict[str, Any] = {}
    finish: str | None = None
    headers: httpx.Headers | None = None
    error: str | None = None
    try:
        async with client.stream("POST", "/chat/completions", json=body, headers=hint_headers) as resp:
            headers = resp.headers
            if resp.status_code != 200:
                raw = (await resp.aread()).decode("utf-8", "replace")
                error = f"HTTP {resp.status_code}: {_error_message(raw)}"
            else:
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        error = f"stream error: {_error_message(json.dumps(chunk))}"
                        break
                    choices = chunk.get("choices") or []
                    if choices and first is None:
                        first = now()
                    for c in choices:
                        content = (c.get("delta") or {}).get("content")
                        if content:
                            text.append(content)
                        finish = c.get("finish_reason") or finish
                    usage = chunk.get("usage") or usage
                    ppd = chunk.get(BODY_FIELD) or ppd
    except asyncio.CancelledError:
        raise
    except httpx.TimeoutException:
        error = f"timeout after {cfg.request_timeout_s:g}s"
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as e:
        error = f"{type(e).__name__}: {str(e)[:120]}"
    end = now()
    if error is None and (first is None or finish is None):
        error = "stream ended without a token" if first is None else "stream ended without a finish reason"
    completion = usage.get("completion_tokens")
    ttft = (first - sent) * 1000.0 if first is not None else None
    tpot = None
    if error is None and ttft is not None and isinstance(completion, int) and completion > 1:
        tpot = ((end - sent) * 1000.0 - ttft) / (completion - 1)
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None and isinstance(ppd, dict):
        cached = ppd.get("cached_tokens")
    route = (ppd.get("route") if isinstance(ppd, dict) else None) or (headers.get(HEADER_ROUTE) if headers else None)
    decode = (ppd.get("decode") if isinstance(ppd, dict) else None) or (headers.get(HEADER_DECODE) if headers else None)
    prefill = (ppd.get("prefill") if isinstance(ppd, dict) else None) or (
        headers.get(HEADER_PREFILL) if headers else None
    )
    record = TurnRecord(
        session,
        turn,
        round(sent, 4),
        round(end, 4),
        error is None,
        n_in,
        n_out,
        error=error,
        ttft_ms=_r(ttft),
        tpot_ms=_r(tpot),
        e2e_ms=_r((end - sent) * 1000.0) if error is None else None,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=completion,
        cached_tokens=int(cached) if isinstance(cached, int) else None,
        route=route,
        decode=decode,
        prefill=prefill or None,
        reason=_str(ppd.get("reason")) if isinstance(ppd, dict) else None,
        predicted=_predicted(ppd.get("predicted")) if isinstance(ppd, dict) else None,
    )
    return record, "".join(text)


def _str(v: Any) -> str | None:
    return str(v)[:300] if v else None


def _predicted(v: Any) -> dict[str, dict[str, float]] | None:
    """The policy's predictions per candidate route ({route: {ttft_ms, tpot_ms, score}})."""
    if not isinstance(v, dict):
        return None
    out = {}
    for route, p in v.items():
        if isinstance(p, dict):
            out[str(route)] = {k: p[k] for k in ("ttft_ms", "tpot_ms", "score") if isinstance(p.get(k), (int, float))}
    return out or None


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _error_message(raw: str) -> str:
    try:
        data = json.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg)[:160]
    except (json.JSONDecodeError, AttributeError):
        return raw.strip()[:160]
