"""The PPD latency model: pure formulas that turn a worker's :class:`CostCoefficients`, its live
load and a session's cache placement into predicted TTFT / TPOT for each route.

Every policy (and the simulator) predicts through these functions, so a Decision's candidates
are comparable whichever policy chose. All times are milliseconds; nothing here reads a clock.

The model (DESIGN.md "The decision"; DistServe-style quadratic prefill, BLIS/vllm-router-style
linear decode step):

* ``prefill(n new over c cached) = base + per_token*n + attn*n*(n+c)/1e6``
* ``decode_step(batch b, context K) = base + per_seq*b + per_kctx*K/1000``
* TTFT(pd)    = P queue + prefill on P (minus what P caches) + KV transfer of what D lacks
                (plus the link backlog) + the end of D's iteration in flight (the first token,
                sampled on P, travels with the KV and goes out between D's iterations:
                :func:`iteration_wait_ms`, half a decode step on a busy D, 0 on an idle one).
* TTFT(local) = D's iteration in flight (as above: the prefill starts between iterations) + D
                queue + append-prefill over D's cached prefix + the decode rows that ride in
                every chunked-prefill iteration.
* TPOT(pd)    = D's decode step with this stream joined, plus the committed local-prefill work
                per step D's streams absorb (``committed_local_ms_per_step``).
* TPOT(local) = TPOT(pd) + the append-prefill time the D's other ``b`` streams absorb,
                amortised over the output length: ``b/(b+1) * append / N``
                (the mean over the b+1 streams D then serves; 0 on an idle decode worker).

*Committed* local prefill (:func:`committed_local_ms_per_step`) covers every D-local request the
router has in flight on that worker (queued, prefilling or already decoding), each spread over
its own answer: ``sum riding(n_i) / N_i``, where ``riding`` is the prefill less the part of its
base the decode step already pays (a mixed iteration is one forward pass: :func:`riding_base_ms`).
Why all of them: a stream's TPOT is its decode step
plus the prefill work that runs during its life, per token; the local requests in flight were
prefilled (or will be) within about one answer's time, so they sample exactly that window (by
Little's law the sum is the rate of local prefill per step). Each local turn looks cheap alone;
priced with the committed ones, the 20th of a burst is seen to break every stream.

:func:`local_tpot_budget` turns a TPOT target into the decode worker's local-prefill budget per
iteration: an iteration may carry ``target - step`` ms of prefill (Sarathi-Serve's stall-free
budget); the committed load per step plus this append spread over its answer must fit in it.

``N``, the answer length (:func:`expected_output_tokens`), is the request's ``max_new_tokens``
lowered to the conversation's last answer: clients often send a cap far above the answer.
"""

from __future__ import annotations

import math

from ppd_server.routing.frozen import constructor
from ppd_server.routing.types import Candidate, ClusterView, CostCoefficients, RequestView, SessionView, WorkerView

_new_candidate = constructor(Candidate)  # Candidate(...), built faster (estimate_local: one per decision)


def prefill_ms(c: CostCoefficients, new_tokens: int, cached_tokens: int = 0) -> float:
    """Compute time of a prefill of ``new_tokens`` on top of ``cached_tokens`` already in KV."""
    if new_tokens <= 0:
        return 0.0
    return (
        c.prefill_base_ms
        + c.prefill_per_token_ms * new_tokens
        + c.prefill_attn_ms_per_ktok2 * new_tokens * (new_tokens + cached_tokens) / 1e6
    )


def decode_step_ms(c: CostCoefficients, batch: int, context_tokens: int) -> float:
    """One decode iteration over ``batch`` streams holding ``context_tokens`` tokens in total."""
    return c.decode_base_ms + c.decode_per_seq_ms * batch + c.decode_per_kctx_ms * context_tokens / 1000.0


def decode_rows_ms(c: CostCoefficients, batch: int, context_tokens: int) -> float:
    """What ``batch`` decode rows add to an iteration that runs anyway (no base cost)."""
    return c.decode_per_seq_ms * batch + c.decode_per_kctx_ms * context_tokens / 1000.0


