"""Worker selection shared by every policy: which prefill worker, which decode worker, which
unified worker. Pure and deterministic: ties are broken by a hash of (conversation id, turn),
never by a clock, a counter or a random generator, so the router and the simulator agree.

* P worker: least predicted prefill time (its queue + the prefill, less what it caches for the
  session).
* Workers whose KV pool has no room for the request are skipped when another has room.
* D worker for P->D: the best weighted sum of normalised TTFT and TPOT (the same weights the
  PPD score uses), so the session's decode worker (it receives only the suffix) and idle
  workers win. Affinity: the session's decode worker keeps the conversation unless its score is
  more than :data:`AFFINITY_SLACK` worse than the best, or it is predicted to break an SLO target
  the best meets - its radix cache makes this transfer incremental and the next turn
  local-capable, which a score for this one turn does not see. Other ties go to the hash.
* Unified worker: same, over unified workers (the session's worker keeps its prefix cache).
"""

from __future__ import annotations

import hashlib

from ppd_server.routing.frozen import constructor
from ppd_server.routing.latency import (
    cached_on_decode,
    cached_on_prefill,
    estimate_replica,
    expected_output_tokens,
    kv_fits,
    prefill_ms,
    prefill_queue_terms,
    queue_wait_ms,
    transfer_ms,
)
from ppd_server.routing.types import Candidate, ClusterView, RequestView, SessionView, WorkerView

_TIE_REL = 1e-9
_new_candidate = constructor(Candidate)  # Candidate(...), built faster (one per decision)
_blake2b = hashlib.blake2b
#: how much worse (relative weighted score) the session's decode worker may be and still keep it
AFFINITY_SLACK = 0.25
#: the free KV tokens of a worker whose capacity is unknown (``kv_fits`` says it always has room)
_ROOMY = 1 << 62


def stable_fraction(conversation_id: str | None, turn: int, salt: str = "") -> float:
    """A number in [0, 1) derived only from (conversation_id, turn): the policies' one source of
    'randomness' (ratio shares, tie-breaks)."""
    key = f"{salt}\x00{conversation_id or ''}\x00{turn}".encode()
    return int.from_bytes(_blake2b(key, digest_size=8).digest(), "big") / 2.0**64


def _first_by_fraction(request: RequestView, urls: list[str]) -> int:
    """The position of the first url with the least ``stable_fraction(request.conversation_id,
    request.turn, url)``: the same keys, the part after the url encoded once for all of them."""
    tail = f"\x00{request.conversation_id or ''}\x00{request.turn}".encode()
    fractions = [int.from_bytes(_blake2b(url.encode() + tail, digest_size=8).digest(), "big") / 2.0**64 for url in urls]
    return fractions.index(min(fractions))


def _tie_order(request: RequestView, session: SessionView | None, url: str) -> tuple[int, float]:
    affinity = 0 if session is not None and session.decode_url == url else 1
    return affinity, stable_fraction(request.conversation_id, request.turn, url)


def _weighted(ttft: float, tpot: float, best_ttft: float, best_tpot: float, request: RequestView) -> float:
    w = request.weights
    return w.ttft * ttft / max(best_ttft, 1e-9) + w.tpot * tpot / max(best_tpot, 1e-9)


