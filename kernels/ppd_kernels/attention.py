"""Fast attention for a ragged batch over the head-major KVPool; same contract as
``attention_reference.reference_attention``.

Design (measured on the 2-vCPU AVX-512 box, 1 thread, bf16, with micro-benchmarks and
benchmarks/kernels_bench.py):
- No gather when a sequence's slots form one contiguous run: K and V are strided views of
  the pool (in bf16, K is then copied once: see ``paged_attention``). A sequence split over
  several runs is gathered with ``index_select`` (several times cheaper than the advanced
  indexing ``k[:, slots]`` the reference uses; that indexing is what made the gather cost
  1/3 of a decode step in early profiles).
- Plain batched GEMMs instead of SDPA: the GQA group is folded into the query rows
  ([kv_heads, group * rows, hd] against [kv_heads, context, hd]), so no K/V repeat and no
  mask tensor. Queries are processed in row blocks (``SeqPlan.query_blocks``); a block sees
  keys up to its last row, and only its diagonal square is masked. On CPU this beat the SDPA
  flash kernel 2-3x for causal prefill, and ~3x for chunks on a cached prefix, where SDPA
  needs an explicit mask and falls off its fast path.
- A decode row is a single 1-row block: two small GEMMs and a softmax, no mask at all.
Scores are in the compute dtype (like eager attention); softmax accumulates in fp32. On
SmolLM2 in bf16 this path and the SDPA reference sit equally far from the fp32 logits
(max |diff| 0.3-0.6 on three chat prompts, same argmax).
"""

from __future__ import annotations

import torch

from ppd_kernels.batch import BatchPlan, SeqPlan


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    plan: BatchPlan, scale: float) -> torch.Tensor:
    """q: [T, num_heads, head_dim]; k_cache/v_cache: one layer [num_kv_heads, num_slots, head_dim],
    already holding this step's new K/V. Returns [T, num_heads, head_dim]."""
    q = q * scale
    # Reduced-precision K is copied to a contiguous block: the CPU bf16 bmm against a
    # transposed strided view of the pool ran 2.2x slower than copy + bmm (decode, 8 x 1025
    # tokens), while fp32 ran 1.2x faster on the view. V views are used as they are.
    copy_k = q.dtype != torch.float32
    outputs = []
    for seq in plan.seqs:
        k = _context(k_cache, seq)
        outputs.append(_sequence_attention(q[seq.row_start:seq.row_start + seq.num_new],
                                           k.contiguous() if copy_k else k,
                                           _context(v_cache, seq), seq))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _context(cache: torch.Tensor, seq: SeqPlan) -> torch.Tensor:
    """[kv_heads, context, hd]: a view of the pool for one run, else a gathered copy."""
    if len(seq.runs) == 1:
        start, length = seq.runs[0]
        return cache[:, start:start + length]
    return cache.index_select(1, seq.slots)


def _sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        seq: SeqPlan) -> torch.Tensor:
    """q: [num_new, heads, hd] (pre-scaled); k/v: [kv_heads, context, hd]."""
    num_new, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[0]
    group = num_heads // num_kv_heads
    if num_new == 1:
        scores = torch.bmm(q.view(num_kv_heads, group, head_dim), k.transpose(1, 2))
        return torch.bmm(torch.softmax(scores, dim=-1), v).view(1, num_heads, head_dim)
    grouped = q.view(num_new, num_kv_heads, group, head_dim).permute(1, 2, 0, 3)
    out = q.new_empty(num_kv_heads, group, num_new, head_dim)
    for start, end in seq.query_blocks:
        rows, visible = end - start, seq.num_cached + end
        scores = torch.bmm(grouped[:, :, start:end].reshape(num_kv_heads, group * rows, head_dim),
                           k[:, :visible].transpose(1, 2))
        # row i of the block sits at key position visible - rows + i: hide the keys after it
        diagonal = scores.view(num_kv_heads, group, rows, visible)[..., visible - rows:]
        diagonal.masked_fill_(_upper_triangle(rows, q.device), float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        attended = torch.bmm(probs, v[:, :visible])
        out[:, :, start:end] = attended.view(num_kv_heads, group, rows, head_dim)
    return out.permute(2, 0, 1, 3).reshape(num_new, num_heads, head_dim)


def _upper_triangle(size: int, device: torch.device) -> torch.Tensor:
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)
