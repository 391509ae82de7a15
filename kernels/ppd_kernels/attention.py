"""Batched attention for a ragged batch over the head-major KVPool; same contract as
``attention_reference.reference_attention``. Plain torch, CPU and CUDA.

CPU decode with sequence ids reads persistent contiguous rows instead of the pool
(``decode_rows``, ``stages_decode``, ``_staged``); what follows is the pool-reading path,
which serves extend chunks, CUDA, and decode rows without ids or over the rows' budget.

One call per layer covers the whole batch, as (at most) two groups: the decode rows and the
extend chunks (``attention_plan``). Each group runs one of two kernels, picked per group and
device by ``choose_path`` (measured; the figures are there): the batched kernel (ONE padded
batch, no per-sequence Python loop: CUDA always, CPU for short contexts or scattered slots)
or the per-sequence loop over zero-copy views of the pool (CPU, sequences on consecutive
slots with long contexts: there the gather costs more than the loop). The batched kernel
was chosen by measurement on the 2-vCPU AVX-512 box (1 thread, bf16, SmolLM2 heads: 9 q /
3 kv x 64; per layer, batch 32 x 1025):
- per-sequence loop (the previous kernel): 5.6 ms; the Python loop and 64 small bmm calls
  are half of it;
- gather K and V for the whole group at block (page) granularity + two batched GEMMs:
  1.9 ms gather + 2.3 ms math; a per-slot gather costs 3.8 ms instead of 1.9;
- SDPA (``enable_gqa``) over the same gathered tensors: 2.6 ms math, no better than the
  GEMMs, and its causal path needs an explicit mask for chunks over a cached prefix, where
  the CPU kernel leaves its fast path (2-3x slower than the blocked GEMMs for prefill).
  ``flex_attention`` needs compilation on CPU (not available without a compiler toolchain
  here) and was not measured.
So: plain batched GEMMs with the GQA group folded into the query rows ([kv_heads, G,
group * rows, hd] against [kv_heads, G, context, hd]: no K/V repeat), fp32-accumulating
softmax in the compute dtype. A group of one sequence whose slots form one run reads the
pool through a zero-copy view (prefill and batch-1 decode cost what they did). Extend
queries are processed in row blocks that bound the score tile; a block masks only the key
columns some of its rows must not see (the diagonal square for one sequence).
"""

from __future__ import annotations

import torch

from ppd_kernels.attention_plan import AttentionGroup
from ppd_kernels.batch import BatchPlan, SeqPlan
from ppd_kernels.decode_rows import StagedDecode

PATHS = ("batched", "per_sequence")
# CPU: below this padded context a group of several sequences gathers its K/V more cheaply
# than the per-sequence loop costs (see ``choose_path``).
PER_SEQUENCE_MIN_CONTEXT = 512


def choose_path(group: AttentionGroup, device: torch.device) -> str:
    """Kernel for one group: "per_sequence" (a Python loop over the group's sequences, each
    reading zero-copy views of the pool) or "batched" (one padded gather + batched GEMMs).

    Why, measured (SmolLM2 bf16 forward, 1 torch thread, decode over each sequence's
    consecutive slots, thread CPU time best-of, interleaved in one process):
    - long contexts: batched vs per-sequence 124.7 vs 107.6 ms at batch 8 x ctx 1024, 395.3 vs
      311.1 at batch 32; a 4 x 128-token extend on 512 cached: 562.1 vs 497.2. Plain torch
      must copy the group's K/V once per layer, which costs more than the loop it saves,
      while the loop reads the pool in place;
    - short contexts: batched wins (batch 32 x ctx 64: 102.5 vs 152.2; x 256: 151.1 vs 184.6;
      x 512: 239.5 vs 224.8; batch 8 x 512: 77.6 vs 82.3), the loop's fixed cost per
      sequence dominating: hence ``PER_SEQUENCE_MIN_CONTEXT``;
    - one sequence on one run reads views either way (the loop has no padding bookkeeping);
    - a group whose sequences span several slot runs must gather either way: batched.
    On CUDA a step is launch-bound (the loop launches ~6 kernels per sequence and layer):
    always batched (not measured here: no GPU).
    """
    if (
        device.type == "cpu"
        and group.one_run
        and (group.num_seqs == 1 or group.context_max >= PER_SEQUENCE_MIN_CONTEXT)
    ):
        return "per_sequence"
    return "batched"