def best_pd(
    request: RequestView,
    cluster: ClusterView,
    session: SessionView | None,
    split: tuple[list[WorkerView], list[WorkerView]] | None = None,
) -> Candidate | None:
    """The best P->D pair, or None when the cluster has no healthy prefill or decode worker.

    TTFT(pd) is additive in a P part and a D part, so P and D are chosen separately (O(P+D)).
    The hot path of every decision (router and simulator): the P part is computed once, a
    :class:`Candidate` is built only for the winner, and tie-break hashes only on ties. The
    latency formulas are written out here (``decode_batch``, ``committed_local_ms_per_step``,
    ``decode_step_ms``, ``max(x, 0)`` as a comparison) in the same arithmetic order as
    ``latency.estimate_pd``, so every prediction is equal to the last bit; the decode worker's
    request-independent terms (``iteration_wait_ms`` among them) are memoised on its view. In the
    usual case (every decode worker has room, one KV size, the session's url at most once) the
    decode workers are ranked a list at a time, with the transfer time shared by all but the
    session's worker; otherwise worker by worker (:func:`_best_pd_by_worker`). It decides exactly
    as ``estimate_pd`` for every roomy decode worker then :func:`_pick` would
    (``tests/server/routing/test_placement_fast.py`` compares the two on random views).
    ``split``: the cluster's healthy (prefill, decode) workers when the caller has them
    (:func:`split_roles`).
    """
    prefills, decodes = split if split is not None else split_roles(cluster)[:2]
    if not prefills or not decodes:
        return None
    prompt = request.prompt_tokens
    if prompt < 0:
        prompt = 0
    prefill, p_ms, cached_p = _best_prefill(request, session, prefills, prompt)
    # The usual case, one list at a time: every decode worker has room for the request, all have
    # the same KV bytes per token (one transfer time for every worker but the session's) and the
    # session's worker appears at most once. Anything else takes the worker-by-worker path below.
    rows = [d.memo or _decode_terms(d) for d in decodes]  # a memo is a non-empty tuple
    urls = [t[0] for t in rows]
    home = session.decode_url if session is not None else None
    own = rows[0][1]
    max_new = request.max_new_tokens
    need = prompt + (max_new if max_new > 0 else 0)
    homes = urls.count(home)
    if (
        homes > 1
        or min([t[6] for t in rows]) < need  # kv_fits may fail somewhere (the session's worker needs less)
        or [t[1] for t in rows].count(own) != len(rows)
    ):
        return _best_pd_by_worker(request, cluster, session, prefill, p_ms, cached_p, decodes, prompt)
    fallback_per_token = prefill.kv_bytes_per_token if prefill.kv_bytes_per_token > 0 else 0  # kv_bytes_per_token
    per_token = own if own > 0 else fallback_per_token
    kv_bytes = prompt * per_token
    link_gbps, backlog = cluster.link_gbps, cluster.link_backlog_bytes
    if kv_bytes <= 0 or link_gbps <= 0:  # estimate_pd's p_ms + x_ms, transfer_ms written out
        px = p_ms + 0.0
    else:
        px = p_ms + (kv_bytes + (backlog if backlog > 0 else 0)) * 8.0 / (link_gbps * 1e9) * 1e3
    ttfts = [px + t[7] for t in rows]  # + iteration_wait_ms
    ph = prompt + expected_output_tokens(request, session) // 2  # the context at half the answer
    tpots = [t[3] + t[4] * (t[2] + ph) / 1000.0 + t[5] for t in rows]
    at_home = urls.index(home) if homes else -1
    home_kv = kv_bytes
    if at_home >= 0 and decodes[at_home].decode_radix_cache:  # it receives only what it lacks
        cached_d = cached_on_decode(session, decodes[at_home], prompt)
        if cached_d:
            home_kv = (prompt - cached_d) * per_token
            t = rows[at_home]
            ttfts[at_home] = p_ms + transfer_ms(home_kv, link_gbps, backlog) + t[7]
    w = request.weights
    w_ttft, w_tpot = w.ttft, w.tpot
    best_ttft = max(min(ttfts), 1e-9)
    best_tpot = max(min(tpots), 1e-9)
    if w_ttft == 1.0 and w_tpot == 1.0:  # the usual weights: 1.0 * x is x, to the bit
        scores = [t / best_ttft + tp / best_tpot for t, tp in zip(ttfts, tpots, strict=True)]
    else:
        scores = [  # _weighted
            w_ttft * t / best_ttft + w_tpot * tp / best_tpot for t, tp in zip(ttfts, tpots, strict=True)
        ]
    floor = min(scores)
    cut = floor * (1 + _TIE_REL) + 1e-9
    if len(scores) > 1 and sorted(scores)[1] > cut >= floor:  # one score at the floor, the next beyond the tie
        win = scores.index(floor)
    else:
        ties = [i for i, s in enumerate(scores) if s <= cut]
        if len(ties) > 1 and at_home in ties:  # _tie_order: the session's worker first
            win = at_home
        elif len(ties) > 1:  # ... then the hash
            win = ties[_first_by_fraction(request, [urls[i] for i in ties])]
        else:
            win = ties[0]
    if (
        at_home >= 0
        and win != at_home
        and scores[at_home] <= floor * (1 + AFFINITY_SLACK)
        and not (_breaks(ttfts[at_home], tpots[at_home], request) and not _breaks(ttfts[win], tpots[win], request))
    ):
        win = at_home
    kv_win = home_kv if win == at_home else kv_bytes
    compute = prefill_ms(prefill.coefficients, prompt - cached_p, cached_p)
    return _new_candidate(
        "pd", urls[win], prefill.url, ttfts[win], tpots[win], None, kv_win, cached_p, prompt - cached_p, compute
    )


