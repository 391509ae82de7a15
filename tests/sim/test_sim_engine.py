"""The simulation run end to end: hand-checkable timings, conservation, determinism, the PPD
paper's direction. Each run is small (well under a second)."""

from __future__ import annotations

import statistics

import pytest

from ppd_server.routing.latency import decode_step_ms, prefill_ms, transfer_ms
from ppd_server.routing.policies import make_policy
from ppd_server.routing.types import CostCoefficients
from ppd_sim import (
    ClusterSpec,
    Conversation,
    Hardware,
    RequestHints,
    RouterBehaviour,
    Simulation,
    WorkloadSpec,
    synthetic,
)
from ppd_sim.presets import kv_capacity_tokens, preset_profile

# Round numbers so the expected times can be worked out by hand.
COEFS = CostCoefficients(5.0, 1.0, 0.2, 20.0, 3.0, 1.0)
KV_BYTES = 100_000
HAND = Hardware(COEFS, KV_BYTES, kv_capacity_tokens=100_000, chunk_tokens=4096, link_gb_per_s=1.0)  # 1e6 bytes/ms


def llama_h100() -> Hardware:
    c = CostCoefficients.from_dict(preset_profile("llama-3.1-8b", "h100")["coefficients"])
    return Hardware(c, 131072, kv_capacity_tokens("llama-3.1-8b", "h100"), 8192, 25.0)


NO_HINTS = RequestHints()


def run(policy: str, convs, cluster: str = "1P1D", hw: Hardware = HAND, hints: RequestHints = NO_HINTS):
    return Simulation(make_policy(policy), ClusterSpec.parse(cluster), hw, tuple(convs), hints).run()


def one_conversation() -> Conversation:
    return Conversation("c0", 0.0, ((100, 4), (20, 3)), (50.0,))


def test_turn1_ttft_on_an_idle_cluster_is_prefill_plus_transfer():
    """The first token was sampled on P and travels with the KV: an idle decode worker sends it at once."""
    t1 = run("ppd", [one_conversation()]).requests[0]
    expected = prefill_ms(COEFS, 100) + transfer_ms(100 * KV_BYTES, 8.0)
    assert t1.route == "pd" and t1.ttft_ms == pytest.approx(expected) == pytest.approx(115.002)
    assert t1.predicted_ttft_ms == pytest.approx(expected)  # the router's model, unloaded, is exact
    steps = [decode_step_ms(COEFS, 1, 100 + j) for j in (1, 2, 3)]  # the context grows a token per step
    assert t1.tpot_ms == pytest.approx(sum(steps) / 3)
    assert t1.kv_bytes == 100 * KV_BYTES


def test_turn2_local_ttft_is_the_append_prefill_over_the_cached_history():
    result = run("local", [one_conversation()])
    t1, t2 = result.requests
    assert t2.route == "local" and t2.turn == 2
    assert t2.arrival_ms == pytest.approx(t1.finish_ms + 50.0)
    assert t2.cached_tokens == 104 and t2.computed_tokens == 20 and t2.kv_bytes == 0
    assert t2.ttft_ms == pytest.approx(prefill_ms(COEFS, 20, 104)) == pytest.approx(t2.predicted_ttft_ms)
    assert result.kv_bytes_moved == t1.kv_bytes


def test_turn2_pd_recomputes_what_p_lacks_and_ships_what_d_lacks():
    _, t2 = run("pd", [one_conversation()]).requests
    assert t2.route == "pd" and t2.prefill_cached_tokens == 100 and t2.computed_tokens == 24
    assert t2.cached_tokens == 104 and t2.kv_bytes == 20 * KV_BYTES  # D's radix cache: only the suffix moves
    expected = prefill_ms(COEFS, 24, 100) + transfer_ms(20 * KV_BYTES, 8.0)  # D idle: the first token goes at once
    assert t2.ttft_ms == pytest.approx(expected) == pytest.approx(t2.predicted_ttft_ms)


def test_without_decode_radix_cache_pd_ships_the_whole_prompt_and_local_is_never_chosen():
    hw = Hardware(COEFS, KV_BYTES, 100_000, 4096, 1.0, decode_local_prefill=False, decode_radix_cache=False)
    _, t2 = run("local", [one_conversation()], hw=hw).requests
    assert t2.route == "pd" and t2.kv_bytes == 124 * KV_BYTES