def stages_decode(device: torch.device) -> bool:
    """Whether decode groups on ``device`` keep their KV in persistent contiguous rows
    (``decode_rows``) rather than reading the pool. CPU: yes, measured (batch 32 x ctx 1024,
    SmolLM2 bf16, 1 thread, one cache-resident layer: the rows' two GEMMs 2.3 ms against 2.7
    ms of gather plus the same GEMMs, or 6.2 ms for the per-sequence loop; whole steps: see
    ``decode_rows``). CUDA: no; a second copy of
    the decoding KV would halve what the GPU memory holds, and the batched gather there is
    a bandwidth-bound copy at HBM speed (not measured here: no GPU)."""
    return device.type == "cpu"


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    plan: BatchPlan,
    scale: float,
    path: str | None = None,
    rows: tuple[torch.Tensor, torch.Tensor, StagedDecode] | None = None,
) -> torch.Tensor:
    """q: [T, num_heads, head_dim]; k_cache/v_cache: one layer [num_kv_heads, num_slots, head_dim],
    already holding this step's new K/V. Returns [T, num_heads, head_dim]. ``path`` forces
    one kernel for every group (tests); None: ``choose_path`` per group. ``rows`` (this
    layer's decode rows, K [R, kv_heads, L, head_dim] and V transposed [R, kv_heads,
    head_dim, L], holding this step's new K/V, and the step's ``StagedDecode``): the decode
    group reads them instead of the pool."""
    q = q * scale
    results: list[tuple[AttentionGroup, torch.Tensor | None, torch.Tensor]] = []
    for group, kernel in ((plan.decode, _decode_group), (plan.extend, _extend)):
        if group is None:
            continue
        if rows is not None and group is plan.decode and path is None:
            results.append((group, None, _staged(q, group, *rows)))
            continue
        if (path or choose_path(group, q.device)) == "per_sequence":
            outputs = [_sequence(q, k_cache, v_cache, plan.seqs[i]) for i in group.members]
            attended = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
            results.append((group, None, attended))  # real rows only, in out_rows order
            continue
        queries = q if group.rows is None else q.index_select(0, group.rows)
        k, v = _context(k_cache, group), _context(v_cache, group)
        if group.view is not None and q.dtype != torch.float32:
            # The CPU bf16 GEMM against a transposed strided view of the pool ran 2.2x
            # slower than copy + GEMM (decode, 8 x 1025); fp32 ran faster on the view.
            k = k.contiguous()
        results.append((group, group.out_index, kernel(queries, k, v, group)))
    if len(results) == 1 and results[0][0].rows is None and results[0][1] is None:
        return results[0][2]
    out = q.new_empty(q.shape)
    for group, out_index, attended in results:
        if out_index is not None:
            attended = attended.index_select(0, out_index)
        out.index_copy_(0, group.out_rows, attended)
    return out


