"""Plain-text tables of benchmark results (stdout of ``ppd-bench run`` and ``compare``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _f(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def run_table(result: dict[str, Any]) -> str:
    """One run: a row per turn class."""
    load = result["load"]
    head = (
        f"{result.get('label') or result['url']}: {load['sessions']} sessions ({load['turns']} turns, "
        f"{result.get('workload') or 'workload'}) at {load['sessions_per_s']:g} new sessions/s "
        f"(~{load['offered_requests_per_s']:g} requests/s offered, {load['measured_requests_per_s']} measured), "
        f"{result['wall_s']:.1f}s"
    )
    cols = (
        f"{'class':<10} {'turns':>5} {'ok%':>5} {'TTFT p50':>9} {'p90':>7} {'p99':>7} {'TPOT p50':>9} {'p90':>7} "
        f"{'E2E p50':>8} {'SLO%':>5} {'local':>6} {'cached':>7} {'out tok/s':>9}"
    )
    rows = [head, cols]
    for name in ("turn1", "turn2plus", "all"):
        s = result["summary"][name]
        rows.append(
            f"{name:<10} {s['turns']:>5} {_pct(s['success_rate']):>5} {_f(s['ttft_ms']['p50']):>9} "
            f"{_f(s['ttft_ms']['p90']):>7} "
            f"{_f(s['ttft_ms']['p99']):>7} {_f(s['tpot_ms']['p50'], 1):>9} {_f(s['tpot_ms']['p90'], 1):>7} "
            f"{_f(s['e2e_ms']['p50']):>8} {_pct(s['slo_attainment']):>5} "
            f"{_pct(s['route_share'].get('local', 0.0) if s['ok'] else None):>6} "
            f"{_pct(s['cached_share']):>7} {_f(s['output_tokens_per_s'], 1):>9}"
        )
    return "\n".join(rows)


def compare_table(systems: Sequence[dict[str, Any]], baseline: str | None = None) -> str:
    """Systems side by side (one row each); ratios against ``baseline``'s turn-2+ TTFT/TPOT p50."""
    base = next((s for s in systems if baseline and s["system"] == baseline and s.get("result")), None)
    baseline = baseline or ""
    b_ttft = base["result"]["summary"]["turn2plus"]["ttft_ms"]["p50"] if base else None
    b_tpot = base["result"]["summary"]["turn2plus"]["tpot_ms"]["p50"] if base else None
    cols = (
        f"{'system':<16} {'ok%':>5} {'t1 TTFT p50':>11} {'t2+ TTFT p50':>12} {'p90':>7} {'p99':>7} {'TPOT p50':>9} "
        f"{'p90':>7} {'E2E p50':>8} {'local':>6} {'cached':>7} {'out tok/s':>9}"
    )
    if base:
        cols += f" {'TTFT/' + baseline:>{6 + len(baseline)}} {'TPOT/' + baseline:>{6 + len(baseline)}}"
    rows = [cols]
    for s in systems:
        res = s.get("result")
        if not res:
            rows.append(f"{s['system']:<16} not run: {s.get('error', 'unknown')}")
            continue
        a, t2 = res["summary"]["all"], res["summary"]["turn2plus"]
        t1 = res["summary"]["turn1"]
        row = (
            f"{s['system']:<16} {_pct(a['success_rate']):>5} {_f(t1['ttft_ms']['p50']):>11} "
            f"{_f(t2['ttft_ms']['p50']):>12} "
            f"{_f(t2['ttft_ms']['p90']):>7} {_f(t2['ttft_ms']['p99']):>7} {_f(t2['tpot_ms']['p50'], 1):>9} "
            f"{_f(t2['tpot_ms']['p90'], 1):>7} {_f(t2['e2e_ms']['p50']):>8} "
            f"{_pct(t2['route_share'].get('local', 0.0) if t2['ok'] else None):>6} {_pct(t2['cached_share']):>7} "
            f"{_f(a['output_tokens_per_s'], 1):>9}"
        )
        if base:
            r1 = t2["ttft_ms"]["p50"] / b_ttft if b_ttft and t2["ttft_ms"]["p50"] is not None else None
            r2 = t2["tpot_ms"]["p50"] / b_tpot if b_tpot and t2["tpot_ms"]["p50"] is not None else None
            row += f" {_f(r1, 2):>{6 + len(baseline)}} {_f(r2, 2):>{6 + len(baseline)}}"
        rows.append(row)
    return "\n".join(rows)
