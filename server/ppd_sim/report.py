"""Summaries of simulated runs: per-policy figures as a dict (for ``--json``) and a side-by-side
text table (one column per policy).

A turn succeeds when it finished within the request timeout (the live router's
``request_timeout_s`` by default) of being sent. Timeouts are counted, not enforced: the simulated
fleet still serves a late turn to its end (as a worker that never hears the client left), so a
late turn's latency stays in the percentiles. Turns never finished (a stalled or stopped run) and
turns never sent (an earlier turn of their conversation never finished) fail; success rate and SLO
attainment are shares of every planned turn."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ppd_server.config import RouterConfig
from ppd_sim.engine import SimResult

DEFAULT_REQUEST_TIMEOUT_S = RouterConfig().request_timeout_s  # ppd-server's --request-timeout


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def summarize(
    result: SimResult,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> dict[str, Any]:
    reqs = result.requests
    done = [r for r in reqs if r.finish_ms is not None]
    timeout_ms = request_timeout_s * 1000.0
    ok = [r for r in done if r.finish_ms - r.arrival_ms <= timeout_ms]  # type: ignore[operator]
    planned_later = result.turns_planned - result.conversations
    later = [r for r in done if r.turn > 1]
    first_ttft = [r.ttft_ms for r in done if r.turn == 1 and r.ttft_ms is not None]
    later_ttft = [r.ttft_ms for r in later if r.ttft_ms is not None]
    tpots = [r.tpot_ms for r in done if r.tpot_ms is not None]

    def meets(r: Any) -> bool:  # r succeeded
        fine = slo_ttft_ms is None or (r.ttft_ms is not None and r.ttft_ms <= slo_ttft_ms)
        return fine and (slo_tpot_ms is None or r.tpot_ms is None or r.tpot_ms <= slo_tpot_ms)

    has_slo = slo_ttft_ms is not None or slo_tpot_ms is not None
    pred_err = [abs(r.predicted_ttft_ms - r.ttft_ms) / r.ttft_ms for r in later if r.ttft_ms and r.predicted_ttft_ms]
    seconds = result.sim_ms / 1000.0
    return {
        "policy": result.policy,
        "turns_planned": result.turns_planned,
        "requests": len(reqs),  # turns sent
        "finished": len(done),
        "unfinished": result.turns_planned - len(done),  # sent and never finished, or never sent
        "never_sent": result.turns_planned - len(reqs),  # an earlier turn of the conversation never finished
        "request_timeout_s": request_timeout_s,
        "timed_out": len(done) - len(ok),  # finished, later than the timeout
        "success_rate": _share(len(ok), result.turns_planned),
        "success_rate_turn2plus": _share(sum(r.turn > 1 for r in ok), planned_later),
        "cut_at_max_tokens": sum(r.cut for r in reqs),
        "stop_reason": result.stop_reason,
        "simulated_s": seconds,
        "throughput_rps": len(done) / seconds if seconds > 0 else 0.0,
        "turn1_ttft_ms": {f"p{q}": percentile(first_ttft, q) for q in (50, 90, 99)},
        "turn2plus_ttft_ms": {f"p{q}": percentile(later_ttft, q) for q in (50, 90, 99)},
        "tpot_ms": {f"p{q}": percentile(tpots, q) for q in (50, 99)},
        "e2e_ms": {f"p{q}": percentile([r.e2e_ms for r in done if r.e2e_ms is not None], q) for q in (50, 99)},
        "turn2plus_local_share": _share(sum(r.route == "local" for r in later), len(later)),
        "kv_gb_moved": result.kv_bytes_moved / 1e9,
        "slo_attainment": _share(sum(meets(r) for r in ok), result.turns_planned) if has_slo else None,
        "slo_attainment_turn2plus": _share(sum(meets(r) for r in ok if r.turn > 1), planned_later) if has_slo else None,
        "turn2plus_ttft_prediction_error_p50": percentile(pred_err, 50),
        "busy_share": {url: round(v, 4) for url, v in result.busy_share.items()},
        "evicted_kv_tokens": result.evicted_tokens,
        "cost_model": result.cost_model,
    }


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_WORKER = re.compile(r"sim://[a-z]\d+")


def reason_kind(reason: str) -> str:
    """A decision reason without its figures: its first clause, numbers as ``#``, workers as
    ``<worker>`` (``pd: over sim://d1's TPOT budget ... (local prefill 11ms > 5.6ms per step)``
    -> ``pd: over <worker>'s TPOT budget ... (local prefill #ms > #ms per step)``)."""
    return _NUMBER.sub("#", _WORKER.sub("<worker>", reason.split(";", 1)[0]))


def reason_counts(result: SimResult, top: int = 8) -> dict[str, Any]:
    """Why turns 2+ went where they went: ``{"turns": n, "top": {kind: count}}`` with the ``top``
    most common reason kinds."""
    counts = Counter(reason_kind(r.reason) for r in result.requests if r.turn > 1)
    return {"turns": sum(counts.values()), "top": dict(counts.most_common(top))}


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.1f}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _max_busy(s: dict[str, Any], prefix: str) -> str:
    vals = [v for url, v in s["busy_share"].items() if url.startswith(prefix)]
    return "-" if not vals else f"{100 * max(vals):.0f}%"


