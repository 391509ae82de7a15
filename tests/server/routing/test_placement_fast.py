"""``placement.best_pd`` (the fast path) decides exactly as the plain version it replaced:
``estimate_pd`` for every roomy decode worker, then the shared ``_pick`` with affinity slack.
Random views cover ties (equal workers), affinity, full KV pools, SLO targets and unhealthy workers."""

from __future__ import annotations

import random

import pytest
from routing_views import KV_BYTES, cluster, decode, prefill, request

from ppd_server.routing.latency import estimate_pd, kv_fits
from ppd_server.routing.placement import AFFINITY_SLACK, _pick, _prefill_side_ms, best_pd, stable_fraction
from ppd_server.routing.types import CostCoefficients, SessionView


def plain_best_pd(req, cl, sess):
    prefills = cl.by_role("prefill")
    decodes = cl.by_role("decode")
    if not prefills or not decodes:
        return None
    p = min(
        prefills, key=lambda w: (_prefill_side_ms(req, sess, w), stable_fraction(req.conversation_id, req.turn, w.url))
    )
    roomy = [d for d in decodes if kv_fits(req, sess, d)] or list(decodes)
    return _pick(req, sess, [estimate_pd(req, cl, sess, p, d) for d in roomy], AFFINITY_SLACK)


def _coefs(rng: random.Random, shared: CostCoefficients) -> CostCoefficients:
    if rng.random() < 0.5:
        return shared  # identical workers: exact ties, the hash decides
    return CostCoefficients(
        rng.uniform(1, 30),
        rng.uniform(0.01, 0.5),
        rng.uniform(0, 0.3),
        rng.uniform(5, 30),
        rng.uniform(0, 1),
        rng.uniform(0, 2),
    )


def _load(rng: random.Random, similar: bool) -> dict:
    if similar:
        return {}
    run = rng.randrange(0, 40)
    return {
        "running_reqs": run,
        "waiting_reqs": rng.randrange(0, 5),
        "waiting_tokens": rng.randrange(0, 8000),
        "running_context_tokens": run * rng.randrange(100, 4000),
        "inflight": rng.randrange(0, 45),
        "used_tokens": rng.randrange(0, 200_000),
        "local_prefill_reqs_per_step": rng.uniform(0, 0.05),
        "local_prefill_tokens_per_step": rng.uniform(0, 40),
        # the router's own prefills in flight (prefill workers price their queue with them)
        **(
            {
                "router_prefill_reqs": rng.randrange(1, 6),
                "router_prefill_tokens": rng.randrange(0, 8000),
                "router_prefill_attn_ktok2": rng.uniform(0, 20),
            }
            if rng.random() < 0.5
            else {}
        ),
    }


def random_case(rng: random.Random):
    shared = CostCoefficients()
    n_p, n_d = rng.randrange(0, 5), rng.randrange(0, 13)
    similar = rng.random() < 0.3
    ps = [
        prefill(f"http://p{i}", coefficients=_coefs(rng, shared), healthy=rng.random() > 0.1, **_load(rng, similar))
        for i in range(n_p)
    ]
    ds = [
        decode(
            f"http://d{i}",
            coefficients=_coefs(rng, shared),
            healthy=rng.random() > 0.1,
            decode_radix_cache=rng.random() < 0.8,
            max_total_tokens=rng.choice([0, 100_000, 250_000]),
            # mostly the fleet's one size (one transfer time for all), sometimes its own or unknown
            kv_bytes_per_token=KV_BYTES if rng.random() < 0.8 else rng.choice([0, 50_000]),
            **_load(rng, similar),
        )
        for i in range(n_d)
    ]
    workers = ps + ds
    rng.shuffle(workers)
    cl = cluster(*workers, link_gbps=rng.choice([0.0, 10.0, 25.0]), backlog=rng.randrange(0, 10**8))
    prompt = rng.randrange(0, 20_000)
    sess = None
    if rng.random() < 0.8:
        sess = SessionView(
            f"c{rng.randrange(50)}",
            rng.choice([None, *[f"http://d{i}" for i in range(max(n_d, 1))]]),
            rng.choice([None, *[f"http://p{i}" for i in range(max(n_p, 1))]]),
            rng.randrange(0, prompt + 1),
            rng.randrange(0, prompt + 1),
            rng.randrange(0, 5),
            last_output_tokens=rng.choice([0, 50, 500]),
        )
    req = request(
        turn=rng.randrange(1, 6),
        prompt=prompt,
        out=rng.choice([16, 256, 2048]),
        cid=None if sess is None and rng.random() < 0.5 else (sess.conversation_id if sess else "c-new"),
        w_ttft=rng.choice([0.0, 1.0, 3.0]),
        w_tpot=rng.choice([0.0, 1.0, 3.0]),
        slo_ttft_ms=rng.choice([None, 200.0, 2000.0]),
        slo_tpot_ms=rng.choice([None, 15.0, 60.0]),
    )
    return req, cl, sess


