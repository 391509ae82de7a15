"""Page allocator over the KV pool.

The pool has ``num_pages`` pages of ``page_size`` slots; token ``i`` of a sequence lives in
slot ``pages[i // page_size] * page_size + i % page_size``. The fast attention reads a
contiguous run of slots as a zero-copy view, so ``alloc`` prefers one contiguous run (first
fit), then the page right after ``after`` (to extend a sequence's last run), and only then
falls back to the largest free runs. Pure bookkeeping: integers only, no torch.
"""

from __future__ import annotations

_FREE = 1
_USED = 0


class OutOfPages(RuntimeError):
    pass


class PageAllocator:
    def __init__(self, num_pages: int, page_size: int) -> None:
        if num_pages < 1 or page_size < 1:
            raise ValueError("num_pages and page_size must be >= 1")
        self.num_pages = num_pages
        self.page_size = page_size
        # One byte per page: bytes.find on it locates free runs at C speed.
        self._state = bytearray([_FREE]) * num_pages
        self._num_free = num_pages

    @property
    def num_free(self) -> int:
        return self._num_free

    def alloc(self, n: int, after: int | None = None) -> list[int]:
        """Allocate ``n`` pages, as contiguous as possible; ``after`` is the page the new ones
        should follow (the sequence's current last page). Raises OutOfPages if fewer are free."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if n == 0:
            return []
        if n > self._num_free:
            raise OutOfPages(f"need {n} pages, {self._num_free} free")
        pages = self._take_run_after(after, n) or self._take_first_run(n) or self._take_largest_runs(n)
        self._num_free -= len(pages)
        return pages

    def free(self, pages: list[int]) -> None:
        for page in pages:
            if self._state[page] == _FREE:
                raise ValueError(f"double free of page {page}")
            self._state[page] = _FREE
        self._num_free += len(pages)

    def reset(self) -> None:
        self._state = bytearray([_FREE]) * self.num_pages
        self._num_free = self.num_pages

    def _mark(self, start: int, n: int) -> list[int]:
        self._state[start : start + n] = bytes([_USED]) * n
        return list(range(start, start + n))

    def _take_run_after(self, after: int | None, n: int) -> list[int] | None:
        if after is None or after + 1 + n > self.num_pages:
            return None
        start = after + 1
        if self._state[start : start + n] == bytes([_FREE]) * n:
            return self._mark(start, n)
        return None

    def _take_first_run(self, n: int) -> list[int] | None:
        start = self._state.find(bytes([_FREE]) * n)
        return self._mark(start, n) if start >= 0 else None

    def free_runs(self) -> list[tuple[int, int]]:
        """(start, length) of every maximal run of free pages, in page order."""
        runs, start = [], None
        for page, state in enumerate(self._state):
            if state == _FREE and start is None:
                start = page
            elif state != _FREE and start is not None:
                runs.append((start, page - start))
                start = None
        if start is not None:
            runs.append((start, self.num_pages - start))
        return runs

    def _take_largest_runs(self, n: int) -> list[int]:
        pages: list[int] = []
        for start, length in sorted(self.free_runs(), key=lambda run: -run[1]):
            take = min(length, n - len(pages))
            pages += self._mark(start, take)
            if len(pages) == n:
                break
        return pages
