"""Part b of REPORT.md: the measured CPU comparison (``ppd-bench compare``) and the live
TPOT-weight sweep, rendered from their saved JSON. Pure rendering, like :mod:`report_render`
(which re-exports these functions)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from report_render_util import _get, _ms, _pct, _plt

# -- (b) live comparison -------------------------------------------------------------------------------


def _systems(doc: dict[str, Any]) -> list[dict[str, Any]]:
    systems = doc.get("systems") or []
    return systems if isinstance(systems, list) else [dict(v, label=k) for k, v in systems.items()]


def live_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system of a ``ppd-bench compare`` document (``systems: [{system, result | error}]``)."""
    out = []
    workers = doc.get("workers") or {}
    for s in _systems(doc):
        summary = _get(s, "result", "summary") or s.get("summary") or {}
        t2 = summary.get("turn2plus") or {}
        rounds = [r for r in s.get("rounds") or [] if r.get("busy_share")]

        def busy(role: str, rounds: list[dict[str, Any]] = rounds) -> float | None:
            shares = [r["busy_share"].get(workers.get(role)) for r in rounds]
            shares = [x for x in shares if x is not None]
            return sum(shares) / len(shares) if shares else None

        loads = [r["loadavg"][0] for r in s.get("rounds") or [] if r.get("loadavg")]
        out.append(
            {
                "busy_p": busy("prefill"),
                "busy_d": busy("decode"),
                "loadavg": max(loads) if loads else None,
                "system": s.get("system") or s.get("label") or "?",
                "ttft2_p50": _get(t2, "ttft_ms", "p50"),
                "ttft2_p90": _get(t2, "ttft_ms", "p90"),
                "tpot_p50": _get(t2, "tpot_ms", "p50"),
                "local": _get(t2, "route_share", "local") or (0.0 if t2.get("ok") else None),
                "local_turns": _get(t2, "routes", "local") or 0,
                "turns": t2.get("ok") or 0,
                "success": _get(summary, "all", "success_rate"),
                "error": s.get("error"),
            }
        )
    return out


