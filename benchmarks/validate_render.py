"""validate_sim.py, the printed part: the comparison table and where a turn-2+ TTFT goes.

Pure formatting over what :mod:`validate_measure`, :mod:`validate_decompose` and
:mod:`validate_compare` produced; no processes.
"""

from __future__ import annotations

from typing import Any


def print_table(rows: list[dict[str, Any]], tolerance: float) -> None:
    print(f"{'metric':<24} {'measured':>10} {'ppd-sim':>10} {'sim/meas':>9}")
    for r in rows:
        digits = 3 if "share" in r["name"] else 1

        def fmt(v: float | None, digits: int = digits) -> str:
            return "-" if v is None else f"{v:.{digits}f}"

        flag = "" if r["ok"] is None else ("  ok" if r["ok"] else f"  OFF by more than {100 * tolerance:g}%")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['name']:<24} {fmt(r['measured']):>10} {fmt(r['simulated']):>10} {ratio:>9}{flag}")


def _predicted_prefill_ms(profile: dict[str, Any], new: float, cached: float) -> float | None:
    from ppd_server.routing.latency import prefill_ms
    from ppd_server.routing.types import CostCoefficients

    try:
        return prefill_ms(CostCoefficients.from_dict(profile["coefficients"]), int(new), int(cached))
    except (KeyError, TypeError, ValueError):
        return None


def decomposition_lines(
    measured: dict[str, Any],
    info: dict[str, Any],
    profile: dict[str, Any],
    tokens: dict[str, Any],
    steps: list[dict[str, Any]],
) -> list[str]:
    """Markdown-ready lines: one measured turn-2+ TTFT taken apart, then what each simulator term moves."""
    out: list[str] = []
    p50 = ((measured.get("summary") or {}).get("turn2plus") or {}).get("ttft_ms", {}).get("p50")
    if tokens:
        out.append(
            f"Turns 2+ as the engine counted them ({tokens['turns']} turns): a median {tokens['new_tokens_p50']:.0f} "
            f"tokens prefilled (prompt - cached) where the workload asked for {tokens['asked_tokens_p50']:.0f}: the "
            f"chat template's markers make the append {tokens['append_with_template_p50']:.0f} tokens, and the "
            f"page-granular prefix cache ({info.get('page_size') or '?'}-token pages) recomputes the partial last "
            "page of the history."
        )
    probe = info.get("decomposition")
    if probe and probe.get("error"):
        out.append(f"Idle-cluster probe: {probe['error']} (routes {probe.get('router_routes')}); no overhead term.")
    elif probe:
        t = probe["ttft_ms"]
        new = (probe.get("prompt_tokens") or 0) - (probe.get("cached_tokens") or 0)
        pred = _predicted_prefill_ms(profile, new, probe.get("cached_tokens") or 0)
        pred_txt = f"; the profile predicts {pred:.0f} ms for that shape" if pred is not None else ""
        out.append(
            f"One turn 2+ on the idle cluster (median of {probe['rounds']}; {new} new over "
            f"{probe.get('cached_tokens')} cached tokens, routed {'/'.join(sorted(set(probe['router_routes'])))}): "
            f"TTFT through the router {t['router']:.0f} ms = router hop (token count, decision, proxy, relay) "
            f"{probe['router_hop_ms']:.0f} ms + worker chat path (template, tokenize ~"
            f"{probe.get('template_tokenize_ms') or 0:.0f} ms in-process, OpenAI stream) {probe['worker_chat_ms']:.0f} "
            f"ms + the engine's TTFT as the profile times it (`/generate`, token ids) {t['worker_generate']:.0f} ms"
            f"{pred_txt}. The simulator adds the first two as a per-request overhead of "
            f"{probe['request_overhead_ms']:.0f} ms."
        )
        if p50 is not None:
            out.append(
                f"Under the run's load the turn-2+ TTFT p50 is {p50:.0f} ms: {p50 - t['router']:+.0f} ms against the "
                "idle turn is waiting for the decode worker's iteration in flight, mixed iterations (the append "
                "riding with other streams' decode rows) and other turns' appends queued ahead."
            )
    for s in steps:
        r = s["ratios"]
        figures = ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in r.items())
        out.append(f"Simulator step `{s['step']}` ({s['what']}): sim / measured {figures}.")
    return out