def queue_wait_ms(w: WorkerView, typical_new_tokens: int = 0) -> float:
    """Prefill work queued ahead of a new request on ``w`` (its own prefill queue).

    On a prefill worker with the router's own prefills in flight (``router_prefill_*``,
    routing.local_load.PrefillLoad) the wait is their compute: each is queued or running there,
    and the count moves on every dispatch, while the load poll lags; or the poll's queue when it
    shows more (other router replicas' work, DESIGN.md "Scale-out"). Otherwise the poll's queue:
    requests the router sent that it did not see yet (``inflight`` beyond running+waiting) are
    queued too, each priced like this request (``typical_new_tokens``). On a decode worker only its
    queued local prefill counts (see below).
    """
    c = w.coefficients
    if w.role == "decode":
        # A decode worker's waiting requests are mostly P->D streams waiting for their KV (SGLang's
        # prealloc and transfer queues, and the router's in-flight ones the poll has not seen): they
        # hold no prefill work there. What runs ahead of a local append is the local prefill still
        # queued: its tokens, and at most one base cost per local request the router has in flight.
        local_waiting = min(max(w.waiting_reqs, 0), max(w.local_prefill_reqs, 0))
        return c.prefill_base_ms * local_waiting + c.prefill_per_token_ms * max(w.waiting_tokens, 0)
    wait, unseen = prefill_queue_terms(w)
    if unseen > 0:
        wait += unseen * (prefill_ms(c, typical_new_tokens) if typical_new_tokens > 0 else c.prefill_base_ms)
    return wait


def prefill_queue_terms(w: WorkerView) -> tuple[float, int]:
    """The request-independent part of :func:`queue_wait_ms` on a prefill or unified worker:
    (the wait for the prefills queued and running there, the requests the router sent beyond
    them, unclamped). ``routing.placement`` memoises it per view."""
    c = w.coefficients
    running = w.running_reqs if w.running_reqs > 0 else 0
    waiting = w.waiting_reqs if w.waiting_reqs > 0 else 0
    queued_tokens = w.waiting_tokens if w.waiting_tokens > 0 else 0
    if w.role == "prefill" and w.router_prefill_reqs > 0:
        # the router's own prefills in flight there are all queued or running: their compute,
        # current on every dispatch (the poll lags)
        own = (
            c.prefill_base_ms * w.router_prefill_reqs
            + c.prefill_per_token_ms * (w.router_prefill_tokens if w.router_prefill_tokens > 0 else 0)
            + c.prefill_attn_ms_per_ktok2 * (w.router_prefill_attn_ktok2 if w.router_prefill_attn_ktok2 > 0 else 0.0)
        )
        # other routers' work (replicas polling the same workers) shows only in the poll's queue
        polled = c.prefill_base_ms * (waiting + running) + c.prefill_per_token_ms * queued_tokens
        return (polled if polled > own else own), w.inflight - w.router_prefill_reqs
    reqs = waiting + running if w.role == "prefill" else waiting  # a prefill worker's running requests are prefills too
    return c.prefill_base_ms * reqs + c.prefill_per_token_ms * queued_tokens, w.inflight - running - waiting


def transfer_ms(kv_bytes: int, link_gbps: float, backlog_bytes: int = 0) -> float:
    """Time to move ``kv_bytes`` behind ``backlog_bytes`` already queued on the link."""
    if kv_bytes <= 0 or link_gbps <= 0:
        return 0.0
    return (kv_bytes + max(backlog_bytes, 0)) * 8.0 / (link_gbps * 1e9) * 1e3


def riding_base_ms(c: CostCoefficients) -> float:
    """The fixed cost a prefill adds to a decode iteration that runs anyway: a mixed iteration is
    one forward pass, so the prefill's base overlaps the decode step's (``ppd_sim.worker`` times a
    mixed iteration as ``prefill_ms`` + the decode rows, without the decode base)."""
    return max(c.prefill_base_ms - c.decode_base_ms, 0.0)


def append_riding_ms(c: CostCoefficients, new_tokens: int, cached_tokens: int = 0) -> float:
    """What an append-prefill adds to the decode iterations it rides in (no second base)."""
    if new_tokens <= 0:
        return 0.0
    return prefill_ms(c, new_tokens, cached_tokens) - c.prefill_base_ms + riding_base_ms(c)


def committed_local_ms_per_step(w: WorkerView) -> float:
    """Local-prefill time per decode step that ``w``'s streams absorb from the D-local requests the
    router has in flight there: ``sum riding(n_i) / N_i`` (routing.local_load; the attention term
    of those prefills is left out: their cached context is not tracked). Each prefill rides in
    iterations that run anyway, so its base counts only beyond the decode step's (:func:`riding_base_ms`)."""
    c = w.coefficients
    return riding_base_ms(c) * max(w.local_prefill_reqs_per_step, 0.0) + c.prefill_per_token_ms * max(
        w.local_prefill_tokens_per_step, 0.0
    )


