"""A simulated SGLang-style worker: continuous batching with chunked prefill, over a KV pool.

Every iteration is one forward pass. Its duration comes from ``routing.latency`` with the
worker's :class:`CostCoefficients` (the same step-time model the router predicts with):

* decode only: ``decode_step_ms(b, K)`` for ``b`` running streams holding ``K`` context tokens;
* with prefill pieces (up to ``chunk_tokens`` prompt tokens, FIFO over admitted prefills):
  ``prefill_ms`` of the first piece, the marginal prefill cost of the others (no second base),
  plus ``decode_rows_ms(b, K)`` for the streams that ride along. On a decode worker this is the
  PPD asymmetry: a local append-prefill lengthens the iteration every running stream waits for.

Roles: ``prefill`` (prefill only; the KV then leaves over the link), ``decode`` (streams from
transferred KV; with ``can_local_prefill`` also append-prefills locally), ``unified`` (prefill
and decode in one place). A prefill/local/replica request ends its prefill with its first token.
A transferred request's first token was sampled by the prefill worker and travels with its KV:
it goes out when the iteration in flight on the decode worker ends (at once on an idle one), with
no forward pass of its own - SGLang's prebuilt batch and ``ppd-worker``'s ``kv_received`` both
handle a landed KV between iterations - and the stream decodes the rest from the next iteration.

The load a worker reports (:meth:`view`) mirrors SGLang's ``/v1/loads`` as ``ppd_server.fleet.loads``
parses it: running = decoding + prefilling requests, waiting = unadmitted prefills plus P->D
requests still waiting for their KV (SGLang's prealloc/transfer queue), waiting_tokens =
uncached prompt tokens not yet prefilled, used_tokens = pinned KV slots (not the evictable
cache), plus the router's own in-flight count.

Poll lag: the live router reads those load fields every ``load_interval_s`` (``fleet.workers``)
and keeps its own in-flight count current. With ``poll_lag`` a worker's view shows its load as of
its last :meth:`poll`, less the router's requests to it that ended since (``Worker.view`` takes
them off the polled running count and scales the context alike), with the in-flight count of now.
Without it the view is the instantaneous load (a router polling continuously).

Coasting (speed; ``reference`` turns it off): a run of decode-only iterations (no prefill piece;
streams may join at its first) is fully determined until its first stream finishes, so its
iteration end times are computed in one go and one event stands for them all. Anything that could
change the next iteration (a prefill submitted, a stream's KV arriving) or that reads the load first
settles the run at the iteration in flight and turns it back into ordinary events. The
arithmetic is the same, in the same order, as iterating one event at a time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from functools import reduce
from heapq import heappop, heappush
from itertools import accumulate
from operator import add
from typing import Protocol

from ppd_server.routing.frozen import constructor
from ppd_server.routing.latency import decode_rows_ms, prefill_ms
from ppd_server.routing.local_load import LocalLoad, PrefillLoad
from ppd_server.routing.types import CostCoefficients, Role, WorkerView
from ppd_sim.events import EventLoop
from ppd_sim.kv import KVPool
from ppd_sim.request import SimRequest

_new_view = constructor(WorkerView)  # WorkerView(...), built faster (frozen.constructor)
_COAST_MAX = 32  # iterations one coasting event stands for at most (16 and 64 measured ~1% slower)
#: a coasting run: (first iteration index, end times, the steps after the first, context at its start)
Coast = tuple[int, list[float], list[float], int]


class WorkerHost(Protocol):
    """What a worker tells the simulation."""

    def on_prefilled(self, worker: SimWorker, req: SimRequest) -> None: ...  # prefill role: KV ready to send
    def on_kv_slots(self, worker: SimWorker, req: SimRequest) -> None: ...  # decode: slots pinned, send the KV
    def on_finished(self, worker: SimWorker, req: SimRequest) -> None: ...


def batch_prefill_ms(c: CostCoefficients, pieces: list[tuple[SimRequest, int, int]]) -> float:
    """One forward pass over several requests' prompt pieces (request, new tokens, tokens before)."""
    total = 0.0
    for k, (_, n, before) in enumerate(pieces):
        total += prefill_ms(c, n, before) - (c.prefill_base_ms if k else 0.0)
    return total