def test_a_local_append_prefill_slows_the_streams_running_on_that_decode_worker():
    streamer = Conversation("a", 1000.0, ((100, 400),), ())
    appender = Conversation("b", 0.0, ((100, 4), (2000, 4)), (1100.0,))
    by_policy = {
        p: {r.conversation_id + str(r.turn): r for r in run(p, [streamer, appender]).requests} for p in ("pd", "local")
    }
    assert by_policy["local"]["b2"].route == "local" and by_policy["pd"]["b2"].route == "pd"
    assert by_policy["local"]["b2"].first_token_ms < by_policy["local"]["a1"].finish_ms  # they overlapped
    # a 2000-token prefill stalls one iteration by ~2 s: ~5 ms more per token over 399 tokens
    assert by_policy["local"]["a1"].tpot_ms > by_policy["pd"]["a1"].tpot_ms + 3.0


def mixed_load(seed: int = 1):
    return synthetic(
        WorkloadSpec(qps=8, duration_s=8, workload="mixed", turns_min=2, turns_max=5, think_s=0.5, seed=seed)
    )


def test_a_run_is_a_function_of_its_inputs():
    def trace(result):
        return [
            (r.rid, r.conversation_id, r.turn, r.route, r.decode, r.first_token_ms, r.finish_ms)
            for r in result.requests
        ]

    convs = mixed_load()
    assert trace(run("ppd", convs, "1P2D", llama_h100())) == trace(run("ppd", convs, "1P2D", llama_h100()))


@pytest.mark.parametrize("policy", ["pd", "local", "ppd", "threshold:256", "ratio:0.5"])
def test_every_turn_finishes_once_and_tokens_add_up(policy):
    convs = mixed_load()
    result = run(policy, convs, "1P2D", llama_h100())
    assert result.stop_reason is None
    reqs = result.requests
    assert len(reqs) == sum(len(c.turns) for c in convs)
    assert len({(r.conversation_id, r.turn) for r in reqs}) == len(reqs)
    for conv in convs:
        turns = sorted((r for r in reqs if r.conversation_id == conv.conversation_id), key=lambda r: r.turn)
        assert [r.turn for r in turns] == list(range(1, len(conv.turns) + 1))
        for k, r in enumerate(turns):
            assert (r.input_tokens, r.output_tokens, r.prompt_tokens) == (*conv.turns[k], conv.prompt_tokens(k))
            assert r.arrival_ms <= r.first_token_ms <= r.finish_ms
            if k:
                assert r.arrival_ms == pytest.approx(turns[k - 1].finish_ms + conv.think_ms[k - 1])
    for r in reqs:
        if r.route == "pd":
            assert r.prefill_cached_tokens + r.computed_tokens == r.prompt_tokens
            assert r.kv_bytes == (r.prompt_tokens - r.cached_tokens) * 131072
        else:
            assert r.cached_tokens + r.computed_tokens == r.prompt_tokens and r.kv_bytes == 0
    assert result.kv_bytes_moved == sum(r.kv_bytes for r in reqs)


def test_pd_moves_kv_for_every_turn_and_local_for_turn_one_only():
    convs = mixed_load()
    pd, local = run("pd", convs, "1P2D", llama_h100()), run("local", convs, "1P2D", llama_h100())
    assert all(r.kv_bytes > 0 for r in pd.requests)
    assert all(r.kv_bytes == 0 and r.route == "local" for r in local.requests if r.turn > 1)
    assert pd.kv_bytes_moved > 2 * local.kv_bytes_moved


def later_ttft_p50(result) -> float:
    return statistics.median(r.ttft_ms for r in result.requests if r.turn > 1)


def test_prefill_starved_fleet_ppd_beats_pd_on_turn2_ttft():
    """1P3D at a load the single prefill worker cannot carry (the PPD paper's -68% direction)."""
    convs = synthetic(WorkloadSpec(qps=20, duration_s=15, workload="big_paste", seed=0))
    pd, ppd = run("pd", convs, "1P3D", llama_h100()), run("ppd", convs, "1P3D", llama_h100())
    assert later_ttft_p50(ppd) < 0.5 * later_ttft_p50(pd)
    assert sum(r.route == "local" for r in ppd.requests if r.turn > 1) > 0


