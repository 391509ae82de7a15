"""Fast attention for a ragged batch over the head-major KVPool; same contract as
``attention_reference.reference_attention``.

What makes it fast on CPU (measured in benchmarks/kernels_bench.py):
- no gather when a sequence's slots form one contiguous run: K/V are strided views of the pool;
- a decode row needs no mask, so its GQA group is folded into the query-length axis
  ([kv_heads, group, hd] against [kv_heads, context, hd]) and SDPA runs unmasked;
- sequences split over several runs are scored run by run and merged with one softmax
  over the concatenated scores (only the small score rows are copied, never K/V);
- an extend chunk with an empty prefix uses SDPA ``is_causal`` (cheaper than a mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ppd_kernels.batch import BatchPlan, SeqPlan


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    plan: BatchPlan, scale: float) -> torch.Tensor:
    """q: [T, num_heads, head_dim]; k_cache/v_cache: one layer [num_kv_heads, num_slots, head_dim],
    already holding this step's new K/V. Returns [T, num_heads, head_dim]."""
    outputs = []
    for seq in plan.seqs:
        rows = q[seq.row_start:seq.row_start + seq.num_new]
        if seq.is_decode:
            outputs.append(_decode_row(rows, k_cache, v_cache, seq, scale))
        else:
            outputs.append(_extend_rows(rows, k_cache, v_cache, seq, scale))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _decode_row(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq: SeqPlan,
                scale: float) -> torch.Tensor:
    num_kv_heads, _, head_dim = k_cache.shape
    grouped = q.view(num_kv_heads, -1, head_dim)                     # [kv_heads, group, hd]
    if len(seq.runs) == 1:
        start, length = seq.runs[0]
        out = F.scaled_dot_product_attention(grouped, k_cache[:, start:start + length],
                                             v_cache[:, start:start + length], scale=scale)
    else:
        scores = torch.cat([torch.matmul(grouped, k_cache[:, s:s + n].transpose(1, 2))
                            for s, n in seq.runs], dim=-1)
        probs = torch.softmax(scores.float() * scale, dim=-1).to(q.dtype)
        out, offset = None, 0
        for start, length in seq.runs:
            part = torch.matmul(probs[..., offset:offset + length], v_cache[:, start:start + length])
            out = part if out is None else out + part
            offset += length
    return out.reshape(1, -1, head_dim)


def _extend_rows(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq: SeqPlan,
                 scale: float) -> torch.Tensor:
    if len(seq.runs) == 1:
        start, length = seq.runs[0]
        k, v = k_cache[:, start:start + length], v_cache[:, start:start + length]
    else:  # extend chunks are compute-bound, so joining the runs costs little
        k = torch.cat([k_cache[:, s:s + n] for s, n in seq.runs], dim=1)
        v = torch.cat([v_cache[:, s:s + n] for s, n in seq.runs], dim=1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k, v, attn_mask=seq.mask,
                                         is_causal=seq.mask is None, scale=scale, enable_gqa=True)
    return out.transpose(0, 1)
