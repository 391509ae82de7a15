"""What one forward computes: a ragged mix of decode rows and extend (prefill) chunks.

The engine describes each sequence by the slots of ALL its tokens in the KVPool (cached
prefix first, then the tokens of this forward). ``ForwardBatch.plan()`` derives, once per
step, everything the attention kernels need for every layer (contiguous slot runs, masks,
rows of last tokens), so the per-layer loop does no bookkeeping.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from ppd_kernels.attention_plan import AttentionGroup, plan_groups


@dataclass(slots=True)
class SeqChunk:
    """One sequence's part of a forward.

    num_cached: tokens of this sequence already in the pool (prefix / earlier chunks).
    num_new: tokens computed by this forward (1 = decode row, >1 = extend chunk).
    slots: LongTensor [num_cached + num_new], the pool slot of every token in order;
        the last ``num_new`` are written by the forward.
    seq_id: optional identity of the sequence across forwards (the engine passes the
        request id): lets CPU decode keep its KV in persistent contiguous rows
        (``decode_rows``); None: the forward reads the pool only.
    """

    num_cached: int
    num_new: int
    slots: torch.Tensor
    seq_id: Hashable | None = None

    def __post_init__(self) -> None:
        if self.num_new < 1 or self.num_cached < 0:
            raise ValueError(
                f"SeqChunk needs num_new >= 1 and num_cached >= 0, "
                f"got num_new={self.num_new}, num_cached={self.num_cached}"
            )
        if self.slots.dim() != 1 or self.slots.numel() != self.num_cached + self.num_new:
            raise ValueError(
                f"SeqChunk.slots must be 1-D of length num_cached + num_new = "
                f"{self.num_cached + self.num_new}, "
                f"got shape {tuple(self.slots.shape)}"
            )

    @property
    def context_len(self) -> int:
        return self.num_cached + self.num_new


@dataclass(slots=True)
class SeqPlan:
    """Per-step attention metadata of one sequence (shared by all layers)."""

    row_start: int  # first row of this sequence in the batch's T tokens
    num_cached: int
    num_new: int
    slots: torch.Tensor  # [num_cached + num_new]
    runs: list[tuple[int, int]]  # (first slot, length) of each contiguous slot run, in order
    query_blocks: list[tuple[int, int]]  # [start, end) row blocks that bound the score tile size
    seq_id: Hashable | None = None

    @property
    def is_decode(self) -> bool:
        return self.num_new == 1


@dataclass(slots=True)
class BatchPlan:
    new_slots: torch.Tensor  # [T] slots the forward writes, in input order
    last_rows: torch.Tensor  # [num_seqs] row of each sequence's last new token
    seqs: list[SeqPlan]
    decode: AttentionGroup | None = None  # the decode rows as one padded group (attention_plan)
    extend: AttentionGroup | None = None  # the extend chunks as one padded group
    num_rows: int = 0  # T


@dataclass(slots=True)
class ForwardBatch:
    """input_ids/positions: [T] new tokens of all sequences concatenated, T = sum(num_new)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    seqs: list[SeqChunk]
    _plan: BatchPlan | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = sum(s.num_new for s in self.seqs)
        if not self.seqs or self.input_ids.shape != (total,) or self.positions.shape != (total,):
            raise ValueError(
                f"ForwardBatch needs >= 1 sequence and input_ids/positions of shape "
                f"[{total}] (sum of num_new), got {tuple(self.input_ids.shape)} / "
                f"{tuple(self.positions.shape)}"
            )

    @classmethod
    def build(
        cls,
        new_token_ids: Sequence[Sequence[int]],
        num_cached: Sequence[int],
        slots: Sequence[Sequence[int] | torch.Tensor],
        device: str | torch.device = "cpu",
        seq_ids: Sequence[Hashable | None] | None = None,
    ) -> ForwardBatch:
        """Batch from plain lists; positions are ``num_cached + i`` for the i-th new token."""
        seqs: list[SeqChunk] = []
        ids: list[int] = []
        positions: list[int] = []
        keys = [None] * len(slots) if seq_ids is None else seq_ids
        for tokens, cached, seq_slots, key in zip(new_token_ids, num_cached, slots, keys, strict=True):
            slot_tensor = torch.as_tensor(seq_slots, dtype=torch.long, device=device)
            seqs.append(SeqChunk(num_cached=cached, num_new=len(tokens), slots=slot_tensor, seq_id=key))
            ids.extend(tokens)
            positions.extend(range(cached, cached + len(tokens)))
        return cls(
            input_ids=torch.tensor(ids, dtype=torch.long, device=device),
            positions=torch.tensor(positions, dtype=torch.long, device=device),
            seqs=seqs,
        )

    def plan(self) -> BatchPlan:
        """Attention metadata, computed on first use and cached for the step."""
        if self._plan is None:
            self._plan = _make_plan(self.seqs)
        return self._plan