class SimWorker:
    def __init__(
        self,
        url: str,
        role: Role,
        coefficients: CostCoefficients,
        loop: EventLoop,
        host: WorkerHost,
        kv_capacity_tokens: int,
        kv_bytes_per_token: int,
        chunk_tokens: int,
        can_local_prefill: bool = False,
        decode_radix_cache: bool = False,
        poll_lag: bool = False,
        reference: bool = False,
        page_tokens: int = 1,
    ) -> None:
        if chunk_tokens < 1:
            raise ValueError(f"chunk size must be >= 1 token, got {chunk_tokens}")
        self.url = url
        self.role: Role = role
        self.coefficients = coefficients
        self.kv_bytes_per_token = kv_bytes_per_token
        self.chunk_tokens = chunk_tokens
        self.can_local_prefill = role == "decode" and can_local_prefill
        self.decode_radix_cache = role == "decode" and decode_radix_cache
        keeps = role != "decode" or self.decode_radix_cache or self.can_local_prefill
        self.kv = KVPool(kv_capacity_tokens, keeps_prefixes=keeps, page_tokens=page_tokens)
        self._loop = loop
        self._host = host
        self.inflight = 0
        self.local_load = LocalLoad()  # the router's D-local requests in flight here
        self.prefill_load = PrefillLoad()  # prefill role: the router's prefills in flight here
        self.busy_ms = 0.0
        self.iterations = 0
        self._busy = False
        self._waiting: deque[SimRequest] = deque()  # prefills not yet admitted (no KV slots yet)
        self._waiting_estimate: dict[int, int] = {}  # rid -> uncached tokens guessed at submit
        self._waiting_tokens = 0
        self._prefilling: list[SimRequest] = []  # admitted, prompt not fully computed
        self._prefill_left = 0
        self._expecting = 0  # P->D requests routed here whose KV has not joined yet
        self._prealloc: deque[SimRequest] = deque()  # P->D requests whose prefill is done, waiting for slots
        self._joins: list[tuple[SimRequest, int, int]] = []  # (request, tokens to emit, context) for the next iteration
        self._landed: list[SimRequest] = []  # P->D requests whose KV landed during the iteration in flight
        self._finish_heap: list[tuple[int, int, SimRequest]] = []  # (iteration it finishes at, rid, request)
        self._running = 0
        self._context = 0  # total context tokens of running streams
        self._p_pinned: dict[int, int] = {}  # prefill role: rid -> slots held until the KV is sent
        self.poll_lag = poll_lag
        self._polled: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)  # load at the last poll
        self._ended_since_poll = 0  # the router's requests here that ended after the last poll
        # With poll lag the view changes only at a poll or when the router's own counts move: it is
        # built then, not on every turn (``reference`` = rebuild it every time, the plain path).
        self._cache_views = poll_lag and not reference
        self._view: WorkerView | None = None
        self.changed: Callable[[], None] | None = None  # told when the view must be rebuilt
        self._may_coast = not reference
        # a coasting run: (first iteration index, end times, the steps after the first, context at its start)
        self._coast: Coast | None = None

    # -- what the router sees --------------------------------------------------------------

    def load(self) -> tuple[int, int, int, int, int]:
        """The load fields of ``/v1/loads`` now: (running, waiting, waiting tokens, used tokens,
        running context tokens)."""
        context = self._context
        if self._coast is not None:  # read it without settling: only the context moved
            context = self._coast[3] + bisect_left(self._coast[1], self._loop.now) * self._running
        return (
            self._running + len(self._prefilling) + len(self._joins),
            len(self._waiting) + self._expecting,
            self._waiting_tokens + self._prefill_left,
            self.kv.pinned,
            context + sum(ctx for _, _, ctx in self._joins),
        )

    def poll(self) -> None:
        """The router polls this worker's load now (``WorkerRegistry.poll_once``)."""
        polled = self.load()
        if polled != self._polled or self._ended_since_poll:
            self._polled = polled
            self._ended_since_poll = 0
            self._invalidate()

    def view_running(self) -> int:
        """``view().running_reqs`` without building the view."""
        if self.poll_lag:
            return max(0, self._polled[0] - self._ended_since_poll)
        return self._running + len(self._prefilling) + len(self._joins)

    def view(self, coefficients: CostCoefficients | None = None) -> WorkerView:
        """The load report as the router sees it; ``coefficients`` = what the router's cost model
        believes (default: the truth)."""
        coefficients = self.coefficients if coefficients is None else coefficients
        cached = self._view
        if cached is not None and cached.coefficients is coefficients:
            return cached
        if self.poll_lag:
            polled, waiting, waiting_tokens, used, polled_context = self._polled
            running = polled - self._ended_since_poll
            if running < 0:  # max(0, running), written out
                running = 0
            context = polled_context * running // polled if polled else 0
        else:
            running, waiting, waiting_tokens, used, context = self.load()
        load, own = self.local_load, self.prefill_load
        view = _new_view(  # positional, in field order (faster); test_sim_parts holds it to the names
            self.url,
            self.role,
            True,  # healthy
            self.can_local_prefill,
            self.decode_radix_cache,
            None,  # bootstrap_port
            self.kv.capacity,  # max_total_tokens
            self.kv_bytes_per_token,
            running,
            waiting,
            waiting_tokens,
            used,
            context,  # running_context_tokens
            self.inflight,
            load.reqs,  # local_prefill_reqs
            load.tokens,
            load.tokens_per_step,
            load.reqs_per_step,
            self.chunk_tokens,  # chunked_prefill_size
            coefficients,
            own.reqs,  # router_prefill_reqs
            own.tokens,
            own.attn_ktok2,
        )
        if self._cache_views:
            self._view = view
        return view

    def _invalidate(self) -> None:
        if self._view is not None:
            self._view = None
            if self.changed is not None:
                self.changed()

    def _release(self) -> None:
        """One of the router's requests to this worker ended (``Worker.release``)."""
        self.inflight -= 1
        self._ended_since_poll += 1
        self._invalidate()

    # -- entry points ------------------------------------------------------------------------

    def submit_prefill(self, req: SimRequest) -> None:
        """A prefill here: P->D's first half (prefill role), D-local (decode) or replica (unified)."""
        self.inflight += 1
        self._invalidate()
        if self._coast is not None:
            self._settle()
        estimate = req.prompt_tokens - self.kv.hit(req.conversation_id, req.prompt_tokens)
        self._waiting_estimate[req.rid] = estimate
        self._waiting_tokens += estimate
        if self.role == "decode":  # a prefill on a decode worker is a D-local turn
            self.local_load.commit(req.rid, estimate, req.expected_output_tokens or req.output_tokens)
        self._waiting.append(req)
        self._kick()

    def expect_kv(self, req: SimRequest) -> None:
        """Decode side of a P->D request, from the moment it is routed (SGLang's prealloc queue)."""
        self.inflight += 1
        self._invalidate()
        self._expecting += 1

    def reserve_for_kv(self, req: SimRequest) -> None:
        """The prefill is done: pin slots (waiting if the pool is full), then ask for the KV."""
        self._prealloc.append(req)
        self._admit_prealloc()

    def kv_arrived(self, req: SimRequest) -> None:
        """The KV (and the first token the prefill worker sampled) landed: the first token goes out
        when the iteration in flight ends (at once on an idle worker), then the stream decodes."""
        if self._coast is not None:
            self._settle()
        self._expecting -= 1
        if self._busy:
            self._landed.append(req)
            return
        self._first_token(req, self._loop.now)
        self._kick()

    def _first_token(self, req: SimRequest, now: float) -> None:
        """A transferred stream's first token (from the prefill worker): out now; the rest decode here."""
        req.first_token_ms = now
        if req.output_tokens > 1:
            self._joins.append((req, req.output_tokens - 1, req.prompt_tokens + 1))
        else:
            self._finish(req)

    def kv_sent(self, req: SimRequest) -> None:
        """Prefill role: the KV left; free its slots and keep the prompt as a cached prefix. Prefills
        waiting for slots may fit now, so an idle worker starts (nothing else may ever wake it)."""
        self.kv.release(req.conversation_id, self._p_pinned.pop(req.rid), req.prompt_tokens)
        self._kick()

    # -- scheduling --------------------------------------------------------------------------

    def _admit_prealloc(self) -> None:
        while self._prealloc:
            req = self._prealloc[0]
            need = req.prompt_tokens + req.output_tokens
            hit = self.kv.admit(req.conversation_id, req.prompt_tokens, need)
            if hit is None:
                return
            self._prealloc.popleft()
            req.pinned_tokens = need
            req.cached_tokens = hit if self.decode_radix_cache else 0
            self._host.on_kv_slots(self, req)

    def _admit_waiting(self) -> None:
        while self._waiting:
            req = self._waiting[0]
            need = req.prompt_tokens + (0 if self.role == "prefill" else req.output_tokens)
            hit = self.kv.admit(req.conversation_id, req.prompt_tokens, need)
            if hit is None:
                return
            self._waiting.popleft()
            self._waiting_tokens -= self._waiting_estimate.pop(req.rid)
            if self.role == "prefill":
                self._p_pinned[req.rid] = need
                req.prefill_cached_tokens = hit
            else:
                req.pinned_tokens = need
                req.cached_tokens = hit
            req.remaining_prefill = req.prompt_tokens - hit
            req.computed_tokens = req.remaining_prefill
            self._prefill_left += req.remaining_prefill
            self._prefilling.append(req)

    def _kick(self) -> None:
        if not self._busy:
            self._start_iteration()

    def _start_iteration(self) -> None:
        if self._waiting:
            self._admit_waiting()
        pieces: list[tuple[SimRequest, int, int]] = []
        if self._prefilling:
            budget = self.chunk_tokens
            for req in self._prefilling:
                if budget <= 0:
                    break
                left = req.remaining_prefill
                n = left if left < budget else budget
                pieces.append((req, n, req.prompt_tokens - left))
                budget -= n
        joins = self._joins
        if joins:
            heap, iterations = self._finish_heap, self.iterations
            for req, emit, ctx in joins:
                self._running += 1
                self._context += ctx
                heappush(heap, (iterations + emit, req.rid, req))  # its first token is out already
            joins.clear()
        running = self._running
        c = self.coefficients
        if pieces:
            dt = batch_prefill_ms(c, pieces) + (decode_rows_ms(c, running, self._context) if running else 0.0)
        elif running == 0:
            return
        else:  # decode_step_ms(c, running, context), written out
            dt = c.decode_base_ms + c.decode_per_seq_ms * running + c.decode_per_kctx_ms * self._context / 1000.0
        self._busy = True
        self.busy_ms += dt
        if not pieces and self._may_coast:
            n = self._finish_heap[0][0] - self.iterations
            if n >= 2:
                self._start_coast(dt, n if n < _COAST_MAX else _COAST_MAX)
                return
        loop = self._loop
        loop.at(loop.now + dt, self._end_iteration, pieces)

    # -- coasting (see the module docstring) --------------------------------------------------

    def _start_coast(self, dt: float, n: int) -> None:
        """``n`` decode-only iterations from now, the first taking ``dt``. Each step is
        ``decode_step_ms(c, b, context)`` written out (the batch part is the same for all), with
        the same operations in the same order, and each end time the previous one plus the step
        (``accumulate`` adds left to right, as a loop would): the fast-path test holds it to the
        function."""
        c, b, context = self.coefficients, self._running, self._context
        fixed = c.decode_base_ms + c.decode_per_seq_ms * b
        per_kctx = c.decode_per_kctx_ms
        # the steps after the first: context + k*b tokens at step k (b >= 1: streams are running)
        steps = [fixed + per_kctx * ctx / 1000.0 for ctx in range(context + b, context + n * b, b)]
        ends = list(accumulate(steps, initial=self._loop.now + dt))
        coast = (self.iterations, ends, steps, context)
        self._coast = coast
        self._loop.at(ends[-1], self._end_coast, coast)

    def _advance_coast(self, k: int) -> None:
        """Iterations 0..k-1 of the coasting run ended; iteration k is in flight (its step counted)."""
        assert self._coast is not None
        first, _, steps, context = self._coast
        self._coast = None
        self.iterations = first + k
        self._context = context + k * self._running
        if k:  # busy time plus each step, left to right (``sum`` may round differently)
            self.busy_ms = reduce(add, steps if k == len(steps) else steps[:k], self.busy_ms)

    def _end_coast(self, coast: Coast) -> None:
        if self._coast is not coast:  # settled earlier: ordinary events took over
            return
        self._advance_coast(len(coast[1]) - 1)
        heap = self._finish_heap
        quiet = not (self._prealloc or self._waiting or self._prefilling or self._joins)
        if quiet and heap[0][0] > self.iterations + 1:
            # the run was cut at _COAST_MAX: nothing ends or starts at its last iteration, so
            # _end_iteration([]) then _start_iteration() come down to the next run, written out
            self.iterations += 1
            running = self._running
            context = self._context = self._context + running
            c = self.coefficients
            dt = c.decode_base_ms + c.decode_per_seq_ms * running + c.decode_per_kctx_ms * context / 1000.0
            self.busy_ms += dt
            n = heap[0][0] - self.iterations  # >= 1
            if n >= 2:
                self._start_coast(dt, n if n < _COAST_MAX else _COAST_MAX)
            else:
                loop = self._loop
                loop.at(loop.now + dt, self._end_iteration, [])
            return
        self._end_iteration([])

    def _settle(self) -> None:
        """Back to one event per iteration, at the iteration in flight now."""
        assert self._coast is not None
        ends = self._coast[1]
        k = bisect_left(ends, self._loop.now)  # iterations that ended before now
        self._advance_coast(k)
        self._loop.at(ends[k], self._end_iteration, [])

    def settle(self) -> None:
        """Bring the counters (busy time, iterations) up to now, e.g. when a run stops early."""
        if self._coast is not None:
            self._settle()

    def _end_iteration(self, pieces: list[tuple[SimRequest, int, int]]) -> None:
        now = self._loop.now
        iterations = self.iterations = self.iterations + 1
        self._context += self._running  # every running stream emitted one token
        heap = self._finish_heap
        while heap and heap[0][0] <= iterations:
            req = heappop(heap)[2]
            self._running -= 1
            self._context -= req.prompt_tokens + req.output_tokens
            self._finish(req)
        if pieces:
            for req, n, _ in pieces:
                req.remaining_prefill -= n
                self._prefill_left -= n
            done = [req for req, _, _ in pieces if req.remaining_prefill == 0]
            if done:
                self._prefilling = [r for r in self._prefilling if r.remaining_prefill > 0]
            for req in done:
                if self.role == "prefill":
                    self.prefill_load.release(req.rid)
                    self._release()
                    self._host.on_prefilled(self, req)
                    continue
                req.first_token_ms = now  # the prefill's logits give the first token
                if req.output_tokens > 1:
                    self._joins.append((req, req.output_tokens - 1, req.prompt_tokens + 1))
                else:
                    self._finish(req)
        if self._landed:
            for req in self._landed:
                self._first_token(req, now)
            self._landed.clear()
        self._busy = False
        if self._prealloc:  # _admit_prealloc has work
            self._admit_prealloc()
        self._start_iteration()

    def _finish(self, req: SimRequest) -> None:
        req.finish_ms = self._loop.now
        if req.route == "local":  # only a D-local turn was committed (submit_prefill on a decode worker)
            self.local_load.release(req.rid)
        self._release()
        self.kv.release(req.conversation_id, req.pinned_tokens, req.prompt_tokens + req.output_tokens)
        self._host.on_finished(self, req)
