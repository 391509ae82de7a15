"""Measured profiles shipped with the router: the built-in SmolLM2 CPU profile and our engine on
an H200 with a Llama-3.1-8B-shaped model. Roofline profiles (GPU datasheet x model size) are
computed, not stored: :mod:`.roofline` and ``ppd_sim.presets``.

``load_profile`` (:mod:`.store`) accepts these names wherever a profile path is accepted
(``ppd-server --profile NAME``, ``ppd-sim --profile NAME`` / ``--router-profile NAME``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

#: The built-in profile: SmolLM2-135M-Instruct (Q4_1 GGUF, bf16 compute, 1 thread) on the embedded
#: engine, measured with ``measure_profile`` on the 2-core development machine while other jobs
#: ran (load average ~3): absolute times are pessimistic, the ratios are what routing uses.
#: Replace it with `ppd-server profile` output for other hardware (or a roofline for GPUs).
DEFAULT_PROFILE: dict[str, Any] = {
    "model": "SmolLM2-135M-Instruct",
    "source": (
        "measure_profile on the embedded ppd-worker (smollm2, bf16, --threads 1, pinned core), 2-core dev box, "
        "load avg ~3"
    ),
    "coefficients": {
        "prefill_base_ms": 57.1,
        "prefill_per_token_ms": 1.398,
        "prefill_attn_ms_per_ktok2": 292.5,
        "decode_base_ms": 18.98,
        "decode_per_seq_ms": 3.54,
        "decode_per_kctx_ms": 1.60,
    },
    "kv_bytes_per_token": 23040,
    "fit": {"prefill_abs_pct_err": 28.2, "decode_abs_pct_err": 15.5},
    # measured on this engine: the cost model trusts each coefficient within +-50% (a tight prior;
    # profiles without the field are generic or foreign and get a loose one)
    "prior_rel_std": 0.5,
    "samples": [],
}

#: Our engine (ppd-worker --device cuda, commit a038745) on one H200 with a Llama-3.1-8B-shaped
#: model (hidden 4096, 32 layers, 32/8 heads, FFN 14336, random bf16 weights), from
#: shared/reference/gpu-measurements.md ("Efficiency of the engine on the H200"). Decode contexts
#: are per stream there (K = batch x context here). The two "stall" rows are what a prefill added
#: to 8 running streams at 4k context: a 256-token append over a cached 4k prefix (68.7 ms) and a
#: full 4k prefill in 512-token chunks (197.5 ms). The coefficients are ``fit_coefficients`` of
#: these samples (tests refit and compare). Not a production engine: decode does not batch
#: (batch 64 costs 15x batch 1), prefill per token is absorbed by the quadratic term.
H200_SAMPLES: tuple[dict[str, Any], ...] = (
    {"kind": "prefill", "new": 512, "cached": 0, "ms": 17.5},
    {"kind": "prefill", "new": 2048, "cached": 0, "ms": 74.3},
    {"kind": "prefill", "new": 8192, "cached": 0, "ms": 847.0},
    {"kind": "prefill", "new": 4096, "cached": 0, "chunk": 512, "ms": 249.0},
    {"kind": "decode", "batch": 1, "context": 1024, "ms": 8.84},
    {"kind": "decode", "batch": 8, "context": 8 * 1024, "ms": 21.4},
    {"kind": "decode", "batch": 32, "context": 32 * 1024, "ms": 71.1},
    {"kind": "decode", "batch": 64, "context": 64 * 1024, "ms": 133.7},
    {"kind": "decode", "batch": 64, "context": 64 * 4096, "ms": 264.8},
    {"kind": "stall", "new": 256, "cached": 4096, "ms": 68.7},
    {"kind": "stall", "new": 4096, "cached": 0, "chunk": 512, "ms": 197.5},
)
H200_PPD_ENGINE_LLAMA8B: dict[str, Any] = {
    "model": "llama-3.1-8b-shaped@h200 (ppd-worker, cuda, bf16)",
    "source": "shared/reference/gpu-measurements.md: ppd-worker --device cuda at commit a038745 on one NVIDIA H200 "
    "(torch 2.11.0+cu130), Llama-3.1-8B-shaped random bf16 weights; fit_coefficients of the listed samples",
    "coefficients": {
        "prefill_base_ms": 16.0648,
        "prefill_per_token_ms": 0.0,
        "prefill_attn_ms_per_ktok2": 13.4582,
        "decode_base_ms": 6.1414,
        "decode_per_seq_ms": 1.32057,
        "decode_per_kctx_ms": 0.66430,
    },
    "kv_bytes_per_token": 131072,
    "fit": {"prefill_abs_pct_err": 6.38, "decode_abs_pct_err": 2.61, "stall_abs_pct_err": 34.12},
    "prior_rel_std": 0.5,
    "samples": list(H200_SAMPLES),
}

_PRESETS: Mapping[str, Callable[[], dict[str, Any]]] = MappingProxyType(
    {
        "builtin": lambda: DEFAULT_PROFILE,
        "smollm2-cpu": lambda: DEFAULT_PROFILE,
        "h200-ppd-engine-llama8b": lambda: H200_PPD_ENGINE_LLAMA8B,
    }
)
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> dict[str, Any]:
    """A fresh copy of the named preset profile (KeyError naming the choices when unknown)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown profile preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return copy.deepcopy(_PRESETS[name]())