def iteration_wait_ms(w: WorkerView) -> float:
    """How long a request arriving at ``w`` waits for the iteration in flight to end: half a decode
    step of its running streams (0 on an idle worker). A landed KV and a local prefill both start
    only between iterations (SGLang's scheduler loop; ``ppd-worker``'s engine inbox)."""
    b = decode_batch(w)
    if b == 0:
        return 0.0
    context = w.running_context_tokens
    return decode_step_ms(w.coefficients, b, context if context > 0 else 0) / 2.0  # max(context, 0)


def decode_batch(w: WorkerView) -> int:
    """Streams the decode worker is running (the router's in-flight count when polls lag)."""
    # max(running, inflight, 0) written out (a hot path; the same int)
    b = w.running_reqs
    if w.inflight > b:
        b = w.inflight
    return b if b > 0 else 0


def cached_on_decode(session: SessionView | None, w: WorkerView, prompt_tokens: int) -> int:
    """Prompt tokens ``w`` holds for this conversation (0 unless it is the session's decode worker
    and keeps KV after a turn: a unified worker, or a decode worker with a radix cache)."""
    if session is None or session.decode_url != w.url:
        return 0
    if w.role == "decode" and not (w.decode_radix_cache or w.can_local_prefill):
        return 0
    return _hit(session.cached_tokens_decode, prompt_tokens)


def cached_on_prefill(session: SessionView | None, w: WorkerView, prompt_tokens: int) -> int:
    if session is None or session.prefill_url != w.url:
        return 0
    return _hit(session.cached_tokens_prefill, prompt_tokens)


def _hit(cached: int, prompt_tokens: int) -> int:
    # a prefix cache always leaves the last prompt token to compute (its logits start the answer)
    return max(0, min(cached, prompt_tokens - 1))


def kv_tokens_needed(request: RequestView, session: SessionView | None, w: WorkerView) -> int:
    """New KV slots ``w`` must allocate to serve this request (its cached prefix is resident)."""
    prompt = max(request.prompt_tokens, 0)
    return prompt - cached_on_decode(session, w, prompt) + max(request.max_new_tokens, 0)


def kv_fits(request: RequestView, session: SessionView | None, w: WorkerView) -> bool:
    """Whether ``w``'s KV pool has room now (unknown capacity counts as room). Used tokens
    exclude the evictable prefix cache, so a full pool would make the request wait."""
    if w.max_total_tokens <= 0:
        return True
    return w.used_tokens + kv_tokens_needed(request, session, w) <= w.max_total_tokens


def kv_bytes_per_token(*workers: WorkerView) -> int:
    for w in workers:
        if w.kv_bytes_per_token > 0:
            return w.kv_bytes_per_token
    return 0


def expected_output_tokens(request: RequestView, session: SessionView | None = None) -> int:
    """The answer length predictions assume: the request's ``max_new_tokens`` (a cap clients often
    set far above the answer, e.g. 2048), lowered to the conversation's last answer when known
    (turns of one conversation tend to answer alike; an unknown length is the common case)."""
    cap = request.max_new_tokens
    if cap < 1:  # max(1, cap) written out (a hot path; the same int)
        cap = 1
    if session is not None:
        last = session.last_output_tokens
        if last > 0:
            return last if last < cap else cap  # min(cap, last)
    return cap


