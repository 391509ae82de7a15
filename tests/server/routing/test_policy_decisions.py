"""Every policy against hand-built clusters: turn 1, continuations, missing/unhealthy workers,
forks, can_local_prefill=False, unified-only clusters, worker choice by load."""

from __future__ import annotations

import dataclasses

import pytest
from routing_views import cluster, decode, loaded, prefill, request, session, unified

from ppd_server.routing.policies import POLICY_NAMES, make_policy
from ppd_server.routing.types import NoWorkerAvailable

ALL_SPECS = ["ppd", "pd", "local", "replica", "ratio:0.5", "ratio:1", "threshold:256"]
# specs that run a continuation locally on an idle decode worker with 100 uncached tokens
LOCAL_ON_IDLE = ["ppd", "local", "ratio:1", "threshold:256"]

PD_CLUSTER = cluster(prefill(), decode())


def test_registry_lists_every_policy():
    assert set(POLICY_NAMES) == {"ppd", "pd", "local", "replica", "ratio", "threshold"}
    for name in POLICY_NAMES:
        assert make_policy(name).spec.split(":")[0] == name


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_turn_one_goes_prefill_then_decode(spec):
    d = make_policy(spec).decide(request(turn=1, prompt=500), PD_CLUSTER, None)
    assert (d.route, d.prefill, d.decode) == ("pd", "http://p0", "http://d0")
    assert d.policy == make_policy(spec).spec
    assert "turn 1" in d.reason
    assert [c.route for c in d.candidates] == ["pd"]


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_explicit_turn_one_with_a_stale_session_is_a_new_conversation(spec):
    d = make_policy(spec).decide(request(turn=1), PD_CLUSTER, session())
    assert d.route == "pd"


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_only_unified_workers_means_replica(spec):
    cl = cluster(unified("http://u0"), unified("http://u1"))
    for turn, sess in ((1, None), (3, session(decode_url="http://u1", prefill_url=None))):
        d = make_policy(spec).decide(request(turn=turn), cl, sess)
        assert d.route == "replica" and d.prefill is None and d.decode in ("http://u0", "http://u1")
    # a continuation sticks to the unified worker holding its prefix
    d = make_policy(spec).decide(request(turn=3), cl, session(decode_url="http://u1", prefill_url=None))
    assert d.decode == "http://u1" and d.cached_tokens == 1000


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize(
    "workers",
    [
        (),
        (prefill(healthy=False), decode(healthy=False)),
        (prefill(),),
        (decode(can_local_prefill=False),),
        (unified(healthy=False),),
    ],
    ids=["empty", "all-unhealthy", "prefill-only", "decode-without-local", "unified-unhealthy"],
)
def test_nothing_can_serve_raises(spec, workers):
    with pytest.raises(NoWorkerAvailable):
        make_policy(spec).decide(request(turn=1), cluster(*workers), None)


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("holder", [None, decode("http://d0", healthy=False)], ids=["gone", "unhealthy"])
def test_decode_worker_gone_or_unhealthy_means_pd_on_another(spec, holder):
    workers = [prefill(), decode("http://d1")] + ([holder] if holder else [])
    d = make_policy(spec).decide(request(turn=3), cluster(*workers), session())
    assert (d.route, d.decode) == ("pd", "http://d1")
    assert "gone or unhealthy" in d.reason


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_decode_without_local_prefill_never_gets_local(spec):
    cl = cluster(prefill(), decode(can_local_prefill=False))
    d = make_policy(spec).decide(request(turn=2, prompt=1010), cl, session())
    assert d.route == "pd"
    assert all(c.route != "local" for c in d.candidates)
    assert "cannot prefill locally" in d.reason or spec == "replica"


@pytest.mark.parametrize("spec", LOCAL_ON_IDLE)
def test_idle_decode_worker_runs_the_continuation_locally(spec):
    d = make_policy(spec).decide(request(turn=2, prompt=1100), PD_CLUSTER, session())
    assert (d.route, d.decode, d.prefill) == ("local", "http://d0", None)
    assert d.cached_tokens == 1000
    assert {c.route for c in d.candidates} == {"local", "pd"}


