"""Roofline cost profiles: coefficients from a dense model's size and a GPU's datasheet.

Used for GPU-scale simulation (``ppd_sim.presets``) and as a starting point for a router in
front of GPUs nobody has profiled yet. Compute-bound prefill, bandwidth-bound decode; the
efficiencies (``mfu``, ``bw_efficiency``) are what a production engine reaches, not ours
(see ``presets.H200_PPD_ENGINE_LLAMA8B`` for what our engine measured).
"""

from __future__ import annotations

from typing import Any

from ppd_server.routing.types import CostCoefficients


def roofline_profile(
    params_b: float,
    flops_tflops: float,
    mem_bw_gbs: float,
    kv_bytes_per_token: int,
    mfu: float = 0.55,
    bw_efficiency: float = 0.8,
    bytes_per_param: float = 2.0,
) -> dict[str, Any]:
    """Coefficients from first principles for a dense model on an accelerator.

    Prefill is compute-bound: 2*params FLOPs per token at ``mfu`` of peak; attention adds about
    4 * d_model * layers FLOPs per (query, key) pair, which for grouped-query attention (4 query
    heads per KV head, 2-byte KV) equals ``kv_bytes_per_token``. A decode step is
    bandwidth-bound: reading the weights once, plus every stream's KV. Llama-3.1-8B on H100
    (8.0, 989.5, 3350, 131072) gives ~29 us/prefill token and a ~6 ms decode step base.
    """
    for name, v in (("params_b", params_b), ("flops_tflops", flops_tflops), ("mem_bw_gbs", mem_bw_gbs)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    if kv_bytes_per_token <= 0:
        raise ValueError(f"kv_bytes_per_token must be > 0, got {kv_bytes_per_token!r}")
    flops = flops_tflops * 1e12 * mfu
    bw = mem_bw_gbs * 1e9 * bw_efficiency
    weights_ms = params_b * 1e9 * bytes_per_param / bw * 1e3
    per_token_ms = 2 * params_b * 1e9 / flops * 1e3
    coefs = CostCoefficients(
        prefill_base_ms=weights_ms,
        prefill_per_token_ms=per_token_ms,
        prefill_attn_ms_per_ktok2=4.0 * kv_bytes_per_token * 1e6 / flops * 1e3,
        decode_base_ms=weights_ms,
        decode_per_seq_ms=per_token_ms,
        decode_per_kctx_ms=kv_bytes_per_token * 1000 / bw * 1e3,
    )
    return {
        "model": f"roofline:{params_b:g}B",
        "source": (
            f"roofline_profile(params_b={params_b}, tflops={flops_tflops}, gbs={mem_bw_gbs}, mfu={mfu}, "
            f"bw_eff={bw_efficiency})"
        ),
        "coefficients": coefs.to_dict(),
        "kv_bytes_per_token": int(kv_bytes_per_token),
        "samples": [],
    }
