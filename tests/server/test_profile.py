"""Profiles: least-squares fitting on synthetic samples, roofline anchors, files."""

from __future__ import annotations

import json
import random

import pytest

from ppd_server.profile import (
    DEFAULT_PROFILE,
    fit_coefficients,
    load_profile,
    nnls,
    roofline_profile,
    save_profile,
)
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.latency import decode_step_ms, prefill_ms
from ppd_server.routing.types import CostCoefficients

TRUE = CostCoefficients(
    prefill_base_ms=6.0,
    prefill_per_token_ms=0.55,
    prefill_attn_ms_per_ktok2=200.0,
    decode_base_ms=16.0,
    decode_per_seq_ms=0.5,
    decode_per_kctx_ms=5.5,
)


def synthetic_samples(noise: float, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    jitter = lambda: 1 + rng.uniform(-noise, noise)  # noqa: E731
    out = [{"kind": "prefill", "new": n, "cached": 0, "ms": prefill_ms(TRUE, n, 0) * jitter()} for n in (16, 64, 128, 256, 512) for _ in range(2)]
    out += [{"kind": "prefill", "new": m, "cached": c, "ms": prefill_ms(TRUE, m, c) * jitter()} for c in (256, 512) for m in (16, 64, 128)]
    out += [
        {"kind": "decode", "batch": b, "context": b * (ctx + 6), "ms": decode_step_ms(TRUE, b, b * (ctx + 6)) * jitter()}
        for ctx in (32, 256)
        for b in (1, 2, 4, 8)
    ]
    return out


def test_fit_recovers_exact_coefficients_from_clean_samples():
    coefs, fit = fit_coefficients(synthetic_samples(noise=0.0))
    for name, want in TRUE.to_dict().items():
        assert getattr(coefs, name) == pytest.approx(want, rel=1e-6), name
    assert fit["prefill_abs_pct_err"] < 1e-6 and fit["decode_abs_pct_err"] < 1e-6


def test_fit_is_close_under_noise():
    coefs, fit = fit_coefficients(synthetic_samples(noise=0.05, seed=3))
    assert coefs.prefill_per_token_ms == pytest.approx(TRUE.prefill_per_token_ms, rel=0.1)
    assert coefs.decode_per_kctx_ms == pytest.approx(TRUE.decode_per_kctx_ms, rel=0.15)
    assert fit["prefill_abs_pct_err"] < 5 and fit["decode_abs_pct_err"] < 5


def test_fit_keeps_the_fallback_for_a_component_without_samples():
    prefill_only = [s for s in synthetic_samples(0.0) if s["kind"] == "prefill"]
    coefs, fit = fit_coefficients(prefill_only, fallback=CostCoefficients(decode_base_ms=99.0))
    assert coefs.decode_base_ms == 99.0 and "decode_abs_pct_err" not in fit
    assert coefs.prefill_per_token_ms == pytest.approx(TRUE.prefill_per_token_ms)


def test_nnls_never_returns_negative_coefficients():
    # y = 10 - x: the unconstrained slope is negative
    rows = [[1.0, float(x)] for x in range(10)]
    theta = nnls(rows, [10.0 - x for x in range(10)])
    assert min(theta) >= 0
    assert theta[1] == 0.0 and theta[0] == pytest.approx(5.5)


def test_roofline_matches_the_llama_8b_h100_anchors():
    prof = roofline_profile(params_b=8.0, flops_tflops=989.5, mem_bw_gbs=3350, kv_bytes_per_token=131072)
    c = CostCoefficients.from_dict(prof["coefficients"])
    assert 0.016 <= c.prefill_per_token_ms <= 0.037  # 16 us at peak, ~27-32 us at 50-60% MFU
    assert 4.8 <= c.decode_base_ms <= 7.0  # 16 GB of weights at 3.35 TB/s (80% achieved)
    # a 10k-token context adds ~0.39 ms per decode step at full bandwidth
    assert c.decode_per_kctx_ms * 10 == pytest.approx(0.39 / 0.8, rel=0.05)
    assert prof["kv_bytes_per_token"] == 131072


@pytest.mark.parametrize("kw", [{"params_b": 0}, {"flops_tflops": -1}, {"kv_bytes_per_token": 0}])
def test_roofline_rejects_nonsense(kw):
    args = {"params_b": 8.0, "flops_tflops": 989.5, "mem_bw_gbs": 3350, "kv_bytes_per_token": 131072, **kw}
    with pytest.raises(ValueError, match=next(iter(kw))):
        roofline_profile(**args)


def test_profiles_round_trip_through_files_and_feed_the_cost_model(tmp_path):
    path = tmp_path / "p.json"
    coefs, fit = fit_coefficients(synthetic_samples(0.0))
    prof = {"model": "m", "coefficients": coefs.to_dict(), "samples": synthetic_samples(0.0), "fit": fit}
    save_profile(prof, path)
    loaded = load_profile(path)
    assert loaded == json.loads(json.dumps(prof))
    assert CostModel(loaded).coefficients("http://w", "unified") == coefs
    assert CostModel(DEFAULT_PROFILE).coefficients("http://w", "decode").decode_base_ms == DEFAULT_PROFILE["coefficients"]["decode_base_ms"]


@pytest.mark.parametrize(
    "content,needle",
    [(None, "cannot read"), ("{not json", "not valid JSON"), ('{"model": "m"}', "coefficients"), ('{"coefficients": {"x": 1}}', "'x'")],
)
def test_bad_profile_files_name_the_file_and_problem(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as e:
        load_profile(path)
    assert needle in str(e.value) and "bad.json" in str(e.value)
