"""Decode rows: a persistent, contiguous copy of the decoding sequences' KV, kept across
steps, so that CPU decode attention reads each sequence's context once per layer with two
batched GEMMs over a plain view, with no per-step gather and no per-sequence loop.

Why: at batch 32 x context 1024 (SmolLM2) a decode step reads ~750 MB of KV. The paged pool
cannot give a batched GEMM one uniformly strided view of 32 sequences at arbitrary slots, so
before this each layer either gathered the group's K/V (a copy as large as the read itself)
or looped in Python over per-sequence views, copying each K to contiguous memory because
the CPU bf16 GEMM on a strided view runs 2-5x slower. Measured on the 2-vCPU AVX-512 box, 1
thread, bf16, one layer of 32 x 1025 (cache-resident): per-sequence loop 6.2 ms, gather 2.7
ms + GEMMs 2.3 ms, GEMMs over a contiguous copy alone 2.3 ms (a strided, padded view: 11
ms; SDPA on the strided view: 2.9 ms, 5.4 ms with the padding mask). So the rows are kept
contiguous and the GEMMs run over the WHOLE buffer (padding keys masked), never a sliced
view. K is kept [row, kv_head, L, head_dim] and V transposed [row, kv_head, head_dim, L], so
both GEMMs stream the big operand as the row-major left matrix (``attention._staged``: ~10
GB/s against ~7 for q @ K^T and p @ V, 30 layers of 32 x 1088 from DRAM).

What bounds batch 32 (SmolLM2-135M, bf16 KV and activations; 30 layers, 3 kv heads x 64):
the KV is 30 x 2 x 3 x 64 x 2 B = 23,040 B per token, so a step at batch 32 x ctx 1024
reads 32 x 1088 (rows padded to ``LENGTH_STEP``) x 23,040 = 802 MB of rows, plus the bf16
weights (106 M in the layers + the 28 M tied lm_head = 269 MB): ~1.07 GB; batch 1 reads the
packed 4-bit layer weights (~66 MB), the bf16 lm_head (57 MB) and 25 MB of rows: ~0.15 GB.
One thread here reads DRAM at ~14.8 GB/s (fp32 ``sum``, int16 ``max`` over 400 MB), so
the rooflines are ~72 ms and ~10 ms: 7.2x. Batch 1 runs at ~25 ms (per-op overhead over 30
layers, not bandwidth), batch 32 at ~150-175 ms of which ~80 are the attention GEMMs at
~10 GB/s and ~27 the weight GEMMs at ~8 GB/s (``onednn_linear``); a step of 32 under 4x
batch 1 (~100 ms) would need every kernel at ~72% of the single-thread DRAM bandwidth.

Contract (``DecodeRows.prepare``, once per forward, before the layer loop):
- a row belongs to one sequence, identified by ``SeqChunk.seq_id``; it holds the K/V of
  positions [0, length) of that sequence, copied from the pool when the sequence first
  decodes (or whenever its row does not match: wrong length or first slot), then appended
  in place, one token per layer per step (``append``);
- rows of sequences absent from a forward's decode group, or present in its extend group,
  are dropped (the engine decodes every running sequence every step); a forward that fails
  must call ``clear`` (a row would otherwise claim a token it does not hold);
- capacity grows by whole ``ROW_STEP`` rows and ``LENGTH_STEP`` positions (one copy of the
  kept rows) and shrinks when less than a quarter is used; beyond ``budget_tokens``
  (rows x positions) ``prepare`` returns None and the caller gathers from the pool instead.
The pool stays the source of truth (KV transfer, prefix sharing, extend chunks read it).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

from ppd_kernels.batch import BatchPlan, SeqPlan
from ppd_kernels.config import ModelConfig

ROW_STEP = 4
LENGTH_STEP = 64


@dataclass(slots=True)
class StagedDecode:
    """One forward's view of the rows: the decode group's member ``i`` is row ``rows[i]`` and
    writes its new token at ``positions[i]``; attention runs over rows [0, ``used``) (the
    used rows sit at the front); ``key_mask`` [used, L] is True for keys a row must not see
    (past its length; every key but the first of a free row, so no row is all -inf)."""

    rows: torch.Tensor  # [G] long
    positions: torch.Tensor  # [G] long
    k_index: torch.Tensor  # [G * kv_heads * head_dim] long: where ``append`` writes K in one layer's flat K rows
    v_index: torch.Tensor  # the same for V^T
    key_mask: torch.Tensor  # bool [used, L]
    key_bias: torch.Tensor  # [used * kv_heads, 1, L] in the KV dtype: 0 or -inf per key_mask
    used: int
    identity: bool  # rows == arange(G) == arange(used): no query scatter / output gather needed


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _runs(rows: list[int]) -> list[tuple[int, int, int]]:
    """(destination, start, stop) of each run of consecutive ``rows``, packed to the front."""
    out: list[tuple[int, int, int]] = []
    for r in rows:
        if out and out[-1][2] == r:
            out[-1] = (out[-1][0], out[-1][1], r + 1)
        else:
            out.append((out[-1][0] + out[-1][2] - out[-1][1] if out else 0, r, r + 1))
    return out


class DecodeRows:
    def __init__(self, config: ModelConfig, budget_tokens: int, dtype: torch.dtype, device: torch.device) -> None:
        self.config, self.budget_tokens, self.dtype, self.device = config, budget_tokens, dtype, device
        # K [layers, R, kv_heads, L, head_dim] and V TRANSPOSED [layers, R, kv_heads, head_dim, L]:
        # both GEMMs then stream their big operand as the row-major left matrix (see ``layer``).
        self.k_rows: torch.Tensor | None = None
        self.v_rows: torch.Tensor | None = None
        self.keys: list[Hashable | None] = []  # per row: the sequence it holds, None = free
        self.lengths: list[int] = []  # per row: positions held
        self.first_slots: list[int] = []  # per row: pool slot of position 0 (detects reuse of an id)

    @property
    def capacity(self) -> tuple[int, int]:
        """(rows, positions) allocated."""
        return (0, 0) if self.k_rows is None else (self.k_rows.shape[1], self.k_rows.shape[3])

    def clear(self) -> None:
        self.k_rows, self.v_rows, self.keys, self.lengths, self.first_slots = None, None, [], [], []

    def layer(self, index: int, used: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(k [used, kv_heads, L, head_dim], v_t [used, kv_heads, head_dim, L]) of one layer's
        first ``used`` rows, contiguous; V is stored transposed (``_staged`` computes
        K @ q^T and V^T @ p^T: a big row-major left operand against 3-column right ones, which
        the CPU bf16 GEMM streams at ~10 GB/s against ~7 for q @ K^T and p @ V, measured)."""
        assert self.k_rows is not None and self.v_rows is not None
        return self.k_rows[index, :used], self.v_rows[index, :used]

    def append(self, index: int, staged: StagedDecode, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write one layer's new K/V of the decode members ([G, kv_heads, head_dim], member order)."""
        assert self.k_rows is not None and self.v_rows is not None
        # flat index_copy_ with indices computed once per step: the advanced-index write
        # (rows[i], :, :, positions[i]) into V^T cost ~120 us per call, ~7 ms per step at batch 32
        self.k_rows[index].view(-1).index_copy_(0, staged.k_index, k.reshape(-1))
        self.v_rows[index].view(-1).index_copy_(0, staged.v_index, v.reshape(-1))

    def prepare(self, plan: BatchPlan, pool_data: torch.Tensor) -> StagedDecode | None:
        """Bring the rows in line with ``plan``'s decode group (see the module contract);
        ``pool_data`` is ``KVPool.data`` [layers, 2, kv_heads, slots, head_dim]."""
        group = plan.decode
        assert group is not None
        members = [plan.seqs[i] for i in group.members]
        ids = [seq.seq_id for seq in members]
        if any(i is None for i in ids) or len(set(ids)) != len(ids):
            self.clear()
            return None
        # A context ends at num_cached + 1 (the new token): that many positions per row.
        length = _round_up(max(seq.num_cached for seq in members) + 1, LENGTH_STEP)
        num_rows = _round_up(len(members), ROW_STEP)
        if num_rows * length > self.budget_tokens:
            self.clear()
            return None
        extending = {plan.seqs[i].seq_id for i in (plan.extend.members if plan.extend is not None else [])}
        wanted = set(ids)
        row_of = {key: r for r, key in enumerate(self.keys) if key is not None}
        for key, r in list(row_of.items()):
            if key not in wanted or key in extending:
                self.keys[r] = None
                del row_of[key]
        stale = []  # members whose row must be (re)filled from the pool
        for seq in members:
            held = row_of.get(seq.seq_id)
            first = seq.runs[0][0]
            if held is None or self.lengths[held] != seq.num_cached or self.first_slots[held] != first:
                stale.append(seq)
                if held is not None:
                    self.keys[held] = None
                    del row_of[seq.seq_id]
        self._fit(num_rows, length, len(members))
        row_of = {key: r for r, key in enumerate(self.keys) if key is not None}
        free = [r for r, key in enumerate(self.keys) if key is None]
        for seq, r in zip(stale, free):
            self._fill(r, seq, pool_data)
            self.keys[r], self.first_slots[r] = seq.seq_id, seq.runs[0][0]
            row_of[seq.seq_id] = r
        rows = [row_of[key] for key in ids]
        for seq, r in zip(members, rows):
            self.lengths[r] = seq.num_cached + 1  # the forward appends position num_cached
        used = max(rows) + 1
        visible = torch.tensor([self.lengths[r] if self.keys[r] is not None else 1 for r in range(used)])
        key_mask = torch.arange(self.capacity[1])[None, :] >= visible[:, None]
        key_bias = torch.zeros(key_mask.shape, dtype=self.dtype).masked_fill_(key_mask, float("-inf"))
        key_bias = key_bias.repeat_interleave(self.config.num_kv_heads, dim=0)[:, None, :]
        row_index = torch.tensor(rows, dtype=torch.long)
        positions = torch.tensor([seq.num_cached for seq in members], dtype=torch.long)
        kv_heads, head_dim, capacity = self.config.num_kv_heads, self.config.head_dim, self.capacity[1]
        heads = torch.arange(kv_heads)[None, :, None]
        dims = torch.arange(head_dim)[None, None, :]
        pair = (row_index * kv_heads)[:, None, None] + heads  # [G, kv_heads, 1]: (row, head) pair
        k_index = (pair * capacity + positions[:, None, None]) * head_dim + dims
        v_index = (pair * head_dim + dims) * capacity + positions[:, None, None]
        return StagedDecode(
            rows=row_index.to(self.device),
            positions=positions.to(self.device),
            k_index=k_index.flatten().to(self.device),
            v_index=v_index.flatten().to(self.device),
            key_mask=key_mask.to(self.device),
            key_bias=key_bias.to(self.device),
            used=used,
            identity=rows == list(range(used)),
        )

    def _fit(self, num_rows: int, length: int, used: int) -> None:
        """Make room for ``used`` rows (the decode group: the kept rows plus the free ones
        to fill) of ``length`` positions: reallocate to (``num_rows``, ``length``), the kept
        rows compacted to the front, when too small, over budget or mostly unused."""
        have_rows, have_length = self.capacity
        grow = have_rows < used or have_length < length
        shrink = have_rows * have_length > min(4 * num_rows * length, self.budget_tokens)
        if not grow and not shrink:
            return
        kept = [r for r, key in enumerate(self.keys) if key is not None]
        cfg = self.config
        shape = (cfg.num_layers, num_rows, cfg.num_kv_heads)
        k_rows = torch.zeros(*shape, length, cfg.head_dim, dtype=self.dtype, device=self.device)
        v_rows = torch.zeros(*shape, cfg.head_dim, length, dtype=self.dtype, device=self.device)
        if self.k_rows is not None and self.v_rows is not None and kept:
            # straight into the new buffer, a run of consecutive rows per copy (an index_select
            # made a temporary as large as the rows first: twice the memory traffic)
            span = min(have_length, length)
            for to, start, stop in _runs(kept):
                n = stop - start
                k_rows[:, to : to + n, :, :span].copy_(self.k_rows[:, start:stop, :, :span])
                v_rows[:, to : to + n, :, :, :span].copy_(self.v_rows[:, start:stop, ..., :span])
        self.keys = [self.keys[r] for r in kept] + [None] * (num_rows - len(kept))
        self.lengths = [self.lengths[r] for r in kept] + [0] * (num_rows - len(kept))
        self.first_slots = [self.first_slots[r] for r in kept] + [-1] * (num_rows - len(kept))
        self.k_rows, self.v_rows = k_rows, v_rows

    def _fill(self, row: int, seq: SeqPlan, pool_data: torch.Tensor) -> None:
        """Copy positions [0, num_cached) of ``seq`` from the pool into ``row``."""
        assert self.k_rows is not None and self.v_rows is not None
        n = seq.num_cached
        if n == 0:
            return
        if len(seq.runs) == 1:
            start = seq.runs[0][0]
            source = pool_data[:, :, :, start : start + n]
        else:
            source = pool_data.index_select(3, seq.slots[:n].to(pool_data.device))
        self.k_rows[:, row, :, :n].copy_(source[:, 0])
        self.v_rows[:, row, :, :, :n].copy_(source[:, 1].mT)
