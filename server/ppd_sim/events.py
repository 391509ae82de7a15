"""The event loop: a heap of (time, sequence) ordered callbacks. Simulated milliseconds; ties run
in scheduling order, so a run is a deterministic function of its inputs."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class EventLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.events_run = 0
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0

    def at(self, t_ms: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at simulated time ``t_ms`` (never before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (t_ms if t_ms > self.now else self.now, self._seq, fn, args))

    def reserve(self, n: int) -> int:
        """Take ``n`` places in the scheduling order now (for events pushed later with
        :meth:`at_reserved`); returns the first. A stream of events known in advance (the
        conversations' arrivals) then keeps only its next event on the heap, in the order it would
        have had if every one had been scheduled now."""
        first = self._seq + 1
        self._seq += n
        return first

    def at_reserved(self, t_ms: float, seq: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at ``t_ms`` in the reserved place ``seq`` (see :meth:`reserve`); the
        caller clamps ``t_ms`` as :meth:`at` would have when the place was reserved."""
        heapq.heappush(self._heap, (t_ms, seq, fn, args))

    def pending(self) -> int:
        """Events scheduled and not yet run."""
        return len(self._heap)

    def run(self, max_time_ms: float, max_events: int, tick: Callable[[], None] | None = None) -> str | None:
        """Run until no event is left (returns None) or a budget is spent (returns why: the
        cluster could not drain its queues in time). ``tick`` is called every 20000 events."""
        heap, pop = self._heap, heapq.heappop
        n = self.events_run
        # the fewest checks per event: the time after the pop (an event past the limit goes back on
        # the heap), the count against the next stop (the budget, or with a tick its next multiple
        # of 20000); the same events run, in the same order, as with every check on every event
        every = 20000
        stop_at = max_events if tick is None else min(max_events, (n // every + 1) * every)
        try:
            while heap:
                t, seq, fn, args = pop(heap)
                if t > max_time_ms:
                    heapq.heappush(heap, (t, seq, fn, args))
                    return f"stopped at {max_time_ms / 1000:.0f}s simulated before the queues drained (overloaded)"
                self.now = t
                fn(*args)
                n += 1
                if n >= stop_at:
                    if n >= max_events:
                        return f"stopped after {max_events} events before the queues drained"
                    self.events_run = n  # a multiple of 20000: tick
                    assert tick is not None
                    tick()
                    stop_at = min(max_events, n + every)
            return None
        finally:
            self.events_run = n
