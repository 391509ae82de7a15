"""The cost model: profile start, online refit converging on synthetic timings, error stats."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from ppd_server.routing.cost_model import MIN_SAMPLES_TO_PUBLISH as MIN_SAMPLES
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.latency import (
    decode_rows_ms,
    decode_step_ms,
    estimate_local,
    estimate_pd,
    prefill_ms,
    transfer_ms,
)
from ppd_server.routing.observation import Observation
from ppd_server.routing.rls import RecursiveLeastSquares
from ppd_server.routing.types import ClusterView, CostCoefficients, RequestView, SessionView, WorkerView

PROFILE = {"model": "test", "coefficients": CostCoefficients().to_dict()}
TRUE = CostCoefficients(
    prefill_base_ms=8.0,
    prefill_per_token_ms=0.5,
    prefill_attn_ms_per_ktok2=50.0,
    decode_base_ms=15.0,
    decode_per_seq_ms=1.0,
    decode_per_kctx_ms=4.0,
)
KV = 20_000
LINK_GBPS = 10.0


def test_coefficients_start_from_the_profile_per_role():
    prof = {"model": "m", "coefficients": {"prefill_per_token_ms": 0.3}, "by_role": {"decode": {"decode_base_ms": 9.0}}}
    cm = CostModel(prof)
    assert cm.model_name == "m"
    assert cm.coefficients("http://p", "prefill").prefill_per_token_ms == 0.3
    d = cm.coefficients("http://d", "decode")
    assert (d.prefill_per_token_ms, d.decode_base_ms) == (0.3, 9.0)
    assert CostModel(None).coefficients("http://x", "unified") == CostCoefficients()


@pytest.mark.parametrize(
    "profile,needle",
    [
        ({}, "coefficients"),
        ({"coefficients": {"warp_ms": 1}}, "warp_ms"),
        ({"coefficients": {"decode_base_ms": -1}}, "decode_base_ms"),
        ({"coefficients": {"decode_base_ms": "fast"}}, "decode_base_ms"),
        ({"coefficients": {}, "by_role": {"gpu": {}}}, "gpu"),
    ],
)
def test_bad_profiles_are_rejected_by_name(profile, needle):
    with pytest.raises(ValueError, match=needle):
        CostModel(profile)


def _traffic(cm: CostModel, rng: random.Random, n: int) -> None:
    """The router loop on synthetic workers whose true speed is TRUE (3% noise): predict with
    the current coefficients, then observe what the 'hardware' did."""
    for _ in range(n):
        route = rng.choice(["local", "pd"])
        cached = rng.randrange(0, 3000)
        new = rng.randrange(16, 800)
        running = rng.randrange(0, 16)
        ctx = running * rng.randrange(200, 2000)
        prompt = cached + new
        p = WorkerView(
            "http://p", "prefill", kv_bytes_per_token=KV, coefficients=cm.coefficients("http://p", "prefill")
        )
        d = WorkerView(
            "http://d",
            "decode",
            can_local_prefill=True,
            decode_radix_cache=True,
            kv_bytes_per_token=KV,
            running_reqs=running,
            running_context_tokens=ctx,
            coefficients=cm.coefficients("http://d", "decode"),
        )
        req = RequestView("c", 2, prompt, 64)

        def noise() -> float:
            return 1.0 + rng.uniform(-0.03, 0.03)

        true_tpot = decode_step_ms(TRUE, running + 1, ctx + prompt + 32) * noise()
        in_flight = decode_step_ms(TRUE, running, ctx) / 2 if running else 0.0  # D's iteration in flight ends
        if route == "local":
            sess = SessionView("c", "http://d", "http://p", cached, 0, 1)
            pred = estimate_local(req, sess, d)
            append = prefill_ms(TRUE, new, cached)
            true_ttft = (in_flight + append + decode_rows_ms(TRUE, running, ctx)) * noise()  # one chunk: the rows
            # steady state: a stream absorbs about the interference one local prefill causes
            true_tpot += running / (running + 1) * append / 64
            obs_cached, kv_bytes = cached, 0
        else:
            sess = SessionView("c", "http://d9", "http://p", 0, cached, 1)
            pred = estimate_pd(req, ClusterView((p, d), link_gbps=LINK_GBPS), sess, p, d)
            kv_bytes = prompt * KV
            true_ttft = (
                prefill_ms(TRUE, new, cached)
                + transfer_ms(kv_bytes, LINK_GBPS)
                + in_flight  # the first token (sampled on P) goes out when D's iteration in flight ends
            ) * noise()
            obs_cached = cached
        cm.observe(
            Observation(
                route,
                "http://d",
                "http://p" if route == "pd" else None,
                new,
                obs_cached,
                true_ttft,
                true_tpot,
                running,
                pred.ttft_ms,
                pred.tpot_ms,
                kv_bytes,
                ctx,
                completion_tokens=64,
            )
        )


def test_online_fit_converges_to_the_true_speeds_and_the_error_shows_it():
    cm = CostModel(PROFILE, error_window=100)
    rng = random.Random(7)
    _traffic(cm, rng, 10)
    early = cm.error_summary()
    _traffic(cm, rng, 600)
    late = cm.error_summary()
    for name in ("prefill_per_token_ms", "prefill_attn_ms_per_ktok2"):
        for url, role in (("http://p", "prefill"), ("http://d", "decode")):
            got = getattr(cm.coefficients(url, role), name)
            assert got == pytest.approx(getattr(TRUE, name), rel=0.15), (url, name)
    dec = cm.coefficients("http://d", "decode")
    for name in ("decode_per_seq_ms", "decode_per_kctx_ms", "decode_base_ms"):
        assert getattr(dec, name) == pytest.approx(getattr(TRUE, name), rel=0.15), name
    for route in ("local", "pd"):
        assert early[route]["ttft_abs_pct_err"] > 10
        assert late[route]["ttft_abs_pct_err"] < 3
        assert late[route]["tpot_abs_pct_err"] < 3
        assert late[route]["ttft_obs_over_pred"] == pytest.approx(1.0, abs=0.05)


def test_error_summary_reports_bias_per_route():
    cm = CostModel()
    for _ in range(10):
        cm.observe(Observation("local", "http://d", None, 100, 0, 100.0, 20.0, 0, 125.0, 20.0))
        cm.observe(Observation("pd", "http://d", "http://p", 100, 0, 100.0, 20.0, 0, 50.0, 40.0))
    s = cm.error_summary()
    assert s["local"]["count"] == 10
    assert s["local"]["ttft_abs_pct_err"] == pytest.approx(25.0)
    assert s["local"]["ttft_obs_over_pred"] == pytest.approx(0.8)
    assert s["local"]["tpot_abs_pct_err"] == pytest.approx(0.0)
    assert s["pd"]["ttft_abs_pct_err"] == pytest.approx(50.0)
    assert s["pd"]["tpot_obs_over_pred"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "obs",
    [
        Observation("local", "http://d", None, 100, 0, math.nan, 20.0, 0, 10.0, 20.0),
        Observation("local", "http://d", None, -5, 0, 100.0, 20.0, 0, 10.0, 20.0),
        Observation("local", "http://d", None, 100, 0, -1.0, None, 0, 10.0, None),
    ],
    ids=["nan-ttft", "negative-tokens", "negative-ttft"],
)
def test_unusable_observations_change_nothing(obs):
    cm = CostModel()
    before = cm.coefficients("http://d", "decode")
    cm.observe(obs)
    assert cm.coefficients("http://d", "decode") == before
    assert cm.error_summary() == {}


def test_one_token_answers_fit_prefill_only_and_forget_drops_a_worker():
    cm = CostModel()
    start = cm.coefficients("http://d", "decode")
    for _ in range(MIN_SAMPLES):
        cm.observe(Observation("local", "http://d", None, 500, 0, 900.0, None, 0, None, None))
    fitted = cm.coefficients("http://d", "decode")
    assert fitted.prefill_per_token_ms > start.prefill_per_token_ms
    assert fitted.decode_base_ms == start.decode_base_ms
    assert cm.snapshot()["workers"]["http://d"]["prefill_samples"] == MIN_SAMPLES
    cm.forget("http://d")
    assert cm.coefficients("http://d", "decode") == start


def test_rls_recovers_an_exact_linear_model():
    rls = RecursiveLeastSquares([0.0, 0.0, 0.0], [100.0, 100.0, 100.0], noise_std=1.0, lam=1.0)
    rng = random.Random(1)
    for _ in range(50):
        x = [1.0, rng.uniform(0, 10), rng.uniform(0, 5)]
        rls.update(x, 3.0 + 2.0 * x[1] - 0.5 * x[2])
    assert rls.theta == pytest.approx([3.0, 2.0, -0.5], abs=1e-3)


def test_rls_covariance_stays_bounded_without_excitation():
    rls = RecursiveLeastSquares([1.0, 1.0], [1.0, 1.0], noise_std=1.0, lam=0.9)
    for _ in range(2000):
        rls.update([1.0, 0.0], 1.0)  # never excites the second parameter
    rls.update([0.0, 1.0], 1000.0)
    assert abs(rls.theta[1]) < 1000.0 and math.isfinite(rls.theta[1])
    assert rls.samples == 2001


def test_pd_fit_uses_the_prefill_workers_own_cache_hit():
    """For P->D the worker-reported cached_tokens adds the decode worker's hit; the prefill
    worker computed prompt - its own hit, and only that fits its coefficients."""
    rng = random.Random(5)
    told, untold = CostModel(PROFILE), CostModel(PROFILE)
    for _ in range(300):
        prompt = rng.randrange(200, 3000)
        d_hit = rng.randrange(0, prompt)
        ttft = prefill_ms(TRUE, prompt, 0)  # P had nothing cached
        told.observe(
            Observation("pd", "http://d", "http://p", prompt - d_hit, d_hit, ttft, None, 0, prefill_cached_tokens=0)
        )
        untold.observe(Observation("pd", "http://d", "http://p", prompt - d_hit, d_hit, ttft, None, 0))
    assert told.coefficients("http://p", "prefill").prefill_per_token_ms == pytest.approx(
        TRUE.prefill_per_token_ms, rel=0.05
    )
    assert untold.coefficients("http://p", "prefill").prefill_per_token_ms != pytest.approx(
        TRUE.prefill_per_token_ms, rel=0.05
    )


def test_non_streamed_turns_learn_tpot_from_end_to_end_time():
    cm = CostModel()
    before = cm.coefficients("http://d", "decode")
    # predicted ttft 100 ms, then 9 steps at a predicted 20 ms; the steps took 40 ms each
    for _ in range(MIN_SAMPLES):
        cm.observe(
            Observation(
                "local",
                "http://d",
                None,
                300,
                1000,
                None,
                None,
                2,
                100.0,
                20.0,
                e2e_ms=100.0 + 9 * 40.0,
                completion_tokens=10,
            )
        )
    s = cm.error_summary()["local"]
    assert s["tpot_obs_over_pred"] == pytest.approx(2.0) and "ttft_abs_pct_err" not in s
    after = cm.coefficients("http://d", "decode")
    assert after.decode_base_ms > before.decode_base_ms
    assert (after.prefill_base_ms, after.prefill_per_token_ms) == (before.prefill_base_ms, before.prefill_per_token_ms)


def test_a_one_token_non_streamed_answer_is_its_ttft():
    cm = CostModel()
    pred = prefill_ms(cm.coefficients("http://d", "decode"), 300, 1000)
    for _ in range(MIN_SAMPLES):
        cm.observe(
            Observation(
                "local", "http://d", None, 300, 1000, None, None, 0, pred, 20.0, e2e_ms=2 * pred, completion_tokens=1
            )
        )
    assert cm.error_summary()["local"]["ttft_obs_over_pred"] == pytest.approx(2.0)
    assert cm.coefficients("http://d", "decode").prefill_per_token_ms > 1.0


def test_end_to_end_needs_a_time_and_a_prediction():
    cm = CostModel()
    before = cm.coefficients("http://d", "decode")
    cm.observe(
        Observation("local", "http://d", None, 300, 1000, None, None, 2, None, None, e2e_ms=560.0, completion_tokens=10)
    )
    cm.observe(Observation("local", "http://d", None, 300, 1000, None, None, 2, 100.0, 20.0))
    assert cm.error_summary() == {} and cm.coefficients("http://d", "decode") == before


def test_rls_bounded_estimate_stays_feasible_and_predicts_like_the_free_one():
    rls = RecursiveLeastSquares([20.0, 3.0, 1.0], [60.0, 9.0, 10.0], noise_std=1.0)
    rng = random.Random(2)
    for _ in range(50):  # one stream, tiny context, timings that jitter by a factor of two
        rls.update([1.0, 1.0, rng.uniform(0.05, 0.25)], rng.uniform(40.0, 90.0))
    assert min(rls.theta) < 0  # the free estimate went negative somewhere
    bounded = rls.bounded_theta([0.0, 0.0, 0.0])
    assert min(bounded) >= 0.0
    x = [1.0, 1.0, 0.15]
    assert sum(b * v for b, v in zip(bounded, x)) == pytest.approx(rls.predict(x), rel=0.1)


def test_rls_bounded_estimate_is_the_free_one_when_feasible():
    rls = RecursiveLeastSquares([1.0, 2.0], [1.0, 1.0])
    assert rls.bounded_theta([0.0, 0.0]) == [1.0, 2.0]


def _local_obs(cm: CostModel, coefs: CostCoefficients, new: int, cached: int, slowdown: float = 1.0) -> Observation:
    d = WorkerView(
        "http://d",
        "decode",
        can_local_prefill=True,
        decode_radix_cache=True,
        coefficients=cm.coefficients("http://d", "decode"),
    )
    pred = estimate_local(RequestView("c", 2, new + cached, 16), SessionView("c", "http://d", None, cached), d)
    true_ttft = prefill_ms(coefs, new, cached) * slowdown
    return Observation("local", "http://d", None, new, cached, true_ttft, None, 0, pred.ttft_ms, pred.tpot_ms)


def test_a_queued_burst_nudges_but_does_not_rewrite_the_fit():
    cm, rng = CostModel(PROFILE), random.Random(11)
    for _ in range(200):
        cm.observe(_local_obs(cm, TRUE, rng.randrange(16, 800), rng.randrange(0, 3000)))
    settled = cm.coefficients("http://d", "decode").prefill_per_token_ms
    for _ in range(12):  # requests that sat behind a burst: 15x the compute time
        cm.observe(_local_obs(cm, TRUE, rng.randrange(16, 64), 0, slowdown=15.0))
    assert cm.coefficients("http://d", "decode").prefill_per_token_ms == pytest.approx(settled, rel=0.25)


def test_a_profile_wrong_everywhere_still_converges():
    slow = CostCoefficients(**{k: v * 10 for k, v in TRUE.to_dict().items()})  # hardware 10x slower
    cm, rng = CostModel({"coefficients": TRUE.to_dict()}), random.Random(12)
    for _ in range(300):
        cm.observe(_local_obs(cm, slow, rng.randrange(16, 800), rng.randrange(0, 3000)))
    assert cm.coefficients("http://d", "decode").prefill_per_token_ms == pytest.approx(
        slow.prefill_per_token_ms, rel=0.1
    )


def test_queue_dominated_ttfts_do_not_teach_prefill_speed():
    cm = CostModel({"coefficients": TRUE.to_dict()})
    for k in range(12):  # a burst: request k queued behind k others, and the queue took 2x longer
        compute = prefill_ms(cm.coefficients("http://p", "prefill"), 40, 0)
        cm.observe(
            Observation("pd", "http://d", "http://p", 40, 0, compute + 2 * k * compute, None, 0, (k + 1) * compute)
        )
    assert cm.coefficients("http://p", "prefill").prefill_per_token_ms == pytest.approx(
        TRUE.prefill_per_token_ms, rel=0.01
    )
    assert cm.error_summary()["pd"]["count"] == 12  # still visible as prediction error


def test_tpot_fit_uses_the_batch_the_answer_decoded_in():
    """Streams that joined after routing shaped the steps: with the end count the per-stream
    cost is learned instead of being blamed on the base cost."""
    rng = random.Random(4)
    told, untold = CostModel(PROFILE), CostModel(PROFILE)
    for _ in range(300):
        start, end = rng.randrange(1, 4), rng.randrange(0, 40)
        running = (start + end) / 2
        per_stream = rng.randrange(200, 2000)  # the others' contexts; this stream holds its 500-token prompt
        tpot = decode_step_ms(TRUE, running + 1, int(running * per_stream) + 500)
        for cm, end_count in ((told, end), (untold, None)):
            cm.observe(
                Observation(
                    "pd",
                    "http://d",
                    "http://p",
                    0,
                    500,
                    50.0,
                    tpot,
                    start,
                    None,
                    None,
                    decode_context_tokens=start * per_stream,
                    decode_running_end=end_count,
                )
            )
    assert told.coefficients("http://d", "decode").decode_per_seq_ms == pytest.approx(TRUE.decode_per_seq_ms, rel=0.1)
    assert untold.coefficients("http://d", "decode").decode_per_seq_ms != pytest.approx(TRUE.decode_per_seq_ms, rel=0.1)


def _brute_force_projection(rls: RecursiveLeastSquares) -> list[float]:
    best, best_cost = list(rls.theta), math.inf
    for size in range(1, 4):
        for active in itertools.combinations(range(3), size):
            diff = [-rls.theta[i] for i in active]
            w = rls._solve_active(active, diff)
            if w is None:
                continue
            cand = [rls.theta[i] + sum(rls._p[i][a] * w[n] for n, a in enumerate(active)) for i in range(3)]
            for i in active:
                cand[i] = 0.0
            cost = sum(d * x for d, x in zip(diff, w))
            if min(cand) >= -1e-9 and cost < best_cost:
                best, best_cost = cand, cost
    return best


def test_rls_projection_is_the_exact_constrained_optimum():
    rng = random.Random(9)
    for _ in range(200):
        rls = RecursiveLeastSquares([rng.uniform(-5, 5) for _ in range(3)], [1.0, 1.0, 1.0])
        for _ in range(3):
            rls.update([rng.uniform(-1, 2) for _ in range(3)], rng.uniform(-5, 5))
        if min(rls.theta) < 0:
            assert rls.bounded_theta([0.0, 0.0, 0.0]) == pytest.approx(_brute_force_projection(rls), abs=1e-6)
