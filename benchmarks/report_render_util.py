"""Formatting helpers shared by the report's renderers (numbers, nested lookups, matplotlib)."""

from __future__ import annotations

from typing import Any

POLICY_ORDER = ("pd", "local", "threshold:512", "ratio:0.5", "ppd")
COLORS = {"pd": "#1f77b4", "local": "#ff7f0e", "threshold:512": "#2ca02c", "ratio:0.5": "#9467bd", "ppd": "#d62728"}


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _ms(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
