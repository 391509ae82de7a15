"""Bookkeeping of the D-local requests the router has in flight on one decode worker.

The ``ppd`` policy prices a local append-prefill by what it does to *all* the worker's streams,
with every local prefill already committed there (latency.committed_local_ms_per_step). A load
poll cannot say which of a worker's requests were local; the router can: it sent them. The live
router (``fleet.workers.Worker``) and the simulator (``ppd_sim.worker.SimWorker``) keep one
:class:`LocalLoad` per decode worker, :meth:`commit` when a local request is sent and
:meth:`release` when it ends, and copy :meth:`view_fields` into the ``WorkerView``.

Per request it keeps the uncached prompt tokens ``n`` the worker prefills and the answer length
``N`` the router expects. A stream absorbs the local prefill that runs during its life; by
Little's law the rate of that work, per decode step, is the sum over the local requests in
flight of ``prefill(n_i) / N_i``, so the view carries ``sum n_i / N_i`` and ``sum 1 / N_i``
(the per-token and per-request parts of that sum) beside the plain counts.

:class:`PrefillLoad` is the same bookkeeping for the prefills the router has in flight on a
prefill worker (P->D's first half, sent and not yet done): their count, uncached tokens and
attention term. Every one of them is queued or running there, so the wait ahead of the next
prefill is their compute (``latency.queue_wait_ms``), current on every dispatch; the load poll
(every ``load_interval_s``) is not, and pricing the requests it has not seen like the request at
hand under-priced a short turn queued behind long ones (issue 7: 1P3D mixed 32/s).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class LocalLoad:
    __slots__ = ("_items", "reqs_per_step", "tokens", "tokens_per_step")

    def __init__(self) -> None:
        self._items: dict[Hashable, tuple[int, int]] = {}
        self.tokens = 0
        self.tokens_per_step = 0.0
        self.reqs_per_step = 0.0

    @property
    def reqs(self) -> int:
        return len(self._items)

    def commit(self, key: Hashable, prefill_tokens: int, output_tokens: int) -> None:
        """A local request was sent: ``prefill_tokens`` uncached prompt tokens, ``output_tokens`` expected."""
        if key in self._items:
            self.release(key)
        n, out = max(int(prefill_tokens), 0), max(int(output_tokens), 1)
        self._items[key] = (n, out)
        self.tokens += n
        self.tokens_per_step += n / out
        self.reqs_per_step += 1.0 / out

    def release(self, key: Hashable) -> None:
        """The request ended (answered, failed or cancelled); unknown keys are ignored."""
        item = self._items.pop(key, None)
        if item is None:
            return
        if not self._items:  # no float drift survives an idle moment
            self.tokens, self.tokens_per_step, self.reqs_per_step = 0, 0.0, 0.0
            return
        n, out = item
        self.tokens -= n
        self.tokens_per_step = max(0.0, self.tokens_per_step - n / out)
        self.reqs_per_step = max(0.0, self.reqs_per_step - 1.0 / out)

    def view_fields(self) -> dict[str, Any]:
        """The ``WorkerView`` fields: ``WorkerView(..., **load.view_fields())``."""
        return {
            "local_prefill_reqs": self.reqs,
            "local_prefill_tokens": self.tokens,
            "local_prefill_tokens_per_step": self.tokens_per_step,
            "local_prefill_reqs_per_step": self.reqs_per_step,
        }


class PrefillLoad:
    """The router's prefills in flight on one prefill worker (committed at dispatch, released when
    the worker is done with them): count, uncached tokens ``n`` and attention work ``n*(n+c)/1e6``."""

    __slots__ = ("_items", "attn_ktok2", "tokens")

    def __init__(self) -> None:
        self._items: dict[Hashable, tuple[int, float]] = {}
        self.tokens = 0
        self.attn_ktok2 = 0.0

    @property
    def reqs(self) -> int:
        return len(self._items)

    def commit(self, key: Hashable, new_tokens: int, cached_tokens: int = 0) -> None:
        """A prefill of ``new_tokens`` over ``cached_tokens`` the worker holds was sent."""
        if key in self._items:
            self.release(key)
        n = max(int(new_tokens), 0)
        attn = n * (n + max(int(cached_tokens), 0)) / 1e6
        self._items[key] = (n, attn)
        self.tokens += n
        self.attn_ktok2 += attn

    def release(self, key: Hashable) -> None:
        """The prefill is done (or failed, or was cancelled); unknown keys are ignored."""
        item = self._items.pop(key, None)
        if item is None:
            return
        if not self._items:  # no float drift survives an idle moment
            self.tokens, self.attn_ktok2 = 0, 0.0
            return
        self.tokens -= item[0]
        self.attn_ktok2 = max(0.0, self.attn_ktok2 - item[1])

    def view_fields(self) -> dict[str, Any]:
        """The ``WorkerView`` fields: ``WorkerView(..., **load.view_fields())``."""
        return {
            "router_prefill_reqs": self.reqs,
            "router_prefill_tokens": self.tokens,
            "router_prefill_attn_ktok2": self.attn_ktok2,
        }
