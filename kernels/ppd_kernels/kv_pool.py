"""KV-cache storage for all layers, addressed by slot (one slot = one token position).

Layout: ``k[layer]`` and ``v[layer]`` are [num_kv_heads, num_slots, head_dim] (head-major), so
a run of consecutive slots is a zero-copy strided view per layer: the fast attention path
reads a sequence whose slots are contiguous without gathering anything.
"""

from __future__ import annotations

import torch

from ppd_kernels.config import ModelConfig
from ppd_kernels.decode_rows import DecodeRows


class KVPool:
    def __init__(
        self,
        config: ModelConfig,
        num_slots: int,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        decode_rows_budget: int | None = None,
    ) -> None:
        """``decode_rows_budget``: most tokens (rows x positions) the CPU decode rows may hold
        (``decode_rows``; a second copy of the decoding sequences' KV); None: ``num_slots``,
        at most doubling the KV memory; 0: decode always reads the pool."""
        if num_slots <= 0:
            raise ValueError(f"KVPool num_slots must be positive, got {num_slots}")
        self.config = config
        self.num_slots = num_slots
        self.dtype = dtype
        # [layer, K/V, kv_head, slot, head_dim]; one allocation, zero-initialised so that
        # stale slots never hold NaN garbage.
        self.data = torch.zeros(
            config.num_layers, 2, config.num_kv_heads, num_slots, config.head_dim, dtype=dtype, device=device
        )
        self.k = self.data[:, 0]
        self.v = self.data[:, 1]
        budget = num_slots if decode_rows_budget is None else decode_rows_budget
        self.decode_rows = DecodeRows(config, budget, dtype, self.data.device)

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def bytes_per_token(self) -> int:
        return self.config.kv_bytes_per_token(self.dtype)

    def read(self, slots: torch.Tensor) -> torch.Tensor:
        """K and V of ``slots`` for every layer, as a new contiguous tensor
        [num_layers, 2, num_kv_heads, len(slots), head_dim] (for KV transfer)."""
        return self.data.index_select(3, slots.to(self.device))

    def write(self, slots: torch.Tensor, data: torch.Tensor) -> None:
        """Inverse of ``read``: store ``data`` (shape as ``read`` returns) at ``slots``."""
        expected = (*self.data.shape[:3], slots.numel(), self.data.shape[4])
        if tuple(data.shape) != expected:
            raise ValueError(f"KVPool.write expects data of shape {expected}, got {tuple(data.shape)}")
        data = data.to(device=self.device, dtype=self.dtype)
        self.data.index_copy_(3, slots.to(self.device), data)

    def store(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write one layer's new K/V ([T, num_kv_heads, head_dim]) at ``slots`` [T]."""
        self.k[layer].index_copy_(1, slots, k.transpose(0, 1))
        self.v[layer].index_copy_(1, slots, v.transpose(0, 1))