def test_idle_fleet_ppd_and_local_agree():
    convs = synthetic(WorkloadSpec(qps=0.2, duration_s=30, workload="mid_bal", think_s=5.0, seed=2))
    ppd, local = run("ppd", convs, "1P3D", llama_h100()), run("local", convs, "1P3D", llama_h100())
    assert [r.route for r in ppd.requests] == [r.route for r in local.requests]
    assert [r.ttft_ms for r in ppd.requests] == pytest.approx([r.ttft_ms for r in local.requests])


def test_client_weights_reach_the_policy():
    convs = synthetic(WorkloadSpec(qps=20, duration_s=10, workload="big_paste", seed=0))
    share = {}
    for w_tpot in (1.0, 1000.0):
        reqs = run("ppd", convs, "1P3D", llama_h100(), RequestHints(w_tpot=w_tpot)).requests
        share[w_tpot] = sum(r.route == "local" for r in reqs if r.turn > 1)
    assert share[1000.0] < share[1.0]


def test_kv_pressure_evicts_prefixes_and_the_run_still_drains():
    hw = Hardware(COEFS, KV_BYTES, kv_capacity_tokens=700, chunk_tokens=4096, link_gb_per_s=1.0)
    convs = [Conversation(f"c{k}", 10.0 * k, ((100, 50), (50, 20), (30, 10)), (5.0, 5.0)) for k in range(6)]
    result = run("local", convs, "1P1D", hw)
    assert result.stop_reason is None and all(r.finish_ms is not None for r in result.requests)
    assert result.evicted_tokens > 0
    # an evicted prefix is recomputed locally: the session table still believed it cached
    assert any(r.turn > 1 and r.route == "local" and r.cached_tokens == 0 for r in result.requests)


def test_the_policy_sees_load_the_way_sglang_reports_it():
    """Mid-prefill of a P->D turn: P has it running with its uncached tokens, D has it waiting
    (prealloc queue) and in flight; once it streams, D reports it running with its context."""
    instant = RouterBehaviour(poll_interval_ms=0)
    sim = Simulation(
        make_policy("pd"), ClusterSpec.parse("1P1D"), HAND, (Conversation("c0", 0.0, ((100, 40),), ()),), router=instant
    )
    seen = {}
    sim.loop.at(50.0, lambda: seen.setdefault("prefill", sim.cluster.view()))  # prefill takes ~105 ms
    sim.loop.at(300.0, lambda: seen.setdefault("decode", sim.cluster.view()))  # TTFT ~138 ms, 40 tokens ~0.9 s
    sim.run()
    p, d = seen["prefill"].workers
    assert (p.role, p.running_reqs, p.waiting_tokens, p.inflight, p.used_tokens) == ("prefill", 1, 100, 1, 100)
    assert (d.role, d.running_reqs, d.waiting_reqs, d.inflight, d.used_tokens) == ("decode", 0, 1, 1, 0)
    assert d.can_local_prefill and d.decode_radix_cache and d.max_total_tokens == 100_000 and d.coefficients == COEFS
    p, d = seen["decode"].workers
    assert (p.running_reqs, p.inflight, p.used_tokens) == (0, 0, 0)
    assert (d.running_reqs, d.waiting_reqs, d.inflight, d.used_tokens) == (1, 0, 1, 140)
    assert 100 < d.running_context_tokens < 140
    assert seen["decode"].link_gbps == 8.0 and seen["decode"].link_backlog_bytes == 0


def test_the_policy_predicts_with_the_router_cost_model_beliefs():
    from ppd_server.routing.cost_model import CostModel

    slow = {"coefficients": {**COEFS.to_dict(), "prefill_per_token_ms": 10.0}}  # believes prefill 10x slower
    sim = Simulation(
        make_policy("ppd"), ClusterSpec.parse("1P1D"), HAND, (one_conversation(),), cost_model=CostModel(slow)
    )
    t1, _ = sim.run().requests
    assert t1.ttft_ms == pytest.approx(115.002)  # the hardware did not change
    assert t1.predicted_ttft_ms == pytest.approx(115.002 + 9.0 * 100)


