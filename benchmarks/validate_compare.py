"""validate_sim.py, steps 3-4: simulate the measured run and compare.

``ppd-sim`` runs the sessions exactly as the benchmark ran them (arrivals, think times) on a 1P1D
fleet with the measured profile, the workers' chunk size, KV capacity and measured link speed, the
router starting from the built-in profile and fitting online, as the live one does. The terms that
bring the live stack into the simulator are added one at a time (:data:`STEPS`), each a measured
property, none fitted to the answer; :func:`ablation` shows what each one moves.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

from validate_decompose import engine_trace

#: the simulator's terms, cumulatively: each step adds one measured property of the live stack
STEPS: tuple[tuple[str, str], ...] = (
    ("plain", "the workload's token counts, token-granular cache, no per-request overhead"),
    ("engine tokens", "+ turns as the engine counted them (chat template markers) and the clients' exact max_tokens"),
    ("pages", "+ the prefix cache matches whole pages (the workers' page_size)"),
    ("request overhead", "+ the measured per-request time outside the forward passes (router hop, template, relay)"),
)


def sim_argv(a: argparse.Namespace, d: Path, info: dict[str, Any], step: int) -> list[str]:
    """ppd-sim's arguments for the measurement in ``d`` with the first ``step + 1`` of :data:`STEPS`."""
    link = info.get("kv_transfer_speed_gb_s") if a.link_gbs == "auto" else float(a.link_gbs)
    link = link if link and link > 0 else 1.0
    trace = d / ("workload_engine.jsonl" if step >= 1 else "workload.jsonl")
    argv = [
        "--cluster",
        "1P1D",
        "--policies",
        a.policy,
        "--profile",
        str(d / "profile.json"),
        "--trace",
        str(trace),
        "--router-profile",
        "builtin",
        "--online-fit",
        "--link-gbs",
        f"{link:.3g}",
        "--quiet",
    ]
    if info.get("chunked_prefill_size"):
        argv += ["--chunk-tokens", str(info["chunked_prefill_size"])]
    if info.get("max_total_num_tokens"):
        argv += ["--kv-capacity-tokens", str(info["max_total_num_tokens"])]
    if step >= 1:
        argv += ["--client-max-tokens", "exact"]  # ppd-bench sends each turn's own max_tokens
    if step >= 2 and info.get("page_size"):
        argv += ["--page-tokens", str(info["page_size"])]
    overhead = (info.get("decomposition") or {}).get("request_overhead_ms")
    if step >= 3 and overhead:
        argv += ["--request-overhead-ms", f"{overhead:.1f}"]
    arrivals = [
        json.loads(line).get("arrival_ms") or 0.0
        for line in (d / "workload.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return [*argv, "--duration", f"{max(arrivals) / 1000.0 + 1.0:.0f}", *a.sim_args.split()]


def simulate(
    a: argparse.Namespace, d: Path, info: dict[str, Any], step: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Step 3: ppd-sim on the sessions as run, with the measured profile (all terms by default)."""
    from ppd_sim.cli import main as sim_main

    step = len(STEPS) - 1 if step is None else step
    if step >= 1:
        measured = json.loads((d / "measured.json").read_text())
        lines = engine_trace(measured, (d / "workload.jsonl").read_text().splitlines())
        (d / "workload_engine.jsonl").write_text("\n".join(lines) + "\n")
    argv = sim_argv(a, d, info, step)
    out = d / f"simulated-{step}.json"
    with contextlib.redirect_stdout(io.StringIO()):  # its table: the comparison is printed instead
        rc = sim_main([*argv, "--json", str(out)])
    if rc != 0:
        raise RuntimeError(f"ppd-sim exited with {rc}")
    return json.loads(out.read_text()), argv


def ablation(a: argparse.Namespace, d: Path, info: dict[str, Any], measured: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of :data:`STEPS`: the compared figures' sim / measured ratios."""
    out = []
    for step, (name, what) in enumerate(STEPS):
        sim, _ = simulate(a, d, info, step)
        rows = compare(measured, sim, a.tolerance)
        out.append({"step": name, "what": what, "ratios": {r["name"]: r["ratio"] for r in rows if r["gated"]}})
    return out


def compare(measured: dict[str, Any], sim: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    m, s = measured["summary"], sim["results"][0]
    rows = [
        ("turn-2+ TTFT p50", m["turn2plus"]["ttft_ms"]["p50"], s["turn2plus_ttft_ms"]["p50"], True),
        ("turn-2+ TTFT p90", m["turn2plus"]["ttft_ms"]["p90"], s["turn2plus_ttft_ms"]["p90"], True),
        ("TPOT p50", m["all"]["tpot_ms"]["p50"], s["tpot_ms"]["p50"], True),
        ("turn-1 TTFT p50", m["turn1"]["ttft_ms"]["p50"], s["turn1_ttft_ms"]["p50"], False),
        ("E2E p50", m["all"]["e2e_ms"]["p50"], s["e2e_ms"]["p50"], False),
    ]
    out = []
    for name, mv, sv, gated in rows:
        ratio = sv / mv if mv and sv is not None else None
        out.append(
            {
                "name": name,
                "measured": mv,
                "simulated": sv,
                "ratio": ratio,
                "gated": gated,
                "ok": ratio is not None and abs(ratio - 1) <= tolerance if gated else None,
            }
        )
    local_m = (m["turn2plus"].get("route_share") or {}).get("local")
    out.append(
        {
            "name": "turns 2+ local (share)",
            "measured": local_m,
            "simulated": s.get("turn2plus_local_share"),
            "ratio": (s["turn2plus_local_share"] / local_m) if local_m else None,
            "gated": False,
            "ok": None,
        }
    )
    return out


def mixed_gap(profile: dict[str, Any]) -> str | None:
    """How far the engine's mixed iterations are from the simulator's additive model (prefill
    chunk + decode rows), with coefficients fitted on the plain prefill and decode samples only."""
    from ppd_server.profiling.fit import fit_coefficients, predict_ms
    from ppd_server.routing.linalg import median

    plain = [s for s in profile.get("samples", []) if s.get("kind") in ("prefill", "decode")]
    mixed = [s for s in profile.get("samples", []) if s.get("kind") == "mixed" and s.get("ms")]
    if not plain or not mixed:
        return None
    from ppd_server.routing.types import CostCoefficients

    coefs, _ = fit_coefficients(plain)
    ratios = sorted(s["ms"] / predict_ms(coefs, s) for s in mixed if predict_ms(coefs, s) > 0)
    if not ratios:
        return None
    joint = CostCoefficients.from_dict(profile["coefficients"])  # what the simulator runs with
    left = sorted(s["ms"] / predict_ms(joint, s) for s in mixed if predict_ms(joint, s) > 0)
    return (
        f"The engine's mixed iterations (a prefill chunk riding with decode streams) took {median(ratios):.2f}x "
        f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}, {len(ratios)} samples) what the simulator's additive model "
        "(prefill chunk + decode rows without their base) predicts from the plain prefill and decode timings "
        "of the same profile (1.0 = additive); with the profile's joint fit, which the simulator runs with, "
        f"{median(left):.2f}x (range {left[0]:.2f}-{left[-1]:.2f}): what a separate mixed-iteration term would "
        "still add, on mixed iterations only."
    )
