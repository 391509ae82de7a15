"""The P->D KV link: one shared pipe of fixed bandwidth; transfers queue FIFO behind each other.

A transfer of ``n`` bytes occupies the link for ``n / bandwidth``, exactly what
``routing.latency.transfer_ms`` predicts, so on an idle link prediction and simulation agree.
``backlog_bytes`` (bytes queued plus what is left of the transfer on the wire) is what the
simulator shows the policy as ``ClusterView.link_backlog_bytes``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ppd_sim.events import EventLoop


class KVLink:
    def __init__(self, gb_per_s: float, loop: EventLoop) -> None:
        if not gb_per_s > 0:
            raise ValueError(f"link bandwidth must be > 0 GB/s, got {gb_per_s}")
        self.gb_per_s = gb_per_s
        self._bytes_per_ms = gb_per_s * 1e9 / 1e3
        self._loop = loop
        self._queue: deque[tuple[int, Callable[..., Any], tuple[Any, ...]]] = deque()
        self._queued_bytes = 0
        self._current_end_ms = 0.0
        self._busy = False
        self.bytes_moved = 0
        self.transfers = 0

    @property
    def link_gbps(self) -> float:
        """Gigabits per second, the unit of ``ClusterView.link_gbps``."""
        return self.gb_per_s * 8.0

    def send(self, nbytes: int, done: Callable[..., Any], *args: Any) -> None:
        """Queue ``nbytes``; ``done(*args)`` runs when the last byte arrives."""
        self._queue.append((max(0, nbytes), done, args))
        self._queued_bytes += max(0, nbytes)
        if not self._busy:
            self._next()

    def backlog_bytes(self) -> int:
        on_wire = max(0.0, self._current_end_ms - self._loop.now) * self._bytes_per_ms if self._busy else 0.0
        return self._queued_bytes + int(on_wire)

    def _next(self) -> None:
        if not self._queue:
            self._busy = False
            return
        nbytes, done, args = self._queue.popleft()
        self._queued_bytes -= nbytes
        self._busy = True
        self._current_end_ms = self._loop.now + nbytes / self._bytes_per_ms
        self.bytes_moved += nbytes
        self.transfers += 1
        self._loop.at(self._current_end_ms, self._finish, done, args)

    def _finish(self, done: Callable[..., Any], args: tuple[Any, ...]) -> None:
        done(*args)
        self._next()
