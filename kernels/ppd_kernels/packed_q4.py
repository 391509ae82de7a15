"""GGUF Q4_1 weights kept packed for small-batch forwards (CPU, bf16).

A decode step is bound by streaming the weights from memory. Keeping Q4_1 matrices in
torch's CPU int4 layout (``_weight_int4pack_mm_for_cpu``) reads 4x fewer bytes than the
dequantized bf16 copy: measured 4x faster GEMMs at 1 row and 2x at 8 rows, but 1.5x slower
at 32 rows and 2x slower at 512 (1 thread, SmolLM2 shapes). So the model keeps both forms
and uses the packed one only when a forward has few tokens (``LlamaModel.packed_max_rows``).

Q4_1 block (32 values): f16 scale d, f16 min m, 16 bytes of nibbles (low nibbles are values
0..15, high nibbles 16..31); value = q * d + m. torch's layout computes (q - 8) * scale + zero
per group of 32, so scale = d and zero = m + 8 d (rounded to bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GROUP_SIZE = 32
_BLOCK_BYTES = 20


@dataclass
class Q4Blocks:
    """Unpacked Q4_1 matrix: quants [out, in] in 0..15, scales and mins [out, in / 32]."""

    quants: torch.Tensor
    scales: torch.Tensor
    mins: torch.Tensor

    @classmethod
    def from_gguf_bytes(cls, raw: np.ndarray) -> Q4Blocks:
        """``raw``: a GGUF Q4_1 tensor's data, uint8 [out, in / 32 * 20]."""
        rows = raw.shape[0]
        blocks = np.ascontiguousarray(raw).reshape(rows, -1, _BLOCK_BYTES)
        scales = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        mins = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        nibbles = np.concatenate([blocks[..., 4:] & 0x0F, blocks[..., 4:] >> 4], axis=-1)
        return cls(
            quants=torch.from_numpy(nibbles.reshape(rows, -1).astype(np.int32)),
            scales=torch.from_numpy(scales),
            mins=torch.from_numpy(mins),
        )

    @staticmethod
    def concat(parts: list[Q4Blocks]) -> Q4Blocks:
        """Stack matrices along the output dimension (fused QKV / gate_up)."""
        return Q4Blocks(
            quants=torch.cat([p.quants for p in parts]),
            scales=torch.cat([p.scales for p in parts]),
            mins=torch.cat([p.mins for p in parts]),
        )


@dataclass
class PackedQ4:
    packed: torch.Tensor  # torch's CPU int4 layout
    scales_and_zeros: torch.Tensor  # [in / 32, out, 2], activation dtype

    @classmethod
    def pack(cls, blocks: Q4Blocks, dtype: torch.dtype) -> PackedQ4:
        zeros = blocks.mins + 8 * blocks.scales
        scales_and_zeros = torch.stack([blocks.scales.T, zeros.T], dim=-1).to(dtype).contiguous()
        return cls(
            packed=torch.ops.aten._convert_weight_to_int4pack_for_cpu(blocks.quants, 1),
            scales_and_zeros=scales_and_zeros,
        )

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """x [rows, in] -> [rows, out], like ``F.linear(x, weight)``."""
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, GROUP_SIZE, self.scales_and_zeros)


def packing_supported(device: str | torch.device, dtype: torch.dtype) -> bool:
    return (
        torch.device(device).type == "cpu"
        and dtype == torch.bfloat16
        and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
    )
