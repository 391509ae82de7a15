"""Continuous batching with chunked prefill, admission control and the P/D request states.

Each step mixes every decoding request (one token each) with at most
``chunked_prefill_size`` prompt tokens from prefilling requests (first come, first served),
so a long prompt is spread over several steps instead of stalling the decode streams.

Admission reserves, up front, every page a request can ever need (prompt plus
max_new_tokens, minus its cached prefix), preferring one contiguous run right after the
prefix: a request admitted never runs out of KV, so there is no retraction. When pages are
short, unlocked prefix-cache pages are evicted (LRU); if still short, the queue waits.

Pure bookkeeping (no torch): the engine calls ``schedule()``, runs the forward, then
``on_forward_done(step, tokens)`` with one sampled token per row.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .pages import PageAllocator
from .radix_cache import RadixCache
from .request import Mode, Req, State


@dataclass(slots=True)
class Row:
    req: Req
    start: int  # tokens of the sequence already in the pool
    num_new: int  # tokens computed by this step

    @property
    def completes_prompt(self) -> bool:
        return self.start + self.num_new >= self.req.prompt_len

    def input_ids(self) -> list[int]:
        return [self.req.token_at(i) for i in range(self.start, self.start + self.num_new)]


@dataclass
class Step:
    rows: list[Row] = field(default_factory=list)
    admitted_awaiting_kv: list[Req] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        num_pages: int,
        page_size: int,
        chunked_prefill_size: int,
        max_running_requests: int,
        enable_radix_cache: bool = True,
    ) -> None:
        self.page_size = page_size
        self.chunked_prefill_size = chunked_prefill_size
        self.max_running_requests = max_running_requests
        self.allocator = PageAllocator(num_pages, page_size)
        self.cache = RadixCache(page_size) if enable_radix_cache else None
        self.waiting: deque[Req] = deque()
        self.active: list[Req] = []  # admitted and unfinished, in admission order

    # ---- queue views -------------------------------------------------------------------
    def by_state(self, state: State) -> list[Req]:
        return [r for r in self.active if r.state is state]

    @property
    def num_running(self) -> int:
        return len(self.active)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_used_tokens(self) -> int:
        evictable = self.cache.num_evictable_pages if self.cache else 0
        return (self.allocator.num_pages - self.allocator.num_free - evictable) * self.page_size

    @property
    def max_total_tokens(self) -> int:
        return self.allocator.num_pages * self.page_size

    # ---- lifecycle -------------------------------------------------------------------
    def add(self, req: Req) -> None:
        if self.pages_needed(req.max_len) > self.allocator.num_pages:
            raise ValueError(f"request needs {req.max_len} tokens, pool holds {self.max_total_tokens}")
        self.waiting.append(req)

    def pages_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def schedule(self) -> Step:
        step = Step()
        for req in self.by_state(State.DECODING):
            step.rows.append(Row(req, req.num_computed, 1))
        budget = self.chunked_prefill_size
        for req in self.by_state(State.PREFILLING):
            budget = self._add_chunk(step, req, budget)
        while self.waiting and len(self.active) < self.max_running_requests:
            req = self.waiting[0]
            if req.mode is not Mode.DECODE_RECV and budget <= 0:
                break
            if not self._admit(req):
                break
            self.waiting.popleft()
            self.active.append(req)
            if req.mode is Mode.DECODE_RECV:
                req.state = State.AWAITING_KV
                step.admitted_awaiting_kv.append(req)
            else:
                req.state = State.PREFILLING
                budget = self._add_chunk(step, req, budget)
        return step

    def _add_chunk(self, step: Step, req: Req, budget: int) -> int:
        take = min(budget, req.prompt_len - req.num_computed)
        if take > 0:
            step.rows.append(Row(req, req.num_computed, take))
        return budget - take

    def _admit(self, req: Req) -> bool:
        prefix_pages: list[int] = []
        node = None
        if self.cache is not None:
            limit = req.prompt_len if req.mode is Mode.DECODE_RECV else req.prompt_len - 1
            prefix_pages, node = self.cache.match(req.prompt_ids, limit, req.cache_salt)
            self.cache.lock(node)
        needed = self.pages_needed(req.max_len) - len(prefix_pages)
        deficit = needed - self.allocator.num_free
        if deficit > 0:
            if self.cache is None or self.cache.num_evictable_pages < deficit:
                if self.cache is not None and node is not None:
                    self.cache.unlock(node)
                return False
            self.allocator.free(self.cache.evict(deficit))
        own = self.allocator.alloc(needed, after=prefix_pages[-1] if prefix_pages else None)
        req.pages = prefix_pages + own
        req.prefix_node = node
        req.num_prefix_tokens = len(prefix_pages) * self.page_size
        req.num_computed = req.num_prefix_tokens
        return True

    def on_forward_done(self, step: Step, tokens: list[int]) -> list[Req]:
        """Apply one step's results (one sampled token per row; ignored for a row that does
        not finish its prompt). Returns the requests that produced a token."""
        produced = []
        for row, token in zip(step.rows, tokens):
            req = row.req
            if req.finished:  # aborted while the forward ran
                continue
            req.num_computed = row.start + row.num_new
            if req.state is State.PREFILLING and not row.completes_prompt:
                continue
            produced.append(req)
            reason = _record(req, token)
            if req.mode is Mode.PREFILL_SEND:
                req.state = State.SENDING
            elif reason is not None:
                self.finish(req)
            else:
                req.state = State.DECODING
        return produced

    def on_kv_received(self, req: Req, first_token: int) -> bool:
        """Decode side: the prompt KV is in the pool; start decoding. True if it produced."""
        if req.state is not State.AWAITING_KV:
            return False
        req.num_computed = req.prompt_len
        reason = _record(req, first_token)
        if reason is not None:
            self.finish(req)
        else:
            req.state = State.DECODING
        return True

    def abort(self, req: Req, reason: dict) -> None:
        if req.finished:
            return
        if req.tracker.finish_reason is None:
            req.tracker.finish_now(reason)
        if req in self.waiting:
            self.waiting.remove(req)
            req.state = State.FINISHED
            return
        self.finish(req)

    def finish(self, req: Req) -> None:
        """Release a request's pages; its computed tokens go into the prefix cache (prompt AND
        output, so the next turn of a conversation hits both)."""
        if req.finished:
            return
        num_prefix_pages = req.num_prefix_tokens // self.page_size
        keep = 0
        if self.cache is not None:
            full_pages = req.num_computed // self.page_size
            canonical, redundant, _ = self.cache.insert(
                req.all_ids()[: req.num_computed], req.pages[:full_pages], req.cache_salt
            )
            keep = len(canonical)
            self.allocator.free(redundant)
            if req.prefix_node is not None:
                self.cache.unlock(req.prefix_node)
        self.allocator.free(req.pages[max(keep, num_prefix_pages) :])
        req.pages, req.prefix_node = [], None
        req.state = State.FINISHED
        if req in self.active:
            self.active.remove(req)

    def flush_cache(self) -> bool:
        """Drop the prefix cache; refused (False) while any request is admitted."""
        if self.active or self.cache is None:
            return self.cache is None
        self.allocator.free(self.cache.reset())
        return True


def _record(req: Req, token: int) -> dict | None:
    """Record a sampled token; with max_new_tokens=0 (SGLang: prefill only) the request ends
    at its prompt instead, with no output token."""
    if req.sampling.max_new_tokens == 0:
        return req.tracker.finish_now({"type": "length", "length": 0})
    return req.tracker.append(token)