_ROWS: tuple[tuple[str, Any], ...] = (
    ("turns finished", lambda s: f"{s['finished']}/{s['turns_planned']}"),
    ("success (in timeout)", lambda s: _pct(s["success_rate"])),
    ("turn-1 TTFT p50 ms", lambda s: _ms(s["turn1_ttft_ms"]["p50"])),
    ("turn-1 TTFT p90 ms", lambda s: _ms(s["turn1_ttft_ms"]["p90"])),
    ("turn-1 TTFT p99 ms", lambda s: _ms(s["turn1_ttft_ms"]["p99"])),
    ("turn-2+ TTFT p50 ms", lambda s: _ms(s["turn2plus_ttft_ms"]["p50"])),
    ("turn-2+ TTFT p90 ms", lambda s: _ms(s["turn2plus_ttft_ms"]["p90"])),
    ("turn-2+ TTFT p99 ms", lambda s: _ms(s["turn2plus_ttft_ms"]["p99"])),
    ("TPOT p50 ms", lambda s: _ms(s["tpot_ms"]["p50"])),
    ("TPOT p99 ms", lambda s: _ms(s["tpot_ms"]["p99"])),
    ("E2E p50 ms", lambda s: _ms(s["e2e_ms"]["p50"])),
    ("turn-2+ routed local", lambda s: _pct(s["turn2plus_local_share"])),
    ("KV moved GB", lambda s: f"{s['kv_gb_moved']:.1f}"),
    ("SLO attainment", lambda s: _pct(s["slo_attainment"])),
    ("SLO attainment turn-2+", lambda s: _pct(s["slo_attainment_turn2plus"])),
    ("TTFT pred. error p50", lambda s: _pct(s["turn2plus_ttft_prediction_error_p50"])),
    (
        "busiest P / D / R",
        lambda s: f"{_max_busy(s, 'sim://p')} / {_max_busy(s, 'sim://d')} / {_max_busy(s, 'sim://r')}",
    ),
)


def format_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Metrics down, policies across."""
    header = ["", *(s["policy"] for s in summaries)]
    rows = [header] + [[label, *(fmt(s) for s in summaries)] for label, fmt in _ROWS]
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"{s['policy']}: {s['stop_reason']}" for s in summaries if s["stop_reason"]]
    notes += [
        f"{s['policy']}: {s['timed_out']} turns finished after the {s['request_timeout_s']:g} s request timeout "
        "(failed)"
        for s in summaries
        if s["timed_out"]
    ]
    return "\n".join(lines + [f"note: {n}" for n in notes])
