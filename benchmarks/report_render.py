"""Turn the report's saved figures (``benchmarks/report/*.json``) into REPORT.md and its PNGs.

Pure rendering: no simulation, no processes. ``render(meta, sim, live, validation, data_dir)``
returns the markdown text and writes the PNGs into ``data_dir`` (matplotlib, Agg backend).
Every figure is captioned with the command and conditions that produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report_render_live import live_rows, plot_live, render_live, render_live_weights  # noqa: F401 - re-exported
from report_render_util import COLORS, POLICY_ORDER, _get, _ms, _pct, _plt  # noqa: F401 - re-exported
from sim_grid import format_gap

# -- (a) sim grid --------------------------------------------------------------------------------------


def _rows(sim: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in sim.get("grids", []) for r in g["rows"]]


def _policies(rows: list[dict[str, Any]]) -> list[str]:
    seen = list(rows[0]["attainment"]) if rows else []
    return [p for p in POLICY_ORDER if p in seen] + [p for p in seen if p not in POLICY_ORDER]


def plot_grid(sim: dict[str, Any], data_dir: Path) -> list[tuple[str, str]]:
    """One PNG per cluster: SLO attainment (top) and turn-2+ TTFT p50 (bottom) vs load, per workload."""
    plt = _plt()
    from matplotlib import ticker

    rows = _rows(sim)
    out = []
    for cluster in dict.fromkeys(r["cluster"] for r in rows):
        crow = [r for r in rows if r["cluster"] == cluster]
        workloads = list(dict.fromkeys(r["workload"] for r in crow))
        fig, axes = plt.subplots(2, len(workloads), figsize=(3.2 * len(workloads), 5.6), squeeze=False)
        for j, w in enumerate(workloads):
            wr = sorted((r for r in crow if r["workload"] == w), key=lambda r: r["qps"])
            xs = [r["qps"] for r in wr]
            for pol in _policies(wr):
                att = [100 * (r["attainment"].get(pol) or 0) for r in wr]
                ttft = [r["turn2plus_ttft_p50_ms"].get(pol) for r in wr]
                style = {"color": COLORS.get(pol), "lw": 2.2 if pol == "ppd" else 1.2, "marker": "o", "ms": 3}
                axes[0][j].plot(xs, att, label=pol, **style)
                axes[1][j].plot(xs, [t if t is not None else float("nan") for t in ttft], **style)
            bad = [r for r in wr if r["violations"]]
            if bad:
                axes[0][j].scatter(
                    [r["qps"] for r in bad],
                    [100 * (r["attainment"].get("ppd") or 0) for r in bad],
                    s=80,
                    facecolors="none",
                    edgecolors="k",
                    zorder=5,
                    label="invariant broken",
                )
            axes[0][j].set_title(w, fontsize=9)
            axes[0][j].set_ylim(-3, 103)
            axes[1][j].set_yscale("log")
            axes[1][j].yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axes[1][j].yaxis.set_minor_formatter(ticker.NullFormatter())
            axes[1][j].set_xlabel("new conversations/s", fontsize=8)
        axes[0][0].set_ylabel("SLO attainment %")
        axes[1][0].set_ylabel("turn-2+ TTFT p50 ms")
        axes[0][-1].legend(fontsize=7, loc="lower left")
        fig.suptitle(
            f"{cluster}: simulated Llama-3.1-8B/H100, router fitted online from the built-in profile", fontsize=10
        )
        fig.tight_layout()
        name = f"sim_{cluster}.png"
        fig.savefig(data_dir / name, dpi=90)
        plt.close(fig)
        out.append((cluster, name))
    return out


def grid_table(rows: list[dict[str, Any]]) -> str:
    pols = _policies(rows)
    head = [
        "cluster",
        "workload",
        "load",
        "qps",
        *[f"{p} SLO%" for p in pols],
        "t2 TTFT p50 ppd / pd ms",
        "ppd - pd ms (SE)",
        "ppd TPOT p50",
        "ppd local",
        "check",
        "seeds losing",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        check = "ok" if not r["violations"] else "**" + "; ".join(r["violations"]) + "**"
        per_seed = r.get("seed_violations") or {}
        losing = ", ".join(s for s, v in per_seed.items() if v) or "none"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["cluster"],
                    r["workload"],
                    r["load"],
                    f"{r['qps']:g}",
                    *[_pct(r["attainment"].get(p)) for p in pols],
                    f"{_ms(r['turn2plus_ttft_p50_ms'].get('ppd'))} / {_ms(r['turn2plus_ttft_p50_ms'].get('pd'))}",
                    _gap(r.get("turn2plus_ttft_p50_gap_ms")),
                    _ms(r["tpot_p50_ms"].get("ppd")),
                    _pct(r["turn2plus_local_share"].get("ppd")),
                    check,
                    f"{losing} (of {len(per_seed)})" if per_seed else "",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _gap(gap: dict[str, Any] | None) -> str:
    """The saved paired gap (``turn2plus_ttft_p50_gap_ms``; absent in runs saved before it)."""
    return format_gap(((gap or {}).get("mean"), (gap or {}).get("se")))


def grid_headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [r for r in rows if r["violations"]]
    ratios = sorted(
        r["turn2plus_ttft_p50_ms"]["ppd"] / r["turn2plus_ttft_p50_ms"]["pd"]
        for r in rows
        if r["turn2plus_ttft_p50_ms"].get("ppd") and r["turn2plus_ttft_p50_ms"].get("pd")
    )
    gains = [(r["attainment"].get("ppd") or 0) - (r["attainment"].get("pd") or 0) for r in rows]
    seeds = list(rows[0].get("seed_violations") or {}) if rows else []
    return {
        "cells": len(rows),
        "violating": len(bad),
        "seeds": seeds,
        "violating_per_seed": {s: sum(bool(r["seed_violations"][s]) for r in rows) for s in seeds},
        "ttft2_ratio_median": ratios[len(ratios) // 2] if ratios else None,
        "attainment_gain_vs_pd_max": max(gains) if gains else None,
        "bad": bad,
    }


def plot_weights(w: dict[str, Any], data_dir: Path) -> str:
    plt = _plt()
    pts = w["points"]
    xs = [p["w_tpot"] for p in pts]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(xs, [100 * (p["local_share"] or 0) for p in pts], "o-", color="#d62728", label="turns 2+ local %")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("w_tpot (w_ttft = 1)")
    ax.set_ylabel("local share %")
    ax2 = ax.twinx()
    ax2.plot(xs, [p["tpot_p50_ms"] for p in pts], "s--", color="#1f77b4", label="TPOT p50 ms")
    ax2.set_ylabel("TPOT p50 ms")
    fig.legend(fontsize=8, loc="upper right")
    ax.set_title(f"ppd, {w['cluster']} {w['workload']} at {w['qps']:g} conv/s (simulated)", fontsize=9)
    fig.tight_layout()
    fig.savefig(data_dir / "sim_weights.png", dpi=90)
    plt.close(fig)
    return "sim_weights.png"


def _over_seeds(seeds: list[str]) -> str:
    return f" on the means over seeds {', '.join(seeds)}" if len(seeds) > 1 else ""


def render_sim(sim: dict[str, Any] | None, data_dir: Path) -> list[str]:
    if not sim or not sim.get("grids"):
        return ["## a. Simulated grid", "", "_Not run._", ""]
    rows = _rows(sim)
    h = grid_headline(rows)
    md = ["## a. The paper's experiments in ppd-sim", ""]
    md.append(
        f"**{h['cells']} cells, {h['violating']} where ppd loses{_over_seeds(h['seeds'])}** (SLO attainment below "
        "the best of pd, local and "
        "threshold:512 minus 2 points, or turn-2+ TTFT p50 above pd's). Median turn-2+ TTFT p50 ppd/pd over all "
        f"cells: {h['ttft2_ratio_median']:.2f}."
        if h["ttft2_ratio_median"] is not None
        else ""
    )
    if len(h["seeds"]) > 1:
        each = ", ".join(f"seed {s}: {n}" for s, n in h["violating_per_seed"].items())
        md.append("")
        md.append(
            f"Every cell ran with seeds {', '.join(h['seeds'])} (other conversations and arrivals each); the figures "
            f"and the check are the means over them. Cells losing on one seed alone: {each}. One 30-s seed is one "
            "noisy sample: near saturation, p50s 1-3% apart swap order from seed to seed. `ppd - pd ms (SE)` is "
            "ppd's turn-2+ TTFT p50 minus pd's, paired by seed, with its standard error over the seeds: a loss "
            "within about two SE is the seed-to-seed noise (one local turn can move a run's p50 by ~1 ms), one "
            "beyond it is ppd's."
        )
    md.append("")
    for g in sim["grids"]:
        md.append(
            f"- `{g['command']}` ({g['seconds']:.0f} s here; SLO {g['slo_ttft_ms']:g} ms TTFT / "
            f"{g['slo_tpot_ms']:g} ms TPOT, {g['duration_s']:g} s of arrivals per run, "
            f"ppd-sim {' '.join(g['sim_args'])} {' '.join(g['router_args'])})"
        )
    md += [
        "",
        "Loads: pd runs at 1, 2, 4, ... new conversations/s until its SLO attainment drops below 90%; the last rate "
        "that held is pd's saturation, and the grid runs at the listed multiples of it. Simulated figures (roofline "
        "step-time model), not measurements.",
        "",
    ]
    for cluster, name in plot_grid(sim, data_dir):
        md += [
            f"![{cluster}](report/{name})",
            "",
            f"_{cluster}: SLO attainment and turn-2+ TTFT p50 vs load; circles = cells "
            "where the invariant breaks. Commands above._",
            "",
        ]
    md += ["<details><summary>Every cell</summary>", "", grid_table(rows), "", "</details>", ""]
    w = sim.get("weights")
    if w:
        name = plot_weights(w, data_dir)
        pts = w["points"]
        mono = not w.get("violations")
        md += [
            "### TPOT weight sweep",
            "",
            f"![weights](report/{name})",
            "",
            f"_`{w['command']}` ({w['seconds']:.0f} s here); no SLO target, so the weights alone decide. Each "
            "point is the mean over the seeds; the step is the change in local share from the previous weight, "
            "paired by seed, with its standard error over the seeds._",
            "",
            "| w_tpot | turns 2+ local | step, points (SE) | TPOT p50 ms | turn-2+ TTFT p50 ms |",
            "|---|---|---|---|---|",
        ]
        md += [
            f"| {p['w_tpot']:g} | {_pct(p['local_share'])}% | {_step(p)} | {_ms(p['tpot_p50_ms'])} | "
            f"{_ms(p['ttft2_p50_ms'])} |"
            for p in pts
        ]
        verdict = (
            "never rise as w_tpot rises (TPOT within sim_grid's 1% tolerance)"
            if mono
            else "**do not fall monotonically**: " + "; ".join(w["violations"])
        )
        md += ["", f"Local share and TPOT p50 {verdict}.", ""]
    return md


def _step(p: dict[str, Any]) -> str:
    """A sweep point's paired change in local share, in points, with its standard error."""
    step, se = p.get("local_step"), p.get("local_step_se")
    if step is None:
        return "-"
    return f"{100 * step:+.1f}" + (f" ({100 * se:.1f})" if se is not None else "")


