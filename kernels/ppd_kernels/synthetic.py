"""Seeded random-weight Llamas, no download: "synthetic[:SHAPE][:SEED]" (same seed, same weights).

Shapes (``SYNTHETIC_SHAPES``): "tiny" (the default: 2 layers, hidden 64, for fast tests),
"small" (4 layers, hidden 256: CPU benchmarks of the whole path in seconds), and the real
architectures' shapes for GPU benchmarks: "llama-3.2-1b" and "llama-3.1-8b" (their layer
counts, widths, GQA and vocabulary; random weights, so only speed is meaningful). All use the
byte-level synthetic tokenizer (ids past its 259 decode to nothing).

Q/K use the interleaved rotary layout (like GGUF llama files), so exporting the model as an
HF directory exercises the rotate-half path too. This module is torch-free until weights are
made (the tokenizer path parses sources through it).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ppd_kernels.config import ModelConfig

if TYPE_CHECKING:
    import torch

SYNTHETIC_CONFIG = ModelConfig(
    vocab_size=259,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=128,
    rope_theta=10000.0,
    rms_eps=1e-5,
    rope_interleaved=True,
    tie_word_embeddings=True,
    max_position_embeddings=4096,
)


SYNTHETIC_SHAPES: dict[str, ModelConfig] = {
    "tiny": SYNTHETIC_CONFIG,
    "small": ModelConfig(
        vocab_size=4096,
        hidden_size=256,
        num_layers=4,
        num_heads=8,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=768,
        rope_theta=10000.0,
        rope_interleaved=True,
        tie_word_embeddings=True,
        max_position_embeddings=16384,
    ),
    "llama-3.2-1b": ModelConfig(
        vocab_size=128256,
        hidden_size=2048,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        intermediate_size=8192,
        rope_theta=500000.0,
        rope_interleaved=True,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
    ),
    "llama-3.1-8b": ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=14336,
        rope_theta=500000.0,
        rope_interleaved=True,
        tie_word_embeddings=False,
        max_position_embeddings=131072,
    ),
}


def parse_synthetic(source: str) -> tuple[str, int] | None:
    """(shape, seed) of "synthetic", "synthetic:SEED", "synthetic:SHAPE" or
    "synthetic:SHAPE:SEED"; None for a source that is not synthetic; ValueError naming the
    bad part otherwise."""
    if source != "synthetic" and not source.startswith("synthetic:"):
        return None
    parts = source.split(":")[1:]
    shape, seed = "tiny", "0"
    if len(parts) == 1:
        shape, seed = ("tiny", parts[0]) if parts[0].isdigit() else (parts[0], "0")
    elif len(parts) == 2:
        shape, seed = parts
    elif len(parts) > 2:
        raise ValueError(f"bad synthetic model source {source!r}: use synthetic[:SHAPE][:SEED]")
    if shape not in SYNTHETIC_SHAPES:
        raise ValueError(
            f"bad synthetic model source {source!r}: unknown shape {shape!r} "
            f"(one of {', '.join(SYNTHETIC_SHAPES)}); the seed must be a "
            f"non-negative integer, e.g. 'synthetic:3'"
        )
    if not seed.isdigit():
        raise ValueError(
            f"bad synthetic model source {source!r}: the seed must be a non-negative integer, e.g. 'synthetic:3'"
        )
    return shape, int(seed)


def synthetic_config(**overrides: Any) -> ModelConfig:
    return dataclasses.replace(SYNTHETIC_CONFIG, **overrides)


def synthetic_weights(
    config: ModelConfig, seed: int, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Canonical weights (float32 on CPU by default). Scales keep activations O(1) and
    logits peaked enough that attention and greedy choices actually depend on every part of
    the forward. With ``device``/``dtype`` given they are drawn there directly (an 8B shape
    never passes through 32 GB of host float32); the values then depend on the device's
    generator, so cross-device comparisons draw on CPU and move."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    dtype = dtype or torch.float32

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device, dtype=dtype) * std

    def linear(out_features: int, in_features: int) -> torch.Tensor:
        return normal(out_features, in_features, std=in_features**-0.5)

    def norm_weight() -> torch.Tensor:
        return 1.0 + normal(config.hidden_size, std=0.1)

    hidden = config.hidden_size
    weights = {"embed": normal(config.vocab_size, hidden, std=1.0), "norm": norm_weight()}
    if not config.tie_word_embeddings:
        weights["lm_head"] = linear(config.vocab_size, hidden)
    for i in range(config.num_layers):
        p = f"layers.{i}."
        weights.update(
            {
                p + "attn_norm": norm_weight(),
                p + "ffn_norm": norm_weight(),
                # q/k get 2x scale so attention is far from uniform
                p + "wq": 2 * linear(config.q_size, hidden),
                p + "wk": 2 * linear(config.kv_size, hidden),
                p + "wv": linear(config.kv_size, hidden),
                p + "wo": linear(hidden, config.q_size),
                p + "w_gate": linear(config.intermediate_size, hidden),
                p + "w_up": linear(config.intermediate_size, hidden),
                p + "w_down": linear(hidden, config.intermediate_size),
            }
        )
        if config.attention_bias:
            weights.update(
                {
                    p + "bq": normal(config.q_size, std=0.1),
                    p + "bk": normal(config.kv_size, std=0.1),
                    p + "bv": normal(config.kv_size, std=0.1),
                }
            )
    return weights