def _context(cache: torch.Tensor, group: AttentionGroup) -> torch.Tensor:
    """[kv_heads, G, context_max, hd]: a view of the pool, or one gather for the group."""
    kv_heads, num_slots, head_dim = cache.shape
    if group.view is not None:
        start, length = group.view
        return cache[:, start : start + length].unsqueeze(1)
    assert group.gather is not None
    if group.block > 1:
        if num_slots % group.block == 0:
            blocks = cache.view(kv_heads, num_slots // group.block, group.block * head_dim)
            gathered = blocks.index_select(1, group.gather)
            return gathered.view(kv_heads, group.num_seqs, group.context_max, head_dim)
        # A pool not made of whole blocks: per-slot gather; slots past the end are padding.
        offsets = torch.arange(group.block, device=cache.device)
        slots = (group.gather[:, None] * group.block + offsets).flatten().clamp_(max=num_slots - 1)
        return cache.index_select(1, slots).view(kv_heads, group.num_seqs, group.context_max, head_dim)
    return cache.index_select(1, group.gather).view(kv_heads, group.num_seqs, group.context_max, head_dim)


def _staged(
    q: torch.Tensor, group: AttentionGroup, k: torch.Tensor, v_t: torch.Tensor, staged: StagedDecode
) -> torch.Tensor:
    """The decode group over its rows (k [used, kv_heads, L, hd], v_t [used, kv_heads, hd, L],
    contiguous): queries scattered to their rows (free rows get zero queries and see one
    key), two batched GEMMs over (row, kv head) pairs; returns the members' outputs in member
    (``out_rows``) order.

    Both GEMMs take the big operand (K, V^T) as the row-major left matrix against a
    per_kv-column right one: K @ q^T -> scores^T [L, per_kv], V^T @ p^T -> out^T [hd, per_kv].
    Measured (1 thread, bf16, 30 layers of 32 rows x 3 kv heads x 1088, from DRAM, 802 MB):
    the two GEMMs 40 + 38 ms (~10 GB/s) against 58 + 54 ms for q @ K^T and p @ V (~7 GB/s);
    the two small transposes between them cost ~3 ms, the softmax ~5. Over the whole
    buffer, never a sliced view: bmm copies a view sliced along L (175 against 103 ms).
    SDPA (flash, ``enable_gqa``) over the same rows: 112-118 ms."""
    members = q if group.rows is None else q.index_select(0, group.rows)
    if staged.identity:
        padded = members
    else:
        padded = q.new_zeros(staged.used, *q.shape[1:])
        padded.index_copy_(0, staged.rows, members)
    used, kv_heads, length, head_dim = k.shape
    per_kv = q.shape[1] // kv_heads
    pairs = used * kv_heads
    scores_t = torch.bmm(k.view(pairs, length, head_dim), padded.view(pairs, per_kv, head_dim).mT)
    scores = scores_t.mT.contiguous()  # [pairs, per_kv, L]: the softmax over a strided dim is ~10x slower
    scores += staged.key_bias  # 0 / -inf per key
    probs = torch.softmax(scores, dim=-1)
    attended_t = torch.bmm(v_t.view(pairs, head_dim, length), probs.mT.contiguous())  # [pairs, hd, per_kv]
    attended = attended_t.mT.reshape(used, kv_heads * per_kv, head_dim)
    return attended if staged.identity else attended.index_select(0, staged.rows)


def _decode_group(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: AttentionGroup) -> torch.Tensor:
    return _decode(q, k, v, group.key_mask)


def _decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """q: [G, heads, hd] (pre-scaled); k/v: [kv_heads, G, context, hd] -> [G, heads, hd];
    ``key_mask`` bool [G, context], True = not a key of that row."""
    num_seqs, num_heads, head_dim = q.shape
    kv_heads, _, context, _ = k.shape
    per_kv = num_heads // kv_heads
    # 3-D bmm over (kv_head, sequence) pairs: ~8% less CPU time than the 4-D matmul
    grouped = q.view(num_seqs, kv_heads, per_kv, head_dim).transpose(0, 1).reshape(-1, per_kv, head_dim)
    keys = k.reshape(kv_heads * num_seqs, context, head_dim)
    scores = torch.bmm(grouped, keys.transpose(1, 2)).view(kv_heads, num_seqs, per_kv, context)
    if key_mask is not None:
        scores.masked_fill_(key_mask[None, :, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).view(kv_heads * num_seqs, per_kv, context)
    attended = torch.bmm(probs, v.reshape(kv_heads * num_seqs, context, head_dim))
    return (
        attended.view(kv_heads, num_seqs, num_heads // kv_heads, head_dim)
        .transpose(0, 1)
        .reshape(num_seqs, num_heads, head_dim)
    )


def _extend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: AttentionGroup) -> torch.Tensor:
    """q: [G * new_max, heads, hd] (pre-scaled, padded rows); k/v: [kv_heads, G, context, hd]
    -> [G * new_max, heads, hd]."""
    num_seqs, new_max = group.num_seqs, group.num_new_max
    _, num_heads, head_dim = q.shape
    kv_heads = k.shape[0]
    per_kv = num_heads // kv_heads
    grouped = q.view(num_seqs, new_max, kv_heads, per_kv, head_dim).permute(2, 0, 3, 1, 4)
    out = q.new_empty(kv_heads, num_seqs, per_kv, new_max, head_dim)
    for (start, end), (first, mask) in zip(group.query_blocks, group.block_masks):
        rows, visible = end - start, first + mask.shape[-1]
        block = grouped[:, :, :, start:end].reshape(kv_heads, num_seqs, per_kv * rows, head_dim)
        scores = torch.matmul(block, k[:, :, :visible].transpose(-1, -2))
        masked = scores.view(kv_heads, num_seqs, per_kv, rows, visible)[..., first:]
        masked.masked_fill_(mask[None, :, None], float("-inf"))
        attended = torch.matmul(torch.softmax(scores, dim=-1), v[:, :, :visible])
        out[:, :, :, start:end] = attended.view(kv_heads, num_seqs, per_kv, rows, head_dim)
    return out.permute(1, 3, 0, 2, 4).reshape(num_seqs * new_max, num_heads, head_dim)


def _sequence(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq: SeqPlan) -> torch.Tensor:
    """One sequence, on zero-copy views of the pool when its slots form one run (else one
    gather): q [T, heads, hd] (pre-scaled, the whole batch) -> [num_new, heads, hd]."""
    if len(seq.runs) == 1:
        ((start, length),) = seq.runs
        k, v = k_cache[:, start : start + length], v_cache[:, start : start + length]
    else:
        k, v = k_cache.index_select(1, seq.slots), v_cache.index_select(1, seq.slots)
    if q.dtype != torch.float32:
        k = k.contiguous()  # as in paged_attention: bf16 GEMM on the strided view is slower
    q = q[seq.row_start : seq.row_start + seq.num_new]
    num_new, num_heads, head_dim = q.shape
    kv_heads = k.shape[0]
    per_kv = num_heads // kv_heads
    if num_new == 1:
        scores = torch.bmm(q.view(kv_heads, per_kv, head_dim), k.transpose(1, 2))
        return torch.bmm(torch.softmax(scores, dim=-1), v).view(1, num_heads, head_dim)
    grouped = q.view(num_new, kv_heads, per_kv, head_dim).permute(1, 2, 0, 3)
    out = q.new_empty(kv_heads, per_kv, num_new, head_dim)
    for first, end in seq.query_blocks:
        rows, visible = end - first, seq.num_cached + end
        scores = torch.bmm(
            grouped[:, :, first:end].reshape(kv_heads, per_kv * rows, head_dim), k[:, :visible].transpose(1, 2)
        )
        # row i of the block sits at key position visible - rows + i: hide the keys after it
        diagonal = scores.view(kv_heads, per_kv, rows, visible)[..., visible - rows :]
        diagonal.masked_fill_(torch.ones(rows, rows, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        attended = torch.bmm(torch.softmax(scores, dim=-1), v[:, :visible])
        out[:, :, first:end] = attended.view(kv_heads, per_kv, rows, head_dim)
    return out.permute(2, 0, 1, 3).reshape(num_new, num_heads, head_dim)