@pytest.mark.parametrize("seed", range(4))
def test_fast_best_pd_matches_plain_version(seed: int) -> None:
    rng = random.Random(seed)
    differing_choices = 0
    for _ in range(750):
        req, cl, sess = random_case(rng)
        fast, plain = best_pd(req, cl, sess), plain_best_pd(req, cl, sess)
        assert fast == plain, (req, cl, sess)
        # the second call reads the per-view terms the first one cached (WorkerView.memo)
        assert best_pd(req, cl, sess) == plain
        if plain is not None and plain.decode != min(w.url for w in cl.by_role("decode")):
            differing_choices += 1
    assert differing_choices > 50  # the cases exercise real choices, not always the first worker


def test_affinity_and_ties_are_exercised() -> None:
    """The random set reaches both branches the rewrite special-cases: a kept session worker that
    is not the best score, and ties broken by the hash."""
    rng = random.Random(99)
    kept_home = hashed = 0
    for _ in range(3000):
        req, cl, sess = random_case(rng)
        got = best_pd(req, cl, sess)
        if got is None:
            continue
        no_home = best_pd(
            req,
            cl,
            None
            if sess is None
            else SessionView(
                sess.conversation_id,
                None,
                sess.prefill_url,
                sess.cached_tokens_decode,
                sess.cached_tokens_prefill,
                sess.turns,
                last_output_tokens=sess.last_output_tokens,
            ),
        )
        if sess is not None and got.decode == sess.decode_url and no_home is not None and no_home.decode != got.decode:
            kept_home += 1
        decodes = cl.by_role("decode")
        if (
            len({d.coefficients for d in decodes}) == 1
            and len(decodes) > 1
            and all(d.running_reqs == 0 for d in decodes)
        ):
            hashed += 1
    assert kept_home > 0 and hashed > 0


def test_memo_is_no_part_of_a_view() -> None:
    """The terms best_pd caches on a view change neither its equality, hash nor repr, and a
    rebuilt view (``dataclasses.replace``) starts without them."""
    import dataclasses

    rng = random.Random(5)
    for _ in range(200):
        req, cl, sess = random_case(rng)
        before = [(w, repr(w), hash(w)) for w in cl.workers]
        best_pd(req, cl, sess)
        for w, text, h in before:
            fresh = dataclasses.replace(w)
            assert fresh.memo is None
            assert w == fresh and hash(w) == h == hash(fresh) and repr(w) == text


def test_options_are_the_same_with_a_fleet_index():
    """``build_options`` reads the role split and the session's worker from ``ClusterView.memo``
    when the view carries one (``fleet_index``): the options are those of the scan, on random
    fleets with unhealthy workers, shuffled roles and a repeated url."""
    import dataclasses

    from ppd_server.routing.policies.base import build_options
    from ppd_server.routing.types import ClusterView, fleet_index

    rng = random.Random(11)
    for n in range(1500):
        req, cl, sess = random_case(rng)
        workers = cl.workers
        if n % 5 == 0 and workers:  # a url twice: the first one is the session's
            workers = (*workers, dataclasses.replace(workers[0], healthy=not workers[0].healthy))
        plain = ClusterView(workers, cl.link_gbps, cl.link_backlog_bytes)
        indexed = ClusterView(workers, cl.link_gbps, cl.link_backlog_bytes)
        object.__setattr__(indexed, "memo", fleet_index(workers))
        assert build_options(req, indexed, sess) == build_options(req, plain, sess)
        for url in {w.url for w in workers} | {"nowhere"}:
            assert indexed.get(url) is plain.get(url)
