"""A worker's KV pool, radix-ish: slots pinned by running requests plus a per-conversation prefix
cache in the free space, evicted least recently used first.

Granularity is one cached prefix per conversation (turns of a conversation extend each other's
prompts, so a conversation's longest cached prefix is all a radix tree would find for it). Cached
prefixes are evictable; pinned slots are not, so a request is admitted iff the pinned total plus
its need fits the capacity (the cache makes way). Capacity 0 means unbounded.

``page_tokens`` (SGLang's ``page_size``): the cache matches whole pages only, so a hit is rounded
down to a page multiple (the embedded ppd-worker uses 16-token pages: on a ~60-token append the
partial last page of the history is recomputed, ~8 tokens on average). 1 = token-granular.
"""

from __future__ import annotations

from collections import OrderedDict


class KVPool:
    def __init__(self, capacity_tokens: int, keeps_prefixes: bool = True, page_tokens: int = 1) -> None:
        if page_tokens < 1:
            raise ValueError(f"page size must be >= 1 token, got {page_tokens}")
        self.capacity = max(0, capacity_tokens)
        self.page_tokens = page_tokens
        self.keeps_prefixes = keeps_prefixes
        self.pinned = 0
        self.cached_total = 0
        self.evicted_tokens = 0
        self._cache: OrderedDict[str, int] = OrderedDict()  # conversation -> cached tokens, LRU first

    def hit(self, conversation: str, prompt_tokens: int) -> int:
        """Prompt tokens found cached (the last prompt token is always computed: its logits)."""
        hit = self._cache.get(conversation, 0)
        if hit > prompt_tokens - 1:
            hit = prompt_tokens - 1
        if hit <= 0:
            return 0
        page = self.page_tokens
        return hit - hit % page if page > 1 else hit  # page_aligned

    def fits(self, need: int) -> bool:
        return self.capacity <= 0 or self.pinned + need <= self.capacity

    def admit(self, conversation: str, prompt_tokens: int, need: int) -> int | None:
        """Pin ``need`` slots for a request; returns its cache hit, or None when it must wait.
        The conversation's cached prefix becomes part of the pinned slots (it is in use)."""
        capacity = self.capacity
        if capacity > 0 and self.pinned + need > capacity:  # not fits(need)
            return None
        hit = self.hit(conversation, prompt_tokens)
        cached = self._cache.pop(conversation, 0)
        if cached:
            self.cached_total -= cached
        self.pinned += need
        if capacity > 0 and self.pinned + self.cached_total > capacity:  # _evict has work
            self._evict()
        return hit

    def release(self, conversation: str, pinned: int, keep_tokens: int) -> None:
        """Unpin a finished request's slots; ``keep_tokens`` of them stay cached for the conversation."""
        self.pinned -= pinned
        if self.keeps_prefixes and keep_tokens > 0:
            cache = self._cache
            self.cached_total -= cache.pop(conversation, 0)
            cache[conversation] = keep_tokens
            self.cached_total += keep_tokens
        if 0 < self.capacity < self.pinned + self.cached_total:  # _evict has work
            self._evict()

    def _evict(self) -> None:
        if self.capacity <= 0:
            return
        while self._cache and self.pinned + self.cached_total > self.capacity:
            _, tokens = self._cache.popitem(last=False)
            self.cached_total -= tokens
            self.evicted_tokens += tokens


def page_aligned(tokens: int, page_tokens: int) -> int:
    """``tokens`` rounded down to whole pages (what a page-granular prefix cache can match)."""
    return tokens - tokens % page_tokens if page_tokens > 1 else tokens