# -- (b) live comparison: report_render_live ------------------------------------------------------------


# -- (c) validation ----------------------------------------------------------------------------------


def plot_validation(v: dict[str, Any], data_dir: Path) -> str:
    plt = _plt()
    metrics = v["metrics"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    xs = range(len(metrics))
    ax.bar([x - 0.2 for x in xs], [m["measured"] or 0 for m in metrics], 0.4, label="measured", color="#7f7f7f")
    ax.bar([x + 0.2 for x in xs], [m["simulated"] or 0 for m in metrics], 0.4, label="ppd-sim", color="#d62728")
    ax.set_xticks(list(xs), [m["name"] for m in metrics], fontsize=8)
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(data_dir / "validation.png", dpi=90)
    plt.close(fig)
    return "validation.png"


def render_validation(val: dict[str, Any] | None, data_dir: Path) -> list[str]:
    md = ["## c. The simulator against the measurements", ""]
    if not val:
        return md + ["_Not run._", ""]
    v = val["doc"]
    md += [f"`{val['command']}` ({val['seconds']:.0f} s here). {v.get('conditions', '')}", ""]
    if v.get("metrics"):
        md += [
            f"![validation](report/{plot_validation(v, data_dir)})",
            "",
            "| metric | measured | ppd-sim | sim / measured | within 25% |",
            "|---|---|---|---|---|",
        ]
        for m in v["metrics"]:
            ok = "yes" if m.get("ok") else "**no**"
            md.append(
                f"| {m['name']} | {_ms(m['measured'])} | {_ms(m['simulated'])} | {m['ratio']:.2f} | {ok} |"
                if m.get("ratio") is not None
                else f"| {m['name']} | - | - | - | - |"
            )
    for line in v.get("notes", []):
        md.append(f"- {line}")
    return md + [""]


def render(
    meta: dict[str, Any],
    sim: dict[str, Any] | None,
    live: dict[str, Any] | None,
    validation: dict[str, Any] | None,
    data_dir: Path,
    live_weights: dict[str, Any] | None = None,
) -> str:
    def fmt(secs: dict[str, float]) -> str:
        return ", ".join(f"{k} {v / 60:.1f} min" if v >= 60 else f"{k} {v:.0f} s" for k, v in secs.items())

    took = fmt(meta["seconds"])
    rec = meta.get("recorded") or {}
    if rec and (meta["reused"]["sim"] or meta["reused"]["live"]):
        took += f" (each part as last run: {fmt(rec)}; all together {sum(rec.values()) / 60:.0f} min)"
    md = [
        "# PPD: the report",
        "",
        f"Regenerated by `{' '.join(meta['argv'])}` on {meta['generated']} at commit {meta['git']} "
        f"({meta['machine']}); "
        f"this run took {took}."
        + (" Sim figures reused from a saved run." if meta["reused"]["sim"] else "")
        + (" Live figures (b, c) reused from a saved run." if meta["reused"]["live"] and (live or validation) else ""),
        "",
        "Three parts: (a) the PPD paper's experiments in `ppd-sim` (simulated GPU fleets), (b) the same policies "
        "measured on the embedded CPU cluster against sglang-router, (c) how far the simulator is from the "
        "measurements.",
        "",
    ]
    md += render_sim(sim, data_dir)
    md += render_live(live, data_dir)
    md += render_live_weights(live_weights)
    md += render_validation(validation, data_dir)
    return "\n".join(md).rstrip() + "\n"
