"""Built-in GPU and model presets: roofline cost profiles (``ppd_server.profiling.roofline_profile``)
and KV capacities for the simulated workers.

Datasheet figures (dense BF16 tensor FLOP/s, HBM/GDDR bandwidth, memory). Model KV bytes per
token = 2 (K and V) * kv_heads * head_dim * 2 bytes * layers; 131072 for Llama-3.1-8B (the same
constant vllm-ppd uses, routing-anchors.md section 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppd_server.profiling.roofline import roofline_profile


@dataclass(frozen=True, slots=True)
class GpuPreset:
    tflops: float  # dense BF16
    mem_bw_gbs: float
    mem_gb: float


@dataclass(frozen=True, slots=True)
class ModelPreset:
    params_b: float
    kv_bytes_per_token: int


GPUS: dict[str, GpuPreset] = {
    "h100": GpuPreset(989.5, 3350.0, 80.0),  # H100 SXM
    "h200": GpuPreset(
        989.5, 4800.0, 141.0
    ),  # H200 SXM: the H100's compute, HBM3e (gpu-measurements.md: 791 TFLOP/s, 4.26 TB/s measured)
    "a100": GpuPreset(312.0, 2039.0, 80.0),  # A100 SXM 80GB
    "l40s": GpuPreset(362.0, 864.0, 48.0),
}
MODELS: dict[str, ModelPreset] = {
    "llama-3.1-8b": ModelPreset(8.0, 2 * 8 * 128 * 2 * 32),  # 131072
    "qwen2.5-14b": ModelPreset(14.7, 2 * 8 * 128 * 2 * 48),  # 196608
}
MEM_FRACTION = 0.85  # of GPU memory for weights + KV (vllm-ppd's gpu_memory_utilization)


def gpu_preset(name: str) -> GpuPreset:
    if name not in GPUS:
        raise ValueError(f"unknown --gpu {name!r}; choose one of {', '.join(GPUS)}")
    return GPUS[name]


def model_preset(name: str) -> ModelPreset:
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def preset_profile(model: str, gpu: str) -> dict[str, Any]:
    """The roofline profile of ``model`` on one ``gpu`` (tensor parallel 1)."""
    m, g = model_preset(model), gpu_preset(gpu)
    profile = roofline_profile(m.params_b, g.tflops, g.mem_bw_gbs, m.kv_bytes_per_token)
    profile["model"] = f"{model}@{gpu} (roofline)"
    return profile


def kv_capacity_tokens(model: str, gpu: str, kv_bytes_per_token: int | None = None) -> int:
    """KV slots left on one GPU after the weights, at MEM_FRACTION of its memory."""
    m, g = model_preset(model), gpu_preset(gpu)
    per_token = kv_bytes_per_token or m.kv_bytes_per_token
    free = g.mem_gb * 1e9 * MEM_FRACTION - m.params_b * 1e9 * 2
    if free <= 0:
        raise ValueError(
            f"--model {model} (bf16 weights {m.params_b * 2:.0f} GB) does not fit on one {gpu} ({g.mem_gb:.0f} GB)"
        )
    return int(free // per_token)