def estimate_pd(
    request: RequestView, cluster: ClusterView, session: SessionView | None, prefill: WorkerView, decode: WorkerView
) -> Candidate:
    """Predicted TTFT/TPOT of the P->D path through ``prefill`` then ``decode``."""
    prompt = max(request.prompt_tokens, 0)
    cached_p = cached_on_prefill(session, prefill, prompt)
    compute = prefill_ms(prefill.coefficients, prompt - cached_p, cached_p)
    p_ms = queue_wait_ms(prefill, prompt - cached_p) + compute
    # SGLang's incremental transfer: a decode worker with a radix cache receives only what it lacks.
    cached_d = cached_on_decode(session, decode, prompt) if decode.decode_radix_cache else 0
    kv_bytes = (prompt - cached_d) * kv_bytes_per_token(decode, prefill)
    x_ms = transfer_ms(kv_bytes, cluster.link_gbps, cluster.link_backlog_bytes)
    b = decode_batch(decode)
    context = max(decode.running_context_tokens, 0) + prompt
    n_out = expected_output_tokens(request, session)
    tpot = decode_step_ms(decode.coefficients, b + 1, context + n_out // 2) + committed_local_ms_per_step(decode)
    return Candidate(
        "pd",
        decode.url,
        prefill.url,
        p_ms + x_ms + iteration_wait_ms(decode),
        tpot,
        None,
        kv_bytes,
        cached_p,
        prompt - cached_p,
        compute,
    )


def estimate_local(
    request: RequestView, session: SessionView | None, decode: WorkerView, pd_tpot_ms: float | None = None
) -> Candidate:
    """Predicted TTFT/TPOT of an append-prefill on ``decode`` over the prefix it caches.

    ``pd_tpot_ms`` is the same decode worker's TPOT without the local prefill (computed here
    when not given); the local route's TPOT adds the interference its append-prefill causes.
    """
    prompt = max(request.prompt_tokens, 0)
    cached = cached_on_decode(session, decode, prompt)
    new = prompt - cached
    c = decode.coefficients
    b = decode_batch(decode)
    running_ctx = max(decode.running_context_tokens, 0)
    append = prefill_ms(c, new, cached)
    chunk = decode.chunked_prefill_size if decode.chunked_prefill_size > 0 else max(new, 1)
    chunks = max(1, math.ceil(new / chunk)) if new > 0 else 0
    mixing = chunks * decode_rows_ms(c, b, running_ctx) if b > 0 else 0.0
    ttft = iteration_wait_ms(decode) + queue_wait_ms(decode) + append + mixing
    n_out = expected_output_tokens(request, session)
    if pd_tpot_ms is None:
        pd_tpot_ms = decode_step_ms(c, b + 1, running_ctx + prompt + n_out // 2) + committed_local_ms_per_step(decode)
    interference = (b / (b + 1)) * append / n_out
    return _new_candidate("local", decode.url, None, ttft, pd_tpot_ms + interference, None, 0, cached, new, append)


def joined_tpot_ms(request: RequestView, session: SessionView | None, w: WorkerView) -> float:
    """TPOT on decode worker ``w`` if one more stream (this request's size) joined it via P->D."""
    prompt = max(request.prompt_tokens, 0)
    n_out = expected_output_tokens(request, session)
    context = max(w.running_context_tokens, 0) + prompt + n_out // 2
    return decode_step_ms(w.coefficients, decode_batch(w) + 1, context) + committed_local_ms_per_step(w)


def local_tpot_budget(
    request: RequestView, session: SessionView | None, decode: WorkerView, target_ms: float
) -> tuple[float, float]:
    """(need, budget) in ms of local prefill per decode iteration on ``decode`` under a TPOT target.

    budget = ``target - step``: what each iteration may carry on top of its decode step with every
    stream, this one included, and stay under the target (Sarathi-Serve's stall-free budget).
    need = the committed local prefill per step plus this append spread over its answer. Local
    fits iff need <= budget. On a worker with no running stream and nothing committed the append
    hurts no one (it runs before this stream decodes): its need is 0.
    """
    prompt = max(request.prompt_tokens, 0)
    cached = cached_on_decode(session, decode, prompt)
    c = decode.coefficients
    b = decode_batch(decode)
    n_out = expected_output_tokens(request, session)
    step = decode_step_ms(c, b + 1, max(decode.running_context_tokens, 0) + prompt + n_out // 2)
    committed = committed_local_ms_per_step(decode)
    append = append_riding_ms(c, prompt - cached, cached) / n_out if b > 0 or committed > 0 else 0.0
    return committed + append, max(0.0, target_ms - step)


def estimate_replica(request: RequestView, session: SessionView | None, worker: WorkerView) -> Candidate:
    """Predicted TTFT/TPOT on a unified worker (prefix cache hit when it served this session)."""
    prompt = max(request.prompt_tokens, 0)
    cached = cached_on_decode(session, worker, prompt)
    c = worker.coefficients
    b = decode_batch(worker)
    running_ctx = max(worker.running_context_tokens, 0)
    new = prompt - cached
    chunk = worker.chunked_prefill_size if worker.chunked_prefill_size > 0 else max(new, 1)
    chunks = max(1, math.ceil(new / chunk)) if new > 0 else 0
    mixing = chunks * decode_rows_ms(c, b, running_ctx) if b > 0 else 0.0
    compute = prefill_ms(c, new, cached)
    ttft = queue_wait_ms(worker, new) + compute + mixing
    tpot = decode_step_ms(c, b + 1, running_ctx + prompt + expected_output_tokens(request, session) // 2)
    return Candidate("replica", worker.url, None, ttft, tpot, None, 0, cached, new, compute)
