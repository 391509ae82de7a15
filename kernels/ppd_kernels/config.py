"""Architecture numbers of a Llama-family model (torch-free: the router imports it too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama/Qwen2-style decoder.

    ``rope_interleaved`` selects the rotary layout the Q/K weights were stored for:
    True = adjacent pairs (2i, 2i+1) rotate together (GGUF "llama": llama.cpp permutes
    the HF rows at conversion); False = HF rotate-half pairs (i, i + head_dim/2).
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    rope_interleaved: bool = False
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 8192
    attention_bias: bool = False

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def kv_bytes_per_token(self, dtype: Any) -> int:
        """KV-cache bytes one token occupies over all layers (K and V) in ``dtype``
        (a torch dtype, or anything with ``itemsize``)."""
        return self.num_layers * 2 * self.kv_size * dtype.itemsize