@pytest.mark.parametrize("spec", ["pd", "ratio:0", "threshold:10"])
def test_pd_style_continuation_keeps_the_sessions_decode_worker(spec):
    cl = cluster(prefill(), decode("http://d0"), decode("http://d1"))
    d = make_policy(spec).decide(request(turn=2, prompt=1100), cl, session())
    # d0 holds the prefix: only the 100-token suffix crosses the link
    assert (d.route, d.decode) == ("pd", "http://d0")
    assert d.predicted("pd").kv_bytes == 100 * 100_000


@pytest.mark.parametrize("spec", ["ppd", "local", "ratio:1", "threshold:2000"])
def test_fork_continues_on_the_parents_decode_worker(spec):
    child = session(cid="child", forked_from="c1", turns=0)
    cl = cluster(prefill(), decode("http://d0"), decode("http://d1"))
    d = make_policy(spec).decide(request(turn=1, prompt=1200, cid="child"), cl, child)
    assert (d.route, d.decode) == ("local", "http://d0")


def test_fork_named_by_request_without_session_is_a_first_turn():
    d = make_policy("ppd").decide(request(turn=1, parent_conversation_id="c1"), PD_CLUSTER, None)
    assert d.route == "pd"


@pytest.mark.parametrize("spec", ["ppd", "local", "ratio:1"])
def test_no_prefill_worker_continuation_runs_local(spec):
    d = make_policy(spec).decide(request(turn=2), cluster(decode()), session(prefill_url=None))
    assert d.route == "local" and "no healthy prefill" in d.reason


def test_no_prefill_worker_turn_one_falls_back_to_replica_before_raising():
    cl = cluster(decode(), unified("http://u0"))
    assert make_policy("ppd").decide(request(turn=1), cl, None).route == "replica"


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_decode_workers_alone_serve_turn_one_with_a_full_local_prefill(spec):
    cl = cluster(decode("http://d0", **loaded(8)), decode("http://d1"), decode("http://d2", can_local_prefill=False))
    d = make_policy(spec).decide(request(turn=1, prompt=300), cl, None)
    assert (d.route, d.decode, d.cached_tokens) == ("local", "http://d1", 0)
    assert "full prefill on decode" in d.reason and [c.route for c in d.candidates] == ["local"]


def test_mixed_cluster_keeps_a_unified_session_on_its_worker():
    cl = cluster(prefill(), decode(), unified("http://u0"))
    d = make_policy("ppd").decide(request(turn=2), cl, session(decode_url="http://u0", prefill_url=None))
    assert (d.route, d.decode) == ("replica", "http://u0")


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_turn_one_picks_the_idle_decode_and_the_short_prefill_queue(spec):
    cl = cluster(
        prefill("http://p0", waiting_reqs=3, waiting_tokens=3000),
        prefill("http://p1"),
        decode("http://d0", **loaded(24)),
        decode("http://d1", **loaded(1)),
    )
    d = make_policy(spec).decide(request(turn=1, prompt=300), cl, None)
    assert (d.prefill, d.decode) == ("http://p1", "http://d1")


def test_router_inflight_counts_when_the_load_poll_lags():
    cl = cluster(
        prefill("http://p0", inflight=6), prefill("http://p1"), decode("http://d0", inflight=9), decode("http://d1")
    )
    d = make_policy("pd").decide(request(turn=1, prompt=300), cl, None)
    assert (d.prefill, d.decode) == ("http://p1", "http://d1")


def test_equal_workers_are_shared_deterministically():
    cl = cluster(prefill("http://p0"), prefill("http://p1"), decode("http://d0"), decode("http://d1"))
    pol = make_policy("ppd")
    picks = [pol.decide(request(turn=1, cid=f"conv-{i}"), cl, None) for i in range(200)]
    again = [pol.decide(request(turn=1, cid=f"conv-{i}"), cl, None) for i in range(200)]
    assert picks == again
    decode_share = sum(d.decode == "http://d0" for d in picks) / len(picks)
    prefill_share = sum(d.prefill == "http://p0" for d in picks) / len(picks)
    assert 0.3 < decode_share < 0.7 and 0.3 < prefill_share < 0.7


