"""The simulator's speed devices hold to the plain definitions they replace: a worker's view
(built positionally) has every field where its name says, and arrivals fed to the event loop one
at a time run in the order scheduling them all at once gives."""

from __future__ import annotations

import dataclasses

from ppd_server.routing.types import CostCoefficients, WorkerView
from ppd_sim.events import EventLoop
from ppd_sim.request import SimRequest
from ppd_sim.worker import SimWorker


class _Host:
    def on_prefilled(self, worker, req):
        pass

    def on_kv_slots(self, worker, req):
        pass

    def on_finished(self, worker, req):
        pass


def test_worker_view_fields_are_where_their_names_say():
    loop = EventLoop()
    c = CostCoefficients(1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    w = SimWorker("sim://d0", "decode", c, loop, _Host(), 50_000, 131072, 4096, True, True, poll_lag=False)
    w.submit_prefill(SimRequest(0, "c0", 2, 0.0, 300, 40, 20, expected_output_tokens=16))
    w.submit_prefill(SimRequest(1, "c1", 2, 0.0, 900, 50, 10))
    running, waiting, waiting_tokens, used, context = w.load()
    expected = WorkerView(
        url="sim://d0",
        role="decode",
        healthy=True,
        can_local_prefill=True,
        decode_radix_cache=True,
        bootstrap_port=None,
        max_total_tokens=50_000,
        kv_bytes_per_token=131072,
        running_reqs=running,
        waiting_reqs=waiting,
        waiting_tokens=waiting_tokens,
        used_tokens=used,
        running_context_tokens=context,
        inflight=2,
        local_prefill_reqs=2,
        local_prefill_tokens=w.local_load.tokens,
        local_prefill_tokens_per_step=w.local_load.tokens_per_step,
        local_prefill_reqs_per_step=w.local_load.reqs_per_step,
        chunked_prefill_size=4096,
        coefficients=c,
    )
    view = w.view()
    for f in dataclasses.fields(WorkerView):
        assert getattr(view, f.name) == getattr(expected, f.name), f.name
    assert view.local_prefill_tokens > 0 and view.used_tokens > 0 and view.running_reqs + view.waiting_reqs == 2


def test_reserved_places_keep_the_order_of_scheduling_at_once():
    def run(lazy: bool) -> list[str]:
        loop, seen = EventLoop(), []
        times = [5.0, 1.0, 5.0, 0.0, 3.0]
        loop.at(1.0, seen.append, "early")
        if lazy:
            first = loop.reserve(len(times))
            pending = sorted(((t, first + k, f"a{k}") for k, t in enumerate(times)), reverse=True)

            def arrive(name: str) -> None:
                if pending:
                    t, seq, nxt = pending.pop()
                    loop.at_reserved(t, seq, arrive, nxt)
                seen.append(name)
                loop.at(loop.now, seen.append, f"after-{name}")

            t, seq, name = pending.pop()
            loop.at_reserved(t, seq, arrive, name)
        else:
            for k, t in enumerate(times):

                def arrive(name: str = f"a{k}") -> None:
                    seen.append(name)
                    loop.at(loop.now, seen.append, f"after-{name}")

                loop.at(t, arrive)
        loop.at(5.0, seen.append, "late")
        loop.run(max_time_ms=100.0, max_events=100)
        return seen

    assert run(lazy=True) == run(lazy=False)


def test_turn_hints_carry_every_hints_field():
    from ppd_sdk.wire import SLO, Hints, Weights
    from ppd_sim.engine import _TurnHints

    run = Hints(weights=Weights(ttft=2.0, tpot=0.5), slo=SLO(ttft_ms=200.0, tpot_ms=None))
    fast = _TurnHints("c7", 3, run)
    plain = run.model_copy(update={"conversation_id": "c7", "turn": 3})
    assert set(_TurnHints.__slots__) == set(Hints.model_fields)
    for name in Hints.model_fields:
        assert getattr(fast, name) == getattr(plain, name), name


def test_cluster_views_carry_their_fleet_index():
    """Every ClusterView the simulator hands a policy carries ``fleet_index`` of its workers (the
    role split and url positions the policy would otherwise compute), with true and believed
    coefficients, in a mixed fleet; and ``get`` finds each worker through it."""
    from ppd_server.routing.cost_model import CostModel
    from ppd_server.routing.policies import make_policy
    from ppd_server.routing.types import fleet_index
    from ppd_sim import ClusterSpec, Hardware, Simulation, WorkloadSpec, synthetic

    convs = synthetic(WorkloadSpec(qps=8, duration_s=5, workload="chat", turns_min=2, turns_max=3, think_s=0.2, seed=1))
    hw = Hardware(CostCoefficients(), 1000, 0)
    for cost_model in (None, CostModel({"coefficients": CostCoefficients().to_dict()})):
        policy = make_policy("ppd")
        seen = []
        decide = policy.decide

        def checking(request, cluster, session, decide=decide, seen=seen):
            assert cluster.memo == fleet_index(cluster.workers)
            assert all(cluster.get(w.url) is w for w in cluster.workers) and cluster.get("nowhere") is None
            seen.append(cluster)
            return decide(request, cluster, session)

        policy.decide = checking
        Simulation(policy, ClusterSpec.parse("2P3D1R"), hw, convs, cost_model=cost_model).run()
        assert len(seen) == sum(len(c.turns) for c in convs)
