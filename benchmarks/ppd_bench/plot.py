"""PNG plots of benchmark results (matplotlib, Agg backend: no display needed).

* ``latency_vs_load.png``: turn-2+ TTFT p50/p99 and TPOT p50 against the offered load (new
  sessions/s), one line per system (a result's ``label``); a point whose run had failures or hit
  its deadline is marked with a red x;
* ``ttft_tpot_tradeoff.png``: turn-2+ TTFT p50 against TPOT p50, one point per result, labelled
  with the system and its TTFT:TPOT weights;
* ``route_share.png``: the share of turn-2+ requests routed D-local over the run's time (10 s
  bins), one line per result that reports routes.

Inputs are result documents of ``ppd-bench run`` or ``compare`` (whose systems are expanded).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def load_results(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Run results from files of ``run --out`` or ``compare --out``; ValueError names a bad file."""
    out: list[dict[str, Any]] = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
        except OSError as e:
            raise ValueError(f"cannot read result {p!r}: {e.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"result {p!r} is not JSON") from None
        out.extend(expand(doc, p))
    if not out:
        raise ValueError("no result with figures in " + ", ".join(map(repr, paths)))
    return out


def expand(doc: Any, where: str = "result") -> list[dict[str, Any]]:
    """A run result as a one-element list; a comparison as its systems' results."""
    if isinstance(doc, dict) and isinstance(doc.get("systems"), list):
        return [s["result"] for s in doc["systems"] if isinstance(s, dict) and isinstance(s.get("result"), dict)]
    if isinstance(doc, dict) and "summary" in doc and "load" in doc:
        return [doc]
    raise ValueError(f"{where!r} is not a ppd-bench result (run or compare)")


def _label(r: dict[str, Any]) -> str:
    return r.get("label") or r.get("url") or "?"


def _weights(r: dict[str, Any]) -> str:
    c = r.get("config", {})
    return f"{c.get('w_ttft', 1):g}:{c.get('w_tpot', 1):g}"


def _failed(r: dict[str, Any]) -> bool:
    return bool(r.get("hit_deadline")) or (r["summary"]["all"].get("success_rate") or 0) < 1.0


def plot_all(results: Sequence[dict[str, Any]], out_dir: str | Path) -> list[str]:
    """Draw every plot into ``out_dir`` (created); returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --out {str(out_dir)!r}: {e.strerror}") from None
    paths = [latency_vs_load(results, out / "latency_vs_load.png"), tradeoff(results, out / "ttft_tpot_tradeoff.png")]
    share = route_share(results, out / "route_share.png")
    if share:
        paths.append(share)
    return paths


def latency_vs_load(results: Sequence[dict[str, Any]], path: Path) -> str:
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        series[_label(r)].append(r)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("turn2plus", "ttft_ms", "p50", "turn 2+ TTFT p50 (ms)"),
        ("turn2plus", "ttft_ms", "p99", "turn 2+ TTFT p99 (ms)"),
        ("all", "tpot_ms", "p50", "TPOT p50 (ms)"),
    ]
    for ax, (cls, metric, q, title) in zip(axes, panels):
        for label, rs in sorted(series.items()):
            rs = sorted(rs, key=lambda r: r["load"]["sessions_per_s"])
            xs = [r["load"]["sessions_per_s"] for r in rs]
            ys = [r["summary"][cls][metric][q] for r in rs]
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o", label=label)
            bad = [(x, y) for x, y, r in zip(xs, ys, rs) if _failed(r) and y is not None]
            if bad:
                ax.scatter(*zip(*bad), marker="x", s=90, color="red", zorder=5, label=None)
        ax.set_xlabel("offered load (new sessions/s)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("latency vs load (red x: the run had failed turns or hit its deadline)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def tradeoff(results: Sequence[dict[str, Any]], path: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in results:
        x = r["summary"]["turn2plus"]["tpot_ms"]["p50"]
        y = r["summary"]["turn2plus"]["ttft_ms"]["p50"]
        if x is None or y is None:
            continue
        ax.scatter([x], [y], marker="x" if _failed(r) else "o", s=60, color="red" if _failed(r) else None)
        ax.annotate(
            f"{_label(r)} w={_weights(r)} @{r['load']['sessions_per_s']:g}/s",
            (x, y),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("turn 2+ TPOT p50 (ms)")
    ax.set_ylabel("turn 2+ TTFT p50 (ms)")
    ax.set_title("TTFT-TPOT trade-off across systems and weights (lower-left is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def route_share(results: Sequence[dict[str, Any]], path: Path, bin_s: float = 10.0) -> str | None:
    import matplotlib.pyplot as plt

    with_routes = [r for r in results if any(rec.get("route") for rec in r.get("records", []))]
    if not with_routes:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in with_routes:
        bins: dict[int, list[bool]] = defaultdict(list)
        for rec in r["records"]:
            if rec.get("turn", 1) >= 2 and rec.get("route"):
                bins[int(rec["sent_s"] // bin_s)].append(rec["route"] == "local")
        if not bins:
            continue
        keys = sorted(bins)
        ax.plot(
            [(k + 0.5) * bin_s for k in keys],
            [100.0 * sum(bins[k]) / len(bins[k]) for k in keys],
            marker="o",
            label=f"{_label(r)} w={_weights(r)} @{r['load']['sessions_per_s']:g}/s",
        )
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("turn 2+ routed D-local (%)")
    ax.set_ylim(-5, 105)
    ax.set_title(f"route share over time ({bin_s:g} s bins)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
