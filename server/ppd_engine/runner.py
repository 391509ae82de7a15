"""ModelRunner: owns the model and the KV pool; turns a scheduled Step into a ForwardBatch,
runs the forward and samples one token per row that needs one.

Only the engine thread calls ``run``. ``read_kv``/``write_kv`` touch slots of a request that no
forward uses at that moment (SENDING / AWAITING_KV), so the transfer code calls them from
another thread. They hold ``_transfer_lock``, which ``release`` also takes: the engine frees a
request's pages before calling ``release`` and reallocates them only after, so a copy in
flight never touches pages that belong to someone else.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from ppd_kernels import ForwardBatch, KVPool, SeqChunk

from .request import Req, State
from .sampling import sample, token_seed

if TYPE_CHECKING:
    from ppd_kernels import LoadedModel

    from .scheduler import Step


class ModelRunner:
    def __init__(
        self,
        lm: LoadedModel,
        num_slots: int,
        page_size: int,
        dtype: torch.dtype,
        device: str = "cpu",
        decode_rows_tokens: int | None = None,
    ) -> None:
        self.lm = lm
        self.page_size = page_size
        self.device = device
        self.dtype = dtype
        self.kv = KVPool(lm.config, num_slots, dtype=dtype, device=device, decode_rows_budget=decode_rows_tokens)
        self._slots: dict[str, torch.Tensor] = {}
        self._transfer_lock = threading.Lock()

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv.bytes_per_token

    def slots_of(self, req: Req) -> torch.Tensor:
        """Slots of every position of ``req`` (its pages are fixed at admission)."""
        slots = self._slots.get(req.rid)
        if slots is None:
            slots = torch.tensor(req.slot_ids(self.page_size), dtype=torch.long, device=self.device)
            self._slots[req.rid] = slots
        return slots

    def release(self, req: Req) -> None:
        with self._transfer_lock:
            self._slots.pop(req.rid, None)

    @torch.inference_mode()
    def run(self, step: Step) -> list[int]:
        """Forward one step; returns one token per row (-1 for rows that sample nothing)."""
        ids: list[int] = []
        positions: list[int] = []
        seqs = []
        for row in step.rows:
            ids += row.input_ids()
            positions += range(row.start, row.start + row.num_new)
            slots = self.slots_of(row.req)[: row.start + row.num_new]
            seqs.append(SeqChunk(num_cached=row.start, num_new=row.num_new, slots=slots, seq_id=row.req.rid))
        batch = ForwardBatch(
            input_ids=torch.tensor(ids, dtype=torch.long, device=self.device),
            positions=torch.tensor(positions, dtype=torch.long, device=self.device),
            seqs=seqs,
        )
        logits = self.lm.model.forward(batch, self.kv)
        wanted = [i for i, row in enumerate(step.rows) if row.req.state is State.DECODING or row.completes_prompt]
        tokens = [-1] * len(step.rows)
        if wanted:
            reqs = [step.rows[i].req for i in wanted]
            sampled = sample(
                logits[wanted].float(),
                [r.sampling for r in reqs],
                [token_seed(r.sampling, len(r.output_ids)) for r in reqs],
            )
            for i, token in zip(wanted, sampled):
                tokens[i] = token
        return tokens

    def read_kv(self, req: Req, start: int, end: int) -> torch.Tensor:
        """KV of positions [start, end) of ``req`` (KVPool.read layout), a new tensor on the
        pool's device (the transfer stages it to host memory or hands it over by IPC)."""
        with self._transfer_lock:
            if req.finished:
                raise RuntimeError("the request was aborted before its KV was read")
            return self.kv.read(self.slots_of(req)[start:end])

    def write_kv(self, req: Req, start: int, data: torch.Tensor) -> None:
        """Store received KV for positions [start, start + n) of ``req``."""
        n = data.shape[3]
        with self._transfer_lock:
            if req.finished:
                raise RuntimeError("the request was aborted before its KV arrived")
            self.kv.write(self.slots_of(req)[start : start + n], data)
