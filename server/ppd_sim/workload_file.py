"""Workload files: read, validate and write the JSONL session format described in
``ppd_sim.workload`` (shared by ``ppd-bench`` and ``ppd-sim``). Errors name the file, the line
and the bad value."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

from ppd_sim.workload import (
    MAX_SESSIONS,
    MAX_TURN_TOKENS,
    MAX_TURNS,
    Conversation,
    Session,
    Turns,
    WorkloadSpec,
    schedule,
)


def read_sessions(path: str | Path, kind: str = "workload") -> list[Session]:
    """Every session of a workload file (either format). Errors name the file (as ``kind``),
    the line and the value."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {kind} {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    sessions: list[Session] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{kind} {str(path)!r} line {lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON: {e.msg}") from None
        sessions.append(parse_session(data, where, f"s{len(sessions)}"))
        if len(sessions) > MAX_SESSIONS:
            raise ValueError(f"{kind} {str(path)!r} has more than {MAX_SESSIONS} sessions")
    if not sessions:
        raise ValueError(f"{kind} {str(path)!r} has no sessions")
    return sessions


def write_sessions(path: str | Path, sessions: Iterable[Session]) -> int:
    """Write sessions as JSONL; returns how many."""
    n = 0
    with open(path, "w") as f:
        for s in sessions:
            f.write(json.dumps(s.to_json(), separators=(",", ":")) + "\n")
            n += 1
    return n


def _tokens(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TURN_TOKENS


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def parse_session(data: object, where: str, default_id: str) -> Session:
    """One JSONL line (a session object, or the older list of [input, output] pairs)."""
    if isinstance(data, list):
        return Session(default_id, _parse_turns(data, where))
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list) or not data["turns"]:
        raise ValueError(
            f'{where}: expected {{"turns": [{{"input_tokens": N, "output_tokens": M}}, ...]}} '
            f"or a list of [input_tokens, output_tokens] pairs, got {data!r:.80}"
        )
    raw_turns = data["turns"]
    if len(raw_turns) > MAX_TURNS:
        raise ValueError(f"{where}: {len(raw_turns)} turns; the limit is {MAX_TURNS}")
    turns, think, has_think = [], [], True
    for k, t in enumerate(raw_turns):
        if not isinstance(t, dict) or not _tokens(t.get("input_tokens")) or not _tokens(t.get("output_tokens")):
            raise ValueError(
                f"{where}: bad turn {k + 1} {t!r:.80}; input_tokens and output_tokens are integers in "
                f"1..{MAX_TURN_TOKENS}"
            )
        turns.append((t["input_tokens"], t["output_tokens"]))
        if k:
            if "think_ms" in t and not _number(t["think_ms"]):
                raise ValueError(
                    f"{where}: bad think_ms {t['think_ms']!r} in turn {k + 1}; a number of milliseconds >= 0"
                )
            has_think = has_think and "think_ms" in t
            think.append(float(t.get("think_ms", 0.0)))
    arrival = data.get("arrival_ms")
    if arrival is not None and not _number(arrival):
        raise ValueError(f"{where}: bad arrival_ms {arrival!r}; a number of milliseconds >= 0")
    sid = data.get("id", default_id)
    if not isinstance(sid, str) or not sid or len(sid) > 200:
        raise ValueError(f"{where}: bad id {sid!r}; a non-empty string")
    return Session(
        sid, tuple(turns), tuple(think) if has_think else None, float(arrival) if arrival is not None else None
    )


def _parse_turns(data: object, where: str) -> Turns:
    if not isinstance(data, list) or not data:
        raise ValueError(f"{where}: expected a non-empty list of [input_tokens, output_tokens] pairs, got {data!r:.80}")
    if len(data) > MAX_TURNS:
        raise ValueError(f"{where}: {len(data)} turns; the limit is {MAX_TURNS}")
    turns = []
    for pair in data:
        if not (isinstance(pair, list) and len(pair) == 2 and _tokens(pair[0]) and _tokens(pair[1])):
            raise ValueError(
                f"{where}: bad turn {pair!r}; each turn is [input_tokens, output_tokens], integers in "
                f"1..{MAX_TURN_TOKENS}"
            )
        turns.append((pair[0], pair[1]))
    return tuple(turns)


def load_trace(path: str | Path, spec: WorkloadSpec) -> tuple[Conversation, ...]:
    """Conversations from a workload file (ids ``c0, c1, ...``), started at ``spec.qps`` (Poisson)
    until the file or the duration ends, or at the file's own ``arrival_ms`` when every session
    has one. Missing think times are exponential with mean ``spec.think_s``."""
    spec.validate()
    sessions = read_sessions(path, "trace")
    convs = schedule(sessions, spec.qps, spec.seed, duration_s=spec.duration_s, think_s=spec.think_s)
    return tuple(Conversation(f"c{k}", c.arrival_ms, c.turns, c.think_ms) for k, c in enumerate(convs))