def _best_pd_by_worker(
    request: RequestView,
    cluster: ClusterView,
    session: SessionView | None,
    prefill: WorkerView,
    p_ms: float,
    cached_p: int,
    decodes: list[WorkerView],
    prompt: int,
) -> Candidate:
    """:func:`best_pd`'s decode side, one worker at a time (some worker may lack room, the workers'
    KV sizes differ, or the session's url appears twice)."""
    home = session.decode_url if session is not None else None
    # a decode worker whose KV pool cannot take the request would make it wait: avoid it if we can
    # (kv_fits; only the session's decode worker caches part of the prompt)
    max_new = request.max_new_tokens
    need = prompt + (max_new if max_new > 0 else 0)
    roomy = [
        d
        for d in decodes
        if d.max_total_tokens <= 0
        or d.used_tokens + (need if d.url != home else need - cached_on_decode(session, d, prompt))
        <= d.max_total_tokens  # kv_tokens_needed
    ] or decodes
    half_out = expected_output_tokens(request, session) // 2
    link_gbps, backlog = cluster.link_gbps, cluster.link_backlog_bytes
    fallback_per_token = prefill.kv_bytes_per_token if prefill.kv_bytes_per_token > 0 else 0  # kv_bytes_per_token
    transfers: dict[int, float] = {}  # kv bytes -> transfer_ms (the same for every worker caching nothing)
    preds: list[tuple[float, float, int, WorkerView]] = []
    best_ttft: float | None = None
    best_tpot: float | None = None
    for d in roomy:
        terms = d.memo
        if terms is None:
            terms = _decode_terms(d)
        url, own_per_token, running_ctx, fixed, per_kctx, committed, _, wait = terms
        cached_d = cached_on_decode(session, d, prompt) if url == home and d.decode_radix_cache else 0
        kv_bytes = (prompt - cached_d) * (own_per_token if own_per_token > 0 else fallback_per_token)
        x_ms = transfers.get(kv_bytes)
        if x_ms is None:
            x_ms = transfers[kv_bytes] = transfer_ms(kv_bytes, link_gbps, backlog)
        context = running_ctx + prompt
        ttft = p_ms + x_ms + wait
        tpot = fixed + per_kctx * (context + half_out) / 1000.0 + committed
        preds.append((ttft, tpot, kv_bytes, d))
        if best_ttft is None or ttft < best_ttft:
            best_ttft = ttft
        if best_tpot is None or tpot < best_tpot:
            best_tpot = tpot
    w = request.weights
    w_ttft, w_tpot = w.ttft, w.tpot
    assert best_ttft is not None and best_tpot is not None  # the min over preds (roomy is not empty)
    best_ttft = max(best_ttft, 1e-9)
    best_tpot = max(best_tpot, 1e-9)
    scores = [w_ttft * t / best_ttft + w_tpot * tp / best_tpot for t, tp, _, _ in preds]  # _weighted
    floor = min(scores)
    cut = floor * (1 + _TIE_REL) + 1e-9
    ties = [i for i, s in enumerate(scores) if s <= cut]
    win = ties[0] if len(ties) == 1 else min(ties, key=lambda i: _tie_order(request, session, preds[i][3].url))
    if home is not None and preds[win][3].url != home:
        best_breaks = _breaks(preds[win][0], preds[win][1], request)
        for i, (t, tp, _, d) in enumerate(preds):
            if (
                d.url == home
                and scores[i] <= floor * (1 + AFFINITY_SLACK)
                and not (_breaks(t, tp, request) and not best_breaks)
            ):
                win = i
                break
    t, tp, kv_bytes, d = preds[win]
    compute = prefill_ms(prefill.coefficients, prompt - cached_p, cached_p)
    return _new_candidate("pd", d.url, prefill.url, t, tp, None, kv_bytes, cached_p, prompt - cached_p, compute)


