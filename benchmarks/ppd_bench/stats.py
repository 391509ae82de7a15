"""What one benchmark run measured: a record per turn, and the per-turn-class summary.

Definitions (the same for every system compared):

* TTFT: request sent -> first streamed chunk that carries a choice (the first token);
* TPOT: (end-to-end - TTFT) / (completion tokens - 1), for turns with at least 2 output tokens;
* E2E: request sent -> stream end;
* success: the stream ended normally with a finish reason and at least one token; anything
  else (HTTP error, timeout, cut stream, run deadline) is a failure and counts against goodput;
* goodput: successful turns meeting every given SLO (TTFT and/or TPOT), per second of the run;
  ``slo_attainment`` is their share of all turns of the class (failures included).

Turn classes: ``turn1`` (a new conversation: nothing cached on purpose), ``turn2plus`` (the
follow-ups PPD may prefill locally), ``all``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class TurnRecord:
    session: str
    turn: int  # 1-based
    sent_s: float  # since the run started
    end_s: float
    ok: bool
    requested_input_tokens: int
    requested_output_tokens: int
    error: str | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    route: str | None = None  # local | pd | replica, from the response (None: a plain server)
    decode: str | None = None
    prefill: str | None = None
    reason: str | None = None  # the policy's reason for the route (the `ppd` body field)
    predicted: dict[str, dict[str, float]] | None = None  # its predictions per candidate route

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution(values: Iterable[float | None]) -> dict[str, float | None]:
    xs = [v for v in values if v is not None]
    out: dict[str, float | None] = {f"p{q}": _round(percentile(xs, q)) for q in PERCENTILES}
    out["mean"] = _round(sum(xs) / len(xs)) if xs else None
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def meets_slo(r: TurnRecord, slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> bool:
    if not r.ok:
        return False
    if slo_ttft_ms is not None and (r.ttft_ms is None or r.ttft_ms > slo_ttft_ms):
        return False
    return slo_tpot_ms is None or r.tpot_ms is None or r.tpot_ms <= slo_tpot_ms


def summarize_class(
    records: Sequence[TurnRecord], wall_s: float, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None
) -> dict[str, Any]:
    """Figures of one turn class over a run that lasted ``wall_s`` seconds."""
    ok = [r for r in records if r.ok]
    good = [r for r in records if meets_slo(r, slo_ttft_ms, slo_tpot_ms)]
    routes = Counter(r.route or "unknown" for r in ok)
    prompt = sum(r.prompt_tokens or 0 for r in ok)
    cached = sum(r.cached_tokens or 0 for r in ok)
    wall = max(wall_s, 1e-9)
    return {
        "turns": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "success_rate": _round(len(ok) / len(records)) if records else None,
        "ttft_ms": distribution(r.ttft_ms for r in ok),
        "tpot_ms": distribution(r.tpot_ms for r in ok),
        "e2e_ms": distribution(r.e2e_ms for r in ok),
        "slo_attainment": _round(len(good) / len(records)) if records else None,
        "goodput_turns_per_s": _round(len(good) / wall),
        "routes": dict(sorted(routes.items())),
        "route_share": {k: _round(v / len(ok)) for k, v in sorted(routes.items())} if ok else {},
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cached_share": _round(cached / prompt) if prompt else None,
        "output_tokens": sum(r.completion_tokens or 0 for r in ok),
        "output_tokens_per_s": _round(sum(r.completion_tokens or 0 for r in ok) / wall),
        "input_tokens_per_s": _round(prompt / wall),
        "errors": dict(Counter(r.error for r in records if not r.ok and r.error).most_common(5)),
    }


def summarize(
    records: Sequence[TurnRecord], wall_s: float, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None
) -> dict[str, dict[str, Any]]:
    """Per turn class: ``turn1``, ``turn2plus`` and ``all``."""
    classes = {
        "turn1": [r for r in records if r.turn == 1],
        "turn2plus": [r for r in records if r.turn >= 2],
        "all": list(records),
    }
    return {name: summarize_class(rs, wall_s, slo_ttft_ms, slo_tpot_ms) for name, rs in classes.items()}
