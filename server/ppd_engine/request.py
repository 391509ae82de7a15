"""Req: one generation request as the scheduler sees it (tokens, pages, progress, state).

Invariants: ``0 <= num_computed <= len(all_ids)``; the KV of token ``i < num_computed`` is in
slot ``pages[i // page_size] * page_size + i % page_size``; the first
``num_prefix_tokens // page_size`` pages are shared radix-cache pages locked via ``prefix_node``,
the rest are owned by this request.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from .sampling import SamplingParams
from .stopping import OutputTracker


class Mode(enum.Enum):
    LOCAL = "local"  # unified worker, or decode worker with do_local_prefill
    PREFILL_SEND = "prefill_send"  # prefill worker: compute prompt KV, sample 1 token, ship KV
    DECODE_RECV = "decode_recv"  # decode worker: receive prompt KV + first token, then decode


class State(enum.Enum):
    WAITING = "waiting"  # queued, no pages yet
    PREFILLING = "prefilling"  # pages allocated, prompt chunks being computed
    AWAITING_KV = "awaiting_kv"  # decode: pages allocated, KV transfer in flight
    DECODING = "decoding"  # one token per step
    SENDING = "sending"  # prefill: KV computed and cached, held until transferred
    FINISHED = "finished"


@dataclass(frozen=True)
class Bootstrap:
    host: str
    port: int
    room: int

    @property
    def fake(self) -> bool:
        """SGLang's warmup convention: host 2.2.2.2 means no real transfer."""
        return self.host == "2.2.2.2"


@dataclass(eq=False)
class Req:
    rid: str
    prompt_ids: list[int]
    sampling: SamplingParams
    tracker: OutputTracker
    mode: Mode = Mode.LOCAL
    bootstrap: Bootstrap | None = None
    cache_salt: str | None = None  # the prefix-cache namespace (radix_cache); None = shared
    state: State = State.WAITING
    pages: list[int] = field(default_factory=list)
    prefix_node: Any = None  # locked radix node (or None)
    num_prefix_tokens: int = 0  # tokens whose KV came from the radix cache
    num_computed: int = 0  # tokens whose KV is in the pool
    prefill_cached_tokens: int = 0  # decode: the prefill worker's own cache hit
    kv_transfer_bytes: int = 0
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    last_token_time: float | None = None
    error: str | None = None
    error_status: int = 503  # HTTP status reported when ``error`` is set
    client_rid: str = ""  # the id the client gave (or ``rid``), echoed in meta_info.id

    @property
    def output_ids(self) -> list[int]:
        return self.tracker.output_ids

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def finished(self) -> bool:
        return self.state is State.FINISHED

    @property
    def finish_reason(self) -> dict[str, Any] | None:
        return self.tracker.finish_reason

    @property
    def cached_tokens(self) -> int:
        """SGLang's accounting: the local radix hit, plus the prefill's hit for a P->D request."""
        return min(self.prompt_len, self.num_prefix_tokens + self.prefill_cached_tokens)

    @property
    def max_len(self) -> int:
        """Most tokens that will ever need KV: the prompt plus all but the last output token."""
        return self.prompt_len + max(self.sampling.max_new_tokens - 1, 0)

    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.tracker.output_ids

    def token_at(self, index: int) -> int:
        if index < self.prompt_len:
            return self.prompt_ids[index]
        return self.tracker.output_ids[index - self.prompt_len]

    def slot_ids(self, page_size: int) -> list[int]:
        """Slots of every token position this request may use, in order."""
        return [page * page_size + offset for page in self.pages for offset in range(page_size)]


@dataclass(frozen=True)
class GenerateInput:
    prompt_ids: list[int]
    sampling: SamplingParams
    rid: str | None = None
    bootstrap: Bootstrap | None = None
    do_local_prefill: bool = False
    cache_salt: str | None = None


@dataclass(frozen=True)
class Result:
    """A cumulative view of one request's output (one per streamed chunk, and the last)."""

    req: Req
    output_ids: list[int]
    text: str
    finish_reason: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