def _decode_terms(d: WorkerView) -> tuple[str, int, int, float, float, float, int, float]:
    """The request-independent part of a decode worker's P->D prediction, cached on the view
    (``WorkerView.memo``; a frozen view's fields never change, so the cache is always current):
    (url, its own KV bytes per token, running context >= 0, the decode step's base + batch part
    with one more stream, its per-kilotoken-of-context cost, ``committed_local_ms_per_step``, the
    KV tokens it has free: capacity - used, or :data:`_ROOMY` when its capacity is unknown,
    ``iteration_wait_ms``).
    Each is the very expression ``latency`` evaluates, so predictions are equal to the last bit."""
    c = d.coefficients
    running_ctx = d.running_context_tokens
    if running_ctx < 0:
        running_ctx = 0
    b = d.running_reqs  # decode_batch: max(running, inflight, 0)
    if d.inflight > b:
        b = d.inflight
    if b < 0:
        b = 0
    # iteration_wait_ms with this b and context: half a decode_step_ms (0 on an idle worker)
    wait = (
        (c.decode_base_ms + c.decode_per_seq_ms * b + c.decode_per_kctx_ms * running_ctx / 1000.0) / 2.0 if b else 0.0
    )
    # committed_local_ms_per_step: riding_base_ms * reqs/step + per_token * tokens/step (max(x, 0) written out)
    riding = c.prefill_base_ms - c.decode_base_ms
    reqs_step = d.local_prefill_reqs_per_step
    tokens_step = d.local_prefill_tokens_per_step
    committed = (0.0 if riding < 0.0 else riding) * (0.0 if reqs_step < 0.0 else reqs_step) + (
        c.prefill_per_token_ms * (0.0 if tokens_step < 0.0 else tokens_step)
    )
    terms = (
        d.url,
        d.kv_bytes_per_token,
        running_ctx,
        c.decode_base_ms + c.decode_per_seq_ms * (b + 1),
        c.decode_per_kctx_ms,
        committed,
        d.max_total_tokens - d.used_tokens if d.max_total_tokens > 0 else _ROOMY,
        wait,
    )
    object.__setattr__(d, "memo", terms)
    return terms


def _prefill_terms(p: WorkerView) -> tuple[float, int]:
    """``latency.prefill_queue_terms`` of a prefill worker, cached on the view like
    :func:`_decode_terms`: (the wait for its queued and running prefills, the requests the
    router sent that it cannot place in that queue - each is then priced like the request at hand)."""
    terms = prefill_queue_terms(p)
    object.__setattr__(p, "memo", terms)
    return terms


def split_roles(cluster: ClusterView) -> tuple[list[WorkerView], list[WorkerView], list[WorkerView]]:
    """The cluster's healthy (prefill, decode, unified) workers, in cluster order, in one pass
    (``ClusterView.by_role`` of each role)."""
    prefills: list[WorkerView] = []
    decodes: list[WorkerView] = []
    unified: list[WorkerView] = []
    lists = {"prefill": prefills, "decode": decodes, "unified": unified}
    for w in cluster.workers:
        if w.healthy:
            lists[w.role].append(w)
    return prefills, decodes, unified