def contiguous_runs(slots: torch.Tensor) -> list[tuple[int, int]]:
    """Split a slot list into maximal runs of consecutive slots: [(first_slot, length), ...]."""
    n = slots.numel()
    breaks = torch.nonzero(torch.diff(slots) != 1).flatten().tolist() if n > 1 else []
    starts = [0] + [b + 1 for b in breaks]
    ends = breaks + [n - 1]
    first_slots = slots[starts].tolist()
    return [(first, end - start + 1) for first, start, end in zip(first_slots, starts, ends)]


def causal_mask(num_cached: int, num_new: int, device: torch.device) -> torch.Tensor:
    """bool [num_new, num_cached + num_new]: new token i sees keys 0 .. num_cached + i."""
    keys = torch.arange(num_cached + num_new, device=device)
    queries = torch.arange(num_cached, num_cached + num_new, device=device)
    return keys[None, :] <= queries[:, None]


# Query rows per attention block: keeps a block's scores (heads x rows x context) near
# 2**18 x heads elements, which measured as fast as any larger tile on CPU.
SCORE_TILE = 2**18
MIN_QUERY_BLOCK = 32
# On CUDA the score tile only bounds memory (no cache to fit): 2**24 elements is 32 MB in
# bf16 per kv head group, and keeps an 8k prefill at 4 query blocks per layer (untested: no GPU here).
CUDA_SCORE_TILE = 2**24


def query_blocks(num_new: int, context: int) -> list[tuple[int, int]]:
    rows = max(MIN_QUERY_BLOCK, SCORE_TILE // context)
    return [(start, min(num_new, start + rows)) for start in range(0, num_new, rows)]


def _make_plan(seqs: list[SeqChunk]) -> BatchPlan:
    device = seqs[0].slots.device
    # One device->host copy of every slot list (one sync on CUDA), then host-side planning.
    host = torch.cat([seq.slots for seq in seqs]).cpu() if device.type != "cpu" else None
    plans, host_slots, all_runs, last_rows = [], [], [], []
    row = offset = 0
    for seq in seqs:
        n = seq.context_len
        slots_host = seq.slots if host is None else host[offset : offset + n]
        offset += n
        runs = contiguous_runs(slots_host)
        plans.append(
            SeqPlan(
                row_start=row,
                num_cached=seq.num_cached,
                num_new=seq.num_new,
                slots=seq.slots,
                runs=runs,
                query_blocks=query_blocks(seq.num_new, seq.context_len),
                seq_id=seq.seq_id,
            )
        )
        host_slots.append(slots_host)
        all_runs.append(runs)
        row += seq.num_new
        last_rows.append(row - 1)
    decode, extend = plan_groups(
        [s.num_cached for s in seqs],
        [s.num_new for s in seqs],
        host_slots,
        all_runs,
        device,
        CUDA_SCORE_TILE if device.type == "cuda" else SCORE_TILE,
        MIN_QUERY_BLOCK,
    )
    new_slots = torch.cat([seq.slots[seq.num_cached :] for seq in seqs])
    return BatchPlan(
        new_slots=new_slots,
        last_rows=torch.tensor(last_rows, dtype=torch.long).to(device),
        seqs=plans,
        decode=decode,
        extend=extend,
        num_rows=row,
    )