def test_online_fit_feeds_the_cost_model_like_the_router():
    from ppd_server.routing.cost_model import CostModel

    convs = mixed_load()
    hw = llama_h100()
    profile = {"coefficients": hw.coefficients.to_dict()}
    result = Simulation(
        make_policy("ppd"), ClusterSpec.parse("1P2D"), hw, convs, cost_model=CostModel(profile), online_fit=True
    ).run()
    report = result.cost_model
    assert report is not None and report["online_fit"]
    assert sum(row["count"] for row in report["errors"].values()) == len(result.requests)
    assert all(0.5 < row["ttft_obs_over_pred"] < 2.0 for row in report["errors"].values())
    # refitted from what the simulated P worker did (the fit also absorbs waits the formulas omit,
    # so it need not stay at the truth it started from)
    assert report["coefficients"]["sim://p0"] != hw.coefficients.to_dict()
    with pytest.raises(ValueError, match="cost_model"):
        Simulation(make_policy("ppd"), ClusterSpec.parse("1P1D"), hw, convs, online_fit=True)


def test_a_prefill_worker_whose_kv_filled_restarts_when_its_kv_is_sent():
    """Regression: P admitted two prefills, the third waited for slots; the KV left over the link
    and freed them, but nothing restarted the idle P worker, so the third never finished."""
    hw = Hardware(COEFS, KV_BYTES, kv_capacity_tokens=250, chunk_tokens=4096, link_gb_per_s=0.01)  # 1 s per 100 tokens
    convs = [Conversation(f"c{k}", 0.0, ((100, 4),), ()) for k in range(3)]  # P holds two prompts at most
    result = run("pd", convs, "1P1D", hw)
    assert result.stop_reason is None
    assert all(r.finish_ms is not None for r in result.requests)
    third = max(result.requests, key=lambda r: r.first_token_ms)
    assert third.first_token_ms > min(r.first_token_ms for r in result.requests)


def test_turns_that_never_finish_are_reported_with_a_stop_reason(monkeypatch):
    """Whatever stalls a run, its open turns are counted and the run says why it stopped."""
    from ppd_sim.report import format_table, summarize
    from ppd_sim.worker import SimWorker

    def old_kv_sent(self, req):  # the bug above: slots freed, the idle worker never restarted
        self.kv.release(req.conversation_id, self._p_pinned.pop(req.rid), req.prompt_tokens)

    monkeypatch.setattr(SimWorker, "kv_sent", old_kv_sent)
    hw = Hardware(COEFS, KV_BYTES, kv_capacity_tokens=250, chunk_tokens=4096, link_gb_per_s=0.01)
    convs = [Conversation(f"c{k}", 0.0, ((100, 4),), ()) for k in range(2)]
    convs.append(Conversation("c2", 0.0, ((100, 4), (10, 4)), (1.0,)))  # its turn 1 is the third prefill: stuck
    result = run("pd", convs, "1P1D", hw)
    assert result.stop_reason == "2 turns never finished: the queues stalled with nothing left to run"
    s = summarize(result)
    assert (s["turns_planned"], s["requests"], s["finished"], s["unfinished"], s["never_sent"]) == (4, 3, 2, 2, 1)
    assert s["success_rate"] == pytest.approx(2 / 4)
    table = format_table([s])
    assert "2/4" in table and "note: pd: 2 turns never finished" in table


def test_a_turn_finished_after_the_request_timeout_failed():
    from ppd_sim.report import summarize

    result = run("pd", [one_conversation()])  # turn 1 ends ~250 ms after it was sent, turn 2 ~180 ms
    t1, t2 = result.requests
    limit_s = (t1.e2e_ms + t2.e2e_ms) / 2 / 1000.0  # between the two
    assert t2.e2e_ms < t1.e2e_ms
    s = summarize(result, slo_ttft_ms=1e6, request_timeout_s=limit_s)
    assert (s["finished"], s["timed_out"], s["success_rate"], s["success_rate_turn2plus"]) == (2, 1, 0.5, 1.0)
    assert s["slo_attainment"] == 0.5  # a late turn never meets its SLO
    assert summarize(result)["success_rate"] == 1.0  # the live router's 600 s
