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

from ppd_server.routing.latency import cached_on_prefill, estimate_pd, estimate_replica, kv_fits, prefill_ms, queue_wait_ms
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
    """
    prefills = cluster.by_role("prefill")
    decodes = cluster.by_role("decode")
    if not prefills or not decodes:
        return None
    prefill = min(prefills, key=lambda p: (_prefill_side_ms(request, session, p), stable_fraction(request.conversation_id, request.turn, p.url)))
    # a decode worker whose KV pool cannot take the request would make it wait: avoid it if we can
    roomy = [d for d in decodes if kv_fits(request, session, d)] or list(decodes)
    cands = [estimate_pd(request, cluster, session, prefill, d) for d in roomy]
    return _pick(request, session, cands, AFFINITY_SLACK)


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


def _pick(request: RequestView, session: SessionView | None, cands: list[Candidate], affinity_slack: float = 0.0) -> Candidate:
    best_ttft = min(c.ttft_ms for c in cands)
    best_tpot = min(c.tpot_ms for c in cands)
    scored = [(_weighted(c.ttft_ms, c.tpot_ms, best_ttft, best_tpot, request), c) for c in cands]
    floor = min(s for s, _ in scored)
    ties = [c for s, c in scored if s <= floor * (1 + _TIE_REL) + 1e-9]
    assert ties
    best = min(ties, key=lambda c: _tie_order(request, session, c.decode or ""))
    if affinity_slack > 0 and session is not None and best.decode != session.decode_url:
        for s, c in scored:
            if c.decode == session.decode_url and s <= floor * (1 + affinity_slack) and not (
                    _breaks_slo(c, request) and not _breaks_slo(best, request)):
                return c
    return best


def _breaks_slo(c: Candidate, request: RequestView) -> bool:
    return (request.slo.ttft_ms is not None and c.ttft_ms > request.slo.ttft_ms) or (
        request.slo.tpot_ms is not None and c.tpot_ms > request.slo.tpot_ms)


def session_worker(cluster: ClusterView, session: SessionView | None) -> WorkerView | None:
    """The healthy worker that holds the session's KV, if any."""
    if session is None or session.decode_url is None:
        return None
    w = cluster.get(session.decode_url)
    if w is None or not w.healthy:
        return None
    return w