def plot_live(rows: list[dict[str, Any]], data_dir: Path) -> str:
    plt = _plt()
    rows = [r for r in rows if r["ttft2_p50"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [r["system"] for r in rows]
    axes[0].bar(names, [r["ttft2_p50"] for r in rows], color="#d62728")
    axes[0].set_ylabel("turn-2+ TTFT p50 ms")
    axes[1].bar(names, [r["tpot_p50"] or 0 for r in rows], color="#1f77b4")
    axes[1].set_ylabel("TPOT p50 ms (turns 2+)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(data_dir / "live_compare.png", dpi=90)
    plt.close(fig)
    return "live_compare.png"


def render_live(live: dict[str, Any] | None, data_dir: Path) -> list[str]:
    md = ["## b. Measured: the embedded CPU 1P1D cluster", ""]
    if not live:
        return md + ["_Not run (ppd-bench compare unavailable or failed)._", ""]
    rows = live_rows(live["doc"])
    base = next((r for r in rows if r["system"] == "sglang-router"), None)
    md += [
        f"`{live['command']}` ({live['seconds']:.0f} s here). One pair of ppd-worker processes (SmolLM2-135M, one "
        "core each), every system in front of the same workers, the same sessions and arrivals; measured, noisy "
        "(2-core box shared with other jobs).",
        "",
    ]
    if any(r["ttft2_p50"] is not None for r in rows):
        md += [f"![live](report/{plot_live(rows, data_dir)})", ""]
    md += [
        "| system | turn-2+ TTFT p50 / p90 ms | TPOT p50 ms | turns 2+ local | success "
        "| TTFT p50 / baseline | TPOT p50 / baseline | P / D busy | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["error"] and r["ttft2_p50"] is None:
            md.append(f"| {r['system']} | not run: {r['error']} | | | | | | | |")
            continue
        busy = (
            f"{_pct(r['busy_p'])}% / {_pct(r['busy_d'])}%"
            if r.get("busy_p") is not None and r.get("busy_d") is not None
            else "-"
        )
        load = f"{r['loadavg']:.1f}" if r.get("loadavg") is not None else "-"
        rt = f"{r['ttft2_p50'] / base['ttft2_p50']:.2f}" if base and base["ttft2_p50"] and r["ttft2_p50"] else "-"
        rp = f"{r['tpot_p50'] / base['tpot_p50']:.2f}" if base and base["tpot_p50"] and r["tpot_p50"] else "-"
        md.append(
            f"| {r['system']} | {_ms(r['ttft2_p50'])} / {_ms(r['ttft2_p90'])} | {_ms(r['tpot_p50'])} | "
            f"{_pct(r['local'])}% | "
            f"{_pct(r['success'])}% | {rt} | {rp} | {busy} | {load} |"
        )
    return md + [
        "",
        ("Baseline: sglang-router in PD mode. " if base else "")
        + "P / D busy: the share of the system's run each worker spent in forward passes (its utilisation); "
        "load avg: the machine's 1-minute load average at the end of the system's run (2 cores; other tenants "
        "included).",
        "",
    ]


def render_live_weights(lw: dict[str, Any] | None) -> list[str]:
    """The live TPOT-weight sweep: ppd with each client TPOT weight, same workers, same load."""
    if not lw:
        return []
    rows = live_rows(lw["doc"])
    md = [
        "### TPOT weight, live",
        "",
        f"`{lw['command']}` ({lw['seconds']:.0f} s here): ppd-server --policy ppd in front of the same workers, "
        "each run's clients sending that TPOT weight (TTFT weight 1); same sessions and arrivals; with several "
        "rounds the figures pool them. The workload is not the comparison's above: there the prefill worker is "
        "the bottleneck and local turns are better on TPOT as well (P->D turns queue behind the long first "
        "turns and land on the decode worker together), so a weight has nothing to trade. Here a 512-token "
        "append prefilled on the decode worker stalls its streams while the prefill worker has room: local buys "
        "TTFT with TPOT. The issue asks for the local share and TPOT to fall as the weight rises.",
        "",
        "| w_tpot | turns 2+ local | TPOT p50 ms | turn-2+ TTFT p50 ms | success | P / D busy | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["system"].partition("@tpot=")[2] or r["system"]
        if r["error"] and r["ttft2_p50"] is None:
            md.append(f"| {w} | not run: {r['error']} | | | | | |")
            continue
        busy = (
            f"{_pct(r['busy_p'])}% / {_pct(r['busy_d'])}%"
            if r.get("busy_p") is not None and r.get("busy_d") is not None
            else "-"
        )
        load = f"{r['loadavg']:.1f}" if r.get("loadavg") is not None else "-"
        md.append(
            f"| {w} | {_pct(r['local'])}% ({r['local_turns']} of {r['turns']}) | {_ms(r['tpot_p50'])} | "
            f"{_ms(r['ttft2_p50'])} | {_pct(r['success'])}% | {busy} | {load} |"
        )
    ok = [r for r in rows if r["local"] is not None and r["tpot_p50"] is not None]
    ok.sort(key=lambda r: float(r["system"].partition("@tpot=")[2] or 0))

    def falls(key: str) -> bool:
        return all(b[key] <= a[key] for a, b in itertools.pairwise(ok))

    if len(ok) >= 2:
        rises = [
            f"from w_tpot {a['system'].partition('@tpot=')[2]} to {b['system'].partition('@tpot=')[2]}: "
            f"{a['local_turns']} of {a['turns']} -> {b['local_turns']} of {b['turns']} turns local"
            for a, b in itertools.pairwise(ok)
            if b["local"] > a["local"]
        ]
        md += [
            "",
            f"Local share {'falls' if falls('local') else 'does not fall'} monotonically with the weight"
            + (f" ({'; '.join(rises)})" if rises else "")
            + f"; TPOT p50 {'falls' if falls('tpot_p50') else 'does not fall'} monotonically.",
        ]
    return md + [""]
