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

from ppd_server.routing.latency import (
    cached_on_decode,
    cached_on_prefill,
    committed_local_ms_per_step,
    decode_batch,
    estimate_replica,
    expected_output_tokens,
    kv_bytes_per_token,
    kv_fits,
    kv_tokens_needed,
    prefill_ms,
    queue_wait_ms,
    transfer_ms,
)
from ppd_server.routing.types import Candidate, ClusterView, RequestView, SessionView, WorkerView

_TIE_REL = 1e-9
#: how much worse (relative weighted score) the session's decode worker may be and still keep it
AFFINITY_SLACK = 0.25


def stable_fraction(conversation_id: str | None, turn: int, salt: str = "") -> float:
    """A number in [0, 1) derived only from (conversation_id, turn): the policies' one source of
    'randomness' (ratio shares, tie-breaks)."""
    key = f"{salt}\x00{conversation_id or ''}\x00{turn}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


def _tie_order(request: RequestView, session: SessionView | None, url: str) -> tuple[int, float]:
    affinity = 0 if session is not None and session.decode_url == url else 1
    return affinity, stable_fraction(request.conversation_id, request.turn, url)


def _weighted(ttft: float, tpot: float, best_ttft: float, best_tpot: float, request: RequestView) -> float:
    w = request.weights
    return w.ttft * ttft / max(best_ttft, 1e-9) + w.tpot * tpot / max(best_tpot, 1e-9)


def best_pd(request: RequestView, cluster: ClusterView, session: SessionView | None) -> Candidate | None:
    """The best P->D pair, or None when the cluster has no healthy prefill or decode worker.

    TTFT(pd) is additive in a P part and a D part, so P and D are chosen separately (O(P+D)).
    The hot path of every decision (router and simulator): the P part is computed once, a
    :class:`Candidate` is built only for the winner, and tie-break hashes only on ties. It
    decides exactly as ``estimate_pd`` for every roomy decode worker then :func:`_pick` would
    (``tests/server/routing/test_placement_fast.py`` compares the two on random views).
    """
    workers = cluster.workers
    prefills = [w for w in workers if w.role == "prefill" and w.healthy]
    decodes = [w for w in workers if w.role == "decode" and w.healthy]
    if not prefills or not decodes:
        return None
    prefill = _best_prefill(request, session, prefills)
    prompt = max(request.prompt_tokens, 0)
    home = session.decode_url if session is not None else None
    # a decode worker whose KV pool cannot take the request would make it wait: avoid it if we can
    # (kv_fits; only the session's decode worker caches part of the prompt)
    need = prompt + max(request.max_new_tokens, 0)
    roomy = [
        d
        for d in decodes
        if d.max_total_tokens <= 0
        or d.used_tokens + (need if d.url != home else kv_tokens_needed(request, session, d)) <= d.max_total_tokens
    ] or decodes
    cached_p = cached_on_prefill(session, prefill, prompt)
    p_ms = queue_wait_ms(prefill, prompt - cached_p) + prefill_ms(prefill.coefficients, prompt - cached_p, cached_p)
    half_out = expected_output_tokens(request, session) // 2
    link_gbps, backlog = cluster.link_gbps, cluster.link_backlog_bytes
    transfers: dict[int, float] = {}  # kv bytes -> transfer_ms (the same for every worker caching nothing)
    # the same arithmetic, in the same order, as latency.estimate_pd (decode_step_ms written out:
    # its batch part is shared by the first step and the TPOT step)
    preds: list[tuple[float, float, int, WorkerView]] = []
    for d in roomy:
        cached_d = cached_on_decode(session, d, prompt) if d.url == home and d.decode_radix_cache else 0
        per_token = d.kv_bytes_per_token if d.kv_bytes_per_token > 0 else kv_bytes_per_token(prefill)
        kv_bytes = (prompt - cached_d) * per_token
        x_ms = transfers.get(kv_bytes)
        if x_ms is None:
            x_ms = transfers[kv_bytes] = transfer_ms(kv_bytes, link_gbps, backlog)
        c = d.coefficients
        context = max(d.running_context_tokens, 0) + prompt
        fixed = c.decode_base_ms + c.decode_per_seq_ms * (decode_batch(d) + 1)
        first_step = fixed + c.decode_per_kctx_ms * context / 1000.0
        tpot = fixed + c.decode_per_kctx_ms * (context + half_out) / 1000.0 + committed_local_ms_per_step(d)
        preds.append((p_ms + x_ms + first_step, tpot, kv_bytes, d))
    w = request.weights
    w_ttft, w_tpot = w.ttft, w.tpot
    best_ttft = max(min(t for t, _, _, _ in preds), 1e-9)
    best_tpot = max(min(t for _, t, _, _ in preds), 1e-9)
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
    return Candidate("pd", d.url, prefill.url, t, tp, None, kv_bytes, cached_p, prompt - cached_p)


def _best_prefill(request: RequestView, session: SessionView | None, prefills: list[WorkerView]) -> WorkerView:
    """The prefill worker with the least (rounded) P part; equal ones go to the hash."""
    sides = [_prefill_side_ms(request, session, p) for p in prefills]
    low = min(sides)
    ties = [p for p, s in zip(prefills, sides, strict=True) if s == low]
    if len(ties) == 1:
        return ties[0]
    return min(ties, key=lambda p: stable_fraction(request.conversation_id, request.turn, p.url))


def _prefill_side_ms(request: RequestView, session: SessionView | None, p: WorkerView) -> float:
    """The P part of TTFT(pd), rounded so that near-equal workers tie (then the hash decides)."""
    prompt = max(request.prompt_tokens, 0)
    cached = cached_on_prefill(session, p, prompt)
    return round(queue_wait_ms(p, prompt - cached) + prefill_ms(p.coefficients, prompt - cached, cached), 6)


def best_replica(request: RequestView, cluster: ClusterView, session: SessionView | None) -> Candidate | None:
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
