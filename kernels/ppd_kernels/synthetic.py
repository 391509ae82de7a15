"""A tiny seeded random Llama ("synthetic[:SEED]") for fast tests: same seed, same weights.

Q/K use the interleaved rotary layout (like GGUF llama files), so exporting it as an HF
directory exercises the rotate-half path too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ppd_kernels.config import ModelConfig

SYNTHETIC_CONFIG = ModelConfig(
    vocab_size=259, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
    intermediate_size=128, rope_theta=10000.0, rms_eps=1e-5, rope_interleaved=True,
    tie_word_embeddings=True, max_position_embeddings=4096)


def synthetic_config(**overrides: Any) -> ModelConfig:
    return dataclasses.replace(SYNTHETIC_CONFIG, **overrides)


def synthetic_weights(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Canonical float32 weights. Scales keep activations O(1) and logits peaked enough that
    attention and greedy choices actually depend on every part of the forward."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def linear(out_features: int, in_features: int) -> torch.Tensor:
        return normal(out_features, in_features, std=in_features ** -0.5)

    def norm_weight() -> torch.Tensor:
        return 1.0 + normal(config.hidden_size, std=0.1)

    hidden = config.hidden_size
    weights = {"embed": normal(config.vocab_size, hidden, std=1.0), "norm": norm_weight()}
    if not config.tie_word_embeddings:
        weights["lm_head"] = linear(config.vocab_size, hidden)
    for i in range(config.num_layers):
        p = f"layers.{i}."
        weights.update({
            p + "attn_norm": norm_weight(), p + "ffn_norm": norm_weight(),
            # q/k get 2x scale so attention is far from uniform
            p + "wq": 2 * linear(config.q_size, hidden),
            p + "wk": 2 * linear(config.kv_size, hidden),
            p + "wv": linear(config.kv_size, hidden), p + "wo": linear(hidden, config.q_size),
            p + "w_gate": linear(config.intermediate_size, hidden),
            p + "w_up": linear(config.intermediate_size, hidden),
            p + "w_down": linear(hidden, config.intermediate_size)})
        if config.attention_bias:
            weights.update({p + "bq": normal(config.q_size, std=0.1),
                            p + "bk": normal(config.kv_size, std=0.1),
                            p + "bv": normal(config.kv_size, std=0.1)})
    return weights