def _best_prefill(
    request: RequestView, session: SessionView | None, prefills: list[WorkerView], prompt: int
) -> tuple[WorkerView, float, int]:
    """(the prefill worker with the least rounded P part, its unrounded P part, the prompt tokens
    it caches); equal rounded parts go to the hash. The P part is :func:`_prefill_side_ms` before
    rounding (``queue_wait_ms`` of a prefill worker + ``prefill_ms``), written out in the same
    arithmetic order; ``prompt`` is ``max(request.prompt_tokens, 0)``."""
    session_p = session.prefill_url if session is not None else None
    cold_c = None  # the coefficients of the last prefill of the whole prompt computed, and its time:
    cold = 0.0  # the same on every worker caching nothing that has those coefficients
    rows: list[tuple[float, int, WorkerView]] = []  # (unrounded P part, cached, worker)
    least = 0.0
    for p in prefills:
        c = p.coefficients
        cached = cached_on_prefill(session, p, prompt) if session_p is not None and p.url == session_p else 0
        new = prompt - cached
        if cached == 0 and c is cold_c:
            compute = cold
        else:
            if new > 0:  # prefill_ms(c, new, cached)
                attn = c.prefill_attn_ms_per_ktok2 * new * (new + cached) / 1e6
                compute = c.prefill_base_ms + c.prefill_per_token_ms * new + attn
            else:
                compute = 0.0
            if cached == 0:
                cold_c, cold = c, compute
        wait, unseen = p.memo or _prefill_terms(p)  # a memo is a non-empty tuple
        if unseen > 0:
            wait += unseen * ((compute if cached == 0 else prefill_ms(c, new)) if new > 0 else c.prefill_base_ms)
        ms = wait + compute
        if not rows or ms < least:
            least = ms
        rows.append((ms, cached, p))
    if len(rows) == 1:
        return rows[0][2], rows[0][0], rows[0][1]
    # ``round`` is monotone: only parts within a rounding step of the least can round to its value
    # (rounding every part costs more than the rest of this function)
    near = [r for r in rows if r[0] <= least + 1e-5]
    if len(near) == 1:
        ms, cached, p = near[0]
        return p, ms, cached
    low = None
    ties: list[tuple[float, int, WorkerView]] = []  # the parts at the least rounded one
    for r in near:
        rounded = round(r[0], 6)
        if low is None or rounded < low:
            low, ties = rounded, [r]
        elif rounded == low:
            ties.append(r)
    if len(ties) == 1:
        ms, cached, p = ties[0]
    else:
        ms, cached, p = ties[_first_by_fraction(request, [t[2].url for t in ties])]
    return p, ms, cached


def _prefill_side_ms(request: RequestView, session: SessionView | None, p: WorkerView) -> float:
    """The P part of TTFT(pd), rounded so that near-equal workers tie (then the hash decides)."""
    prompt = max(request.prompt_tokens, 0)
    cached = cached_on_prefill(session, p, prompt)
    return round(queue_wait_ms(p, prompt - cached) + prefill_ms(p.coefficients, prompt - cached, cached), 6)


def best_replica(
    request: RequestView,
    cluster: ClusterView,
    session: SessionView | None,
    unified: list[WorkerView] | tuple[WorkerView, ...] | None = None,
) -> Candidate | None:
    """The best unified worker, or None without one; ``unified``: the cluster's healthy unified
    workers when the caller has them (:func:`split_roles`)."""
    if unified is None:
        unified = cluster.by_role("unified")
    if not unified:
        return None
    roomy = [w for w in unified if kv_fits(request, session, w)] or list(unified)
    return _pick(request, session, [estimate_replica(request, session, w) for w in roomy])


def _pick(
    request: RequestView, session: SessionView | None, cands: list[Candidate], affinity_slack: float = 0.0
) -> Candidate:
    best_ttft = min(c.ttft_ms for c in cands)
    best_tpot = min(c.tpot_ms for c in cands)
    scored = [(_weighted(c.ttft_ms, c.tpot_ms, best_ttft, best_tpot, request), c) for c in cands]
    floor = min(s for s, _ in scored)
    ties = [c for s, c in scored if s <= floor * (1 + _TIE_REL) + 1e-9]
    assert ties
    best = min(ties, key=lambda c: _tie_order(request, session, c.decode or ""))
    if affinity_slack > 0 and session is not None and best.decode != session.decode_url:
        for s, c in scored:
            if (
                c.decode == session.decode_url
                and s <= floor * (1 + affinity_slack)
                and not (_breaks_slo(c, request) and not _breaks_slo(best, request))
            ):
                return c
    return best


def _breaks_slo(c: Candidate, request: RequestView) -> bool:
    return _breaks(c.ttft_ms, c.tpot_ms, request)


def _breaks(ttft_ms: float, tpot_ms: float, request: RequestView) -> bool:
    slo = request.slo
    return (slo.ttft_ms is not None and ttft_ms > slo.ttft_ms) or (slo.tpot_ms is not None and tpot_ms > slo.tpot_ms)


def session_worker(cluster: ClusterView, session: SessionView | None) -> WorkerView | None:
    """The healthy worker that holds the session's KV, if any."""
    if session is None or session.decode_url is None:
        return None
    w = cluster.get(session.decode_url)
    if w is None or not w.healthy:
        return None
    return w