def test_replica_policy_prefers_unified_workers_in_a_mixed_cluster():
    cl = cluster(prefill(), decode(), unified("http://u0"))
    assert make_policy("replica").decide(request(turn=1), cl, None).decode == "http://u0"
    assert make_policy("ppd").decide(request(turn=1), cl, None).route == "pd"


def test_replica_affinity_yields_to_a_much_less_loaded_worker():
    sess = session(decode_url="http://u0", prefill_url=None, cached_d=200)
    busy = cluster(unified("http://u0", **loaded(40), waiting_tokens=20_000), unified("http://u1"))
    assert make_policy("replica").decide(request(turn=2, prompt=300), busy, sess).decode == "http://u1"


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_decide_is_pure(spec):
    pol = make_policy(spec)
    cl, sess, req = cluster(prefill(), decode(**loaded(4))), session(), request()
    before = (dataclasses.replace(cl), dataclasses.replace(sess), dataclasses.replace(req))
    assert pol.decide(req, cl, sess) == pol.decide(req, cl, sess)
    assert (cl, sess, req) == before


def test_ratio_share_is_deterministic_and_close_to_x():
    pol = make_policy("ratio:0.3")
    routes = [
        pol.decide(request(turn=t, cid=f"c{i}"), PD_CLUSTER, session(cid=f"c{i}")).route
        for i in range(300)
        for t in (2, 3)
    ]
    share = routes.count("local") / len(routes)
    assert 0.24 < share < 0.36
    assert routes == [
        pol.decide(request(turn=t, cid=f"c{i}"), PD_CLUSTER, session(cid=f"c{i}")).route
        for i in range(300)
        for t in (2, 3)
    ]


@pytest.mark.parametrize("prompt,uncached,route", [(1256, 256, "local"), (1257, 257, "pd"), (1000, 1, "local")])
def test_threshold_boundary_counts_uncached_tokens_on_the_decode_worker(prompt, uncached, route):
    d = make_policy("threshold:256").decide(request(prompt=prompt), PD_CLUSTER, session(cached_d=1000))
    assert d.route == route
    assert f" {uncached} uncached" in d.reason


def test_threshold_ignores_load_but_ppd_does_not():
    swamped = cluster(prefill(), decode(**loaded(64), waiting_reqs=10, waiting_tokens=20_000))
    assert make_policy("threshold:256").decide(request(), swamped, session()).route == "local"
    assert make_policy("ppd").decide(request(), swamped, session()).route == "pd"


@pytest.mark.parametrize("spec", ["ppd", "local", "ratio:1", "threshold:256"])
def test_full_kv_pool_on_the_holder_moves_the_turn_to_a_roomy_decode_worker(spec):
    full = decode("http://d0", max_total_tokens=10_000, used_tokens=9_950)
    cl = cluster(prefill(), full, decode("http://d1", max_total_tokens=10_000))
    d = make_policy(spec).decide(request(prompt=1100, out=32), cl, session())
    assert (d.route, d.decode) == ("pd", "http://d1")
    assert "KV pool full (9950/10000" in d.reason


def test_full_kv_pools_everywhere_still_route():
    cl = cluster(prefill(), decode("http://d0", max_total_tokens=1000, used_tokens=990))
    d = make_policy("ppd").decide(request(prompt=1100), cl, session())
    assert d.route == "local"  # nowhere has room: the holder keeps it (it needs the fewest new slots)


def test_turn_one_avoids_a_full_decode_worker():
    cl = cluster(
        prefill(),
        decode("http://d0", max_total_tokens=4096, used_tokens=4000),
        decode("http://d1", **loaded(20), max_total_tokens=4096),
    )
    assert make_policy("pd").decide(request(turn=1, prompt=500), cl, None).decode == "http://d1"
