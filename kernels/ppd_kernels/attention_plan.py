"""Per-step metadata of the batched attention: the ragged batch as (at most) two padded groups.

A forward mixes decode rows (one new token) and extend chunks (several). The batched kernel
(``attention.paged_attention``) runs each kind as ONE padded batch per layer, so the cost
of a step no longer grows with a Python loop over sequences. Everything here is computed
once per step (``ForwardBatch.plan()``) on the host, from host copies of the slots, and moved
to the device in one go; the per-layer work is then only tensor ops (no host sync on CUDA).

How a group reads its context from the pool ([kv_heads, num_slots, head_dim] per layer):
- ``view``: one sequence whose slots form one run: a zero-copy strided view of the pool;
- ``blocks``: every sequence's slots are whole aligned blocks of ``block`` slots (the page
  allocator's pages): one ``index_select`` of blocks, each a contiguous ``block * head_dim``
  memcpy (measured 2x faster than a per-slot gather on the 2-vCPU box, bf16, 32 x 1025);
- ``slots``: anything else: one per-slot ``index_select`` of the padded slot matrix.
Padding keys are excluded by the causal condition (extend) or a key mask (decode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Block sizes tried for the block gather, largest first (page sizes are powers of two).
BLOCK_SIZES = (64, 32, 16, 8)


@dataclass(slots=True)
class AttentionGroup:
    """G sequences of one kind, padded to ``num_new_max`` queries and ``context_max`` keys."""

    num_seqs: int
    members: list[int]  # indices of the group's sequences in the batch, in order
    one_run: bool  # every member's slots form one run (zero-copy per-sequence views)
    num_new_max: int  # 1 for decode
    context_max: int  # padded key length (a multiple of ``block`` when gathering blocks)
    rows: torch.Tensor | None  # [G * num_new_max] batch rows gathered as queries; None: rows 0..T in order
    out_index: torch.Tensor | None  # [sum num_new] positions of the real rows in the padded output; None: all
    out_rows: torch.Tensor  # [sum num_new] batch rows the real outputs go to
    view: tuple[int, int] | None  # (first slot, length) when one sequence reads a pool view
    block: int  # block size of ``gather`` (1 = per-slot gather)
    gather: torch.Tensor | None  # [G * context_max / block] block or slot ids to gather
    key_mask: torch.Tensor | None  # decode: bool [G, context_max], True = padding key
    query_blocks: list[tuple[int, int]]  # extend: [start, end) query row blocks
    block_masks: list[tuple[int, torch.Tensor]]  # extend, per query block: (first masked key, bool [G, rows, keys])


def plan_groups(
    num_cached: list[int],
    num_new: list[int],
    host_slots: list[torch.Tensor],
    runs: list[list[tuple[int, int]]],
    device: torch.device,
    score_tile: int,
    min_query_block: int,
) -> tuple[AttentionGroup | None, AttentionGroup | None]:
    """(decode group, extend group) of a batch whose sequence i has ``num_cached[i]`` cached
    and ``num_new[i]`` new tokens, ``host_slots[i]`` (CPU) and contiguous ``runs[i]``."""
    row_starts, row = [], 0
    for n in num_new:
        row_starts.append(row)
        row += n
    total_rows = row
    decode = [i for i, n in enumerate(num_new) if n == 1]
    extend = [i for i, n in enumerate(num_new) if n > 1]
    groups: list[AttentionGroup | None] = []
    for members, is_decode in ((decode, True), (extend, False)):
        if not members:
            groups.append(None)
            continue
        groups.append(
            _group(
                members,
                is_decode,
                num_cached,
                num_new,
                row_starts,
                host_slots,
                runs,
                total_rows,
                device,
                score_tile,
                min_query_block,
            )
        )
    return groups[0], groups[1]


def _group(
    members: list[int],
    is_decode: bool,
    num_cached: list[int],
    num_new: list[int],
    row_starts: list[int],
    host_slots: list[torch.Tensor],
    runs: list[list[tuple[int, int]]],
    total_rows: int,
    device: torch.device,
    score_tile: int,
    min_query_block: int,
) -> AttentionGroup:
    g = len(members)
    contexts = [num_cached[i] + num_new[i] for i in members]
    new_max = max(num_new[i] for i in members)
    # Rows of the real queries, and where they sit in the padded [G, new_max] layout.
    real_rows = [r for i in members for r in range(row_starts[i], row_starts[i] + num_new[i])]
    in_order = g == 1 or new_max == 1
    rows = None
    out_index = None
    if not (in_order and real_rows == list(range(total_rows))):
        if in_order:
            rows = torch.tensor(real_rows, dtype=torch.long)
        else:
            padded = [row_starts[i] + min(j, num_new[i] - 1) for i in members for j in range(new_max)]
            rows = torch.tensor(padded, dtype=torch.long)
            out_index = torch.tensor(
                [k * new_max + j for k, i in enumerate(members) for j in range(num_new[i])], dtype=torch.long
            )
    view = runs[members[0]][0] if g == 1 and len(runs[members[0]]) == 1 else None
    block, gather, context_max = 1, None, max(contexts)
    if view is None:
        block = _block_size([runs[i] for i in members])
        context_max = -(-context_max // block) * block
        if block > 1:
            gather = torch.tensor(
                [b for i in members for b in _blocks_of(runs[i], block, context_max)], dtype=torch.long
            )
        else:
            gather = torch.cat([_padded(host_slots[i], context_max) for i in members])
    key_mask = None
    if is_decode and min(contexts) != context_max:
        key_mask = torch.arange(context_max)[None, :] >= torch.tensor(contexts)[:, None]
    query_blocks, block_masks = [], []
    if not is_decode:
        step = max(min_query_block, score_tile // max(1, g * context_max))
        cached = torch.tensor([num_cached[i] for i in members])
        for start in range(0, new_max, step):
            end = min(new_max, start + step)
            first = min(num_cached[i] for i in members) + start
            visible = max(num_cached[i] + min(end, num_new[i]) for i in members)
            keys = torch.arange(first, visible)
            queries = cached[:, None] + torch.arange(start, end)[None, :]  # [G, rows]
            mask = keys[None, None, :] > queries[:, :, None]  # [G, rows, keys]
            query_blocks.append((start, end))
            block_masks.append((first, mask.to(device)))

    def move(t):
        return None if t is None else t.to(device, non_blocking=True)

    return AttentionGroup(
        num_seqs=g,
        members=members,
        one_run=all(len(runs[i]) == 1 for i in members),
        num_new_max=new_max,
        context_max=context_max,
        rows=move(rows),
        out_index=move(out_index),
        out_rows=torch.tensor(real_rows, dtype=torch.long).to(device),
        view=view,
        block=block,
        gather=move(gather),
        key_mask=move(key_mask),
        query_blocks=query_blocks,
        block_masks=block_masks,
    )


def _block_size(seq_runs: list[list[tuple[int, int]]]) -> int:
    """Largest block size B such that every run starts at a multiple of B and every run but
    a sequence's last spans whole blocks; 1 when none fits."""
    for block in BLOCK_SIZES:
        if all(
            start % block == 0 and (k == len(r) - 1 or length % block == 0)
            for r in seq_runs
            for k, (start, length) in enumerate(r)
        ):
            return block
    return 1


def _blocks_of(seq_runs: list[tuple[int, int]], block: int, context_max: int) -> list[int]:
    """Block ids covering a sequence (its last block completed past its end, padding blocks
    repeat the first one: they are masked)."""
    ids = [b for start, length in seq_runs for b in range(start // block, (start + length + block - 1) // block)]
    return ids + [ids[0]] * (context_max // block - len(ids))


def _padded(slots: torch.Tensor, length: int) -> torch.Tensor:
    if slots.numel() == length:
        return slots
    return torch.cat([slots, slots[:1].expand(length - slots.numel())])
