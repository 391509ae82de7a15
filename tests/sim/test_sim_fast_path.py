"""The fast path (views rebuilt only when they change, decode-only iterations stepped without an
event each) gives exactly the results of the plain path, request by request."""

from __future__ import annotations

from dataclasses import fields

import pytest

from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.policies import make_policy
from ppd_server.routing.types import CostCoefficients
from ppd_sim import (
    ClusterSpec,
    Hardware,
    RequestHints,
    RouterBehaviour,
    Simulation,
    WorkloadSpec,
    synthetic,
)
from ppd_sim.presets import kv_capacity_tokens, preset_profile
from ppd_sim.report import summarize


def trace(result):
    return [
        (
            r.rid,
            r.conversation_id,
            r.turn,
            r.route,
            r.decode,
            r.prefill,
            r.arrival_ms,
            r.first_token_ms,
            r.finish_ms,
            r.cached_tokens,
            r.prefill_cached_tokens,
            r.kv_bytes,
            r.predicted_ttft_ms,
            r.predicted_tpot_ms,
        )
        for r in result.requests
    ]


def hardware(capacity: int | None = None) -> Hardware:
    c = CostCoefficients.from_dict(preset_profile("llama-3.1-8b", "h100")["coefficients"])
    return Hardware(c, 131072, kv_capacity_tokens("llama-3.1-8b", "h100") if capacity is None else capacity, 8192, 25.0)


@pytest.mark.parametrize(
    ("policy", "cluster", "router", "fit", "capacity"),
    [
        ("ppd", "2P4D", RouterBehaviour(), False, None),
        ("ppd", "1P3D", RouterBehaviour(), True, None),  # the router's cost model fitted online
        ("pd", "2P3D", RouterBehaviour(poll_interval_ms=0, client_max_tokens=None, link_backlog="true"), False, None),
        ("local", "1P2D", RouterBehaviour(poll_interval_ms=50), False, 6000),  # KV pressure: waits and evictions
        ("replica", "3R", RouterBehaviour(), False, None),
    ],
)
def test_fast_path_equals_the_plain_path(policy, cluster, router, fit, capacity):
    convs = synthetic(
        WorkloadSpec(qps=12, duration_s=10, workload="mixed", turns_min=2, turns_max=5, think_s=0.3, seed=3)
    )
    hw = hardware(capacity)
    results = []
    for reference in (True, False):
        cm = CostModel({"coefficients": hw.coefficients.to_dict()}) if fit else None
        sim = Simulation(
            make_policy(policy),
            ClusterSpec.parse(cluster),
            hw,
            convs,
            cost_model=cm,
            online_fit=fit,
            router=router,
            reference=reference,
        )
        results.append(sim.run())
    plain, fast = results
    assert plain.stop_reason is None and len(plain.requests) == sum(len(c.turns) for c in convs)
    assert trace(fast) == trace(plain)
    s_plain, s_fast = summarize(plain, 200, 15), summarize(fast, 200, 15)
    assert s_fast == s_plain


@pytest.mark.parametrize("slo", [{}, {"slo_ttft_ms": 150.0, "slo_tpot_ms": 12.0}])
def test_a_run_without_reasons_differs_only_in_them(slo):
    """``keep_reasons=False`` (``ppd-sim`` without ``--reasons``): the policy writes no reason
    figures and every request's reason is empty; every other field of every request is the same."""
    convs = synthetic(WorkloadSpec(qps=16, duration_s=10, workload="mixed", turns_min=2, turns_max=5, seed=4))
    policy = make_policy("ppd")
    runs = [
        Simulation(policy, ClusterSpec.parse("2P4D"), hardware(), convs, RequestHints(**slo), keep_reasons=keep).run()
        for keep in (True, False)
    ]
    kept, dropped = runs
    assert policy.explain  # the caller's policy still explains (the run used a copy)
    assert {r.route for r in kept.requests} >= {"local", "pd"} and all(r.reason for r in kept.requests)
    assert all(r.reason == "" for r in dropped.requests)
    other = [f.name for f in fields(kept.requests[0]) if f.name != "reason"]
    assert [[getattr(r, n) for n in other] for r in dropped.requests] == [
        [getattr(r, n) for n in other] for r in kept.requests
    ]
    assert summarize(dropped, 200, 15) == summarize(kept, 200, 15)
