"""Small building blocks of the decoder: RMSNorm and rotary position embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class Rotary:
    """Rotary embedding for one head_dim / theta / layout.

    Both layouts are computed as ``x * cos + swap(x) * signed_sin`` so one code path serves
    them: interleaved (GGUF llama) rotates adjacent pairs (2i, 2i+1); rotate-half (HF)
    rotates (i, i + head_dim/2). Only the pairing of ``swap`` and the table order differ.
    """

    def __init__(self, head_dim: int, theta: float, interleaved: bool, device: str | torch.device = "cpu") -> None:
        self.head_dim = head_dim
        self.interleaved = interleaved
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
        self.inv_freq = (1.0 / theta**exponents).to(torch.float32)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed_sin), each [T, 1, head_dim], for ``apply``; build once per forward."""
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]  # [T, hd/2]
        cos, sin = angles.cos(), angles.sin()
        if self.interleaved:
            cos_full = cos.repeat_interleave(2, dim=-1)
            signed_sin = torch.stack((-sin, sin), dim=-1).flatten(-2)
        else:
            cos_full = torch.cat((cos, cos), dim=-1)
            signed_sin = torch.cat((-sin, sin), dim=-1)
        return cos_full.to(dtype)[:, None, :], signed_sin.to(dtype)[:, None, :]

    def apply(self, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        """x: [T, heads, head_dim] -> rotated copy."""
        half = self.head_dim // 2
        if self.interleaved:
            swapped = x.unflatten(-1, (half, 2)).flip(-1).flatten(-2)
        else:
            swapped = x.unflatten(-1, (2, half)).flip(-2).flatten(-2)
        return x * cos + swapped * signed_sin
