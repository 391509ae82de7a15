"""Readable reference attention over the KVPool: gather every sequence's whole context by
slot, then one SDPA with an explicit causal-offset mask. The oracle for ``attention.py``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ppd_kernels.batch import BatchPlan, causal_mask


def reference_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: BatchPlan, scale: float
) -> torch.Tensor:
    """q: [T, num_heads, head_dim]; k_cache/v_cache: one layer [num_kv_heads, num_slots, head_dim],
    already holding this step's new K/V. Returns [T, num_heads, head_dim]."""
    out = torch.empty_like(q)
    for seq in plan.seqs:
        rows = slice(seq.row_start, seq.row_start + seq.num_new)
        k = k_cache[:, seq.slots]  # [kv_heads, context, hd]
        v = v_cache[:, seq.slots]
        mask = causal_mask(seq.num_cached, seq.num_new, q.device)
        attended = F.scaled_dot_product_attention(
            q[rows].transpose(0, 1), k, v, attn_mask=mask, scale=scale, enable_gqa=True
        )
        out[rows] = attended.transpose(0, 1)
    return out
