"""Import a recorded trace into the workload format.

Two recorded shapes are understood:

* a request log, JSONL, one request per line: ``conversation_id``, ``timestamp`` (seconds, or
  ``timestamp_ms``), ``prompt_tokens`` (the whole prompt) and ``completion_tokens``; optional
  ``latency_ms`` (or ``end_timestamp``) to recover think times (without them the gap between
  two turns' starts is taken as the think time). Turns of a conversation are
  ordered by time; a turn's new input is its prompt minus the previous prompt and answer;
  sessions keep their recorded arrival times (relative to the first request).
* ShareGPT-style JSON (a list of ``{"conversations": [{"from": "human"|"gpt", "value": text}]}``):
  token counts are estimated at 1.3 tokens per word; no think times or arrivals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ppd_sim.workload import MAX_TURN_TOKENS, MAX_TURNS, Session


def _clip(n: float) -> int:
    return int(min(MAX_TURN_TOKENS, max(1, round(n))))


def import_trace(path: str | Path) -> list[Session]:
    """Sessions from a recorded trace (see the module doc); ValueError names the file and line."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read trace {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return _sharegpt(json.loads(text), str(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"trace {str(path)!r} is not valid JSON: {e.msg} (line {e.lineno})") from None
    return _request_log(text, str(path))


def _sharegpt(data: Any, path: str) -> list[Session]:
    sessions: list[Session] = []
    for k, item in enumerate(data):
        conv = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(conv, list):
            raise ValueError(f"trace {path!r} item {k}: expected {{'conversations': [...]}}")
        turns: list[tuple[int, int]] = []
        pending: int | None = None
        for msg in conv:
            if not isinstance(msg, dict) or not isinstance(msg.get("value"), str):
                raise ValueError(f"trace {path!r} item {k}: each message needs 'from' and a text 'value'")
            n = _clip(len(msg["value"].split()) * 1.3)
            if msg.get("from") in ("human", "user"):
                pending = n if pending is None else pending + n
            elif msg.get("from") in ("gpt", "assistant") and pending is not None:
                turns.append((pending, n))
                pending = None
        if turns:
            sid = str(item.get("id") or f"s{len(sessions)}")
            sessions.append(Session(sid, tuple(turns[:MAX_TURNS])))
    if not sessions:
        raise ValueError(f"trace {path!r} has no conversation with a human turn and an answer")
    return sessions


def _request_log(text: str, path: str) -> list[Session]:
    rows: dict[str, list[tuple[float, float | None, int, int]]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"trace {path!r} line {lineno}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON: {e.msg}") from None
        if not isinstance(r, dict):
            raise ValueError(
                f"{where}: expected an object with conversation_id, timestamp, prompt_tokens, completion_tokens"
            )
        try:
            cid = str(r["conversation_id"])
            start = float(r["timestamp_ms"]) / 1000.0 if "timestamp_ms" in r else float(r["timestamp"])
            prompt, completion = int(r["prompt_tokens"]), int(r["completion_tokens"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{where}: missing or bad field {e}; need conversation_id, timestamp, prompt_tokens, completion_tokens"
            ) from None
        end = None
        if "latency_ms" in r:
            end = start + float(r["latency_ms"]) / 1000.0
        elif "end_timestamp" in r:
            end = float(r["end_timestamp"])
        rows.setdefault(cid, []).append((start, end, prompt, completion))
    if not rows:
        raise ValueError(f"trace {path!r} has no requests")
    t0 = min(t for reqs in rows.values() for t, *_ in reqs)
    sessions = []
    for cid, reqs in sorted(rows.items(), key=lambda kv: min(r[0] for r in kv[1])):
        reqs.sort()
        turns, think = [], []
        prev_total = 0
        prev_end = 0.0
        for k, (start, end, prompt, completion) in enumerate(reqs[:MAX_TURNS]):
            turns.append((_clip(prompt - prev_total), _clip(completion)))
            if k:
                think.append(max(0.0, (start - prev_end) * 1000.0))
            # Without an end time the gap between starts is the think time (an upper bound).
            prev_total, prev_end = prompt + completion, end if end is not None else start
        sessions.append(Session(cid, tuple(turns), tuple(think), (reqs[0][0] - t0) * 1000.0))
    return sessions
