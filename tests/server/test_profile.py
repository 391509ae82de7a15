"""Profiles: the joint step-time fit on synthetic timings, roofline anchors, presets, files, and
the `ppd-server profile` command line's validation (no worker needed)."""

from __future__ import annotations

import json
import random

import pytest

from ppd_server.cli import main as server_main
from ppd_server.profiling import (
    DEFAULT_PROFILE,
    H200_PPD_ENGINE_LLAMA8B,
    PRESET_NAMES,
    ProfileGrid,
    fit_coefficients,
    load_profile,
    preset,
    roofline_profile,
    save_profile,
)
from ppd_server.profiling.fit import predict_ms, sample_row
from ppd_server.profiling.presets import H200_SAMPLES
from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.latency import decode_rows_ms, decode_step_ms, prefill_ms
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
    out = [
        {"kind": "prefill", "new": n, "cached": 0, "ms": prefill_ms(TRUE, n, 0) * jitter()}
        for n in (16, 64, 128, 256, 512)
        for _ in range(2)
    ]
    out += [
        {"kind": "prefill", "new": m, "cached": c, "ms": prefill_ms(TRUE, m, c) * jitter()}
        for c in (256, 512)
        for m in (16, 64, 128)
    ]
    out += [
        {
            "kind": "decode",
            "batch": b,
            "context": b * (ctx + 6),
            "ms": decode_step_ms(TRUE, b, b * (ctx + 6)) * jitter(),
        }
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
    assert (
        CostModel(DEFAULT_PROFILE).coefficients("http://w", "decode").decode_base_ms
        == DEFAULT_PROFILE["coefficients"]["decode_base_ms"]
    )


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ('{"model": "m"}', "coefficients"),
        ('{"coefficients": {"x": 1}}', "'x'"),
    ],
)
def test_bad_profile_files_name_the_file_and_problem(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as e:
        load_profile(path)
    assert needle in str(e.value) and "bad.json" in str(e.value)


def mixed_samples(noise: float = 0.0, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for b in (2, 4, 8):
        for (n, c), ctx in zip(((32, 0), (128, 0), (64, 256), (128, 512)), (100, 400, 900, 250)):
            k = b * ctx
            ms = (prefill_ms(TRUE, n, c) + decode_rows_ms(TRUE, b, k)) * (1 + rng.uniform(-noise, noise))
            out.append({"kind": "mixed", "new": n, "cached": c, "batch": b, "context": k, "ms": ms})
    return out


def test_a_mixed_sample_is_the_prefill_chunk_plus_the_decode_rows_without_their_base():
    s = {"kind": "mixed", "new": 100, "cached": 300, "batch": 4, "context": 2000, "ms": 1.0}
    assert predict_ms(TRUE, s) == pytest.approx(prefill_ms(TRUE, 100, 300) + decode_rows_ms(TRUE, 4, 2000))
    stall = {"kind": "stall", "new": 100, "cached": 300, "ms": 1.0}
    assert predict_ms(TRUE, stall) == pytest.approx(prefill_ms(TRUE, 100, 300) - TRUE.decode_base_ms)


def test_a_chunked_prefill_sums_its_chunks_over_the_growing_prefix():
    s = {"kind": "prefill", "new": 1000, "cached": 24, "chunk": 512, "ms": 1.0}
    want = prefill_ms(TRUE, 512, 24) + prefill_ms(TRUE, 488, 24 + 512)
    assert predict_ms(TRUE, s) == pytest.approx(want)


def test_mixed_samples_alone_recover_the_prefill_and_decode_row_coefficients():
    # no plain decode step was timed: decode_base has no evidence and keeps the fallback
    coefs, fit = fit_coefficients(mixed_samples(), fallback=CostCoefficients(decode_base_ms=42.0))
    assert coefs.decode_base_ms == 42.0
    for name in (
        "prefill_base_ms",
        "prefill_per_token_ms",
        "prefill_attn_ms_per_ktok2",
        "decode_per_seq_ms",
        "decode_per_kctx_ms",
    ):
        assert getattr(coefs, name) == pytest.approx(getattr(TRUE, name), rel=1e-6), name
    assert fit["mixed_abs_pct_err"] < 1e-6


def test_the_joint_fit_under_noise_uses_every_kind():
    coefs, fit = fit_coefficients(synthetic_samples(0.05, seed=1) + mixed_samples(0.05, seed=2))
    assert set(fit) == {"prefill_abs_pct_err", "decode_abs_pct_err", "mixed_abs_pct_err"}
    assert coefs.decode_per_seq_ms == pytest.approx(TRUE.decode_per_seq_ms, rel=0.25)
    assert coefs.prefill_per_token_ms == pytest.approx(TRUE.prefill_per_token_ms, rel=0.1)
    assert max(fit.values()) < 5


def test_the_fit_weighs_relative_errors_so_short_samples_count():
    # one slow outlier-sized sample must not swamp five short ones: the fit stays within a few %
    # on the short ones (an absolute-error fit would sacrifice them)
    samples = [{"kind": "decode", "batch": b, "context": 0, "ms": 10.0 + b} for b in (1, 2, 3, 4, 5)]
    samples.append({"kind": "decode", "batch": 6, "context": 0, "ms": 400.0})
    coefs, _ = fit_coefficients(samples)
    short = [abs(predict_ms(coefs, s) - s["ms"]) / s["ms"] for s in samples[:5]]
    assert max(short) < 0.5


def test_unknown_sample_kinds_are_named():
    with pytest.raises(ValueError, match="'bogus'"):
        sample_row({"kind": "bogus", "ms": 1.0})


def test_the_h200_preset_is_the_fit_of_its_recorded_measurements():
    coefs, fit = fit_coefficients(H200_SAMPLES)
    for name, v in H200_PPD_ENGINE_LLAMA8B["coefficients"].items():
        assert getattr(coefs, name) == pytest.approx(v, rel=1e-3, abs=1e-6), name
    assert fit == pytest.approx(H200_PPD_ENGINE_LLAMA8B["fit"], abs=0.01)
    # the anchors it came from: decode batch 1 at 1k context ~8.8 ms, batch 64 at 4k ~265 ms
    assert decode_step_ms(coefs, 1, 1024) == pytest.approx(8.84, rel=0.15)
    assert decode_step_ms(coefs, 64, 64 * 4096) == pytest.approx(264.8, rel=0.05)
    assert "gpu-measurements.md" in H200_PPD_ENGINE_LLAMA8B["source"] and "H200" in H200_PPD_ENGINE_LLAMA8B["source"]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_load_by_name_and_are_fresh_copies(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of that name here
    a = load_profile(name)
    a["coefficients"]["decode_base_ms"] = -1.0
    b = load_profile(name)
    assert b["coefficients"]["decode_base_ms"] >= 0 and b == preset(name)
    assert CostModel(b).coefficients("http://w", "decode").decode_base_ms == b["coefficients"]["decode_base_ms"]


def test_a_file_named_like_a_preset_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_profile({"model": "mine", "coefficients": TRUE.to_dict()}, "builtin")
    assert load_profile("builtin")["model"] == "mine"


def test_an_unknown_name_lists_the_presets():
    with pytest.raises(ValueError, match="h200-ppd-engine-llama8b"):
        load_profile("no-such-preset")


def test_ppd_sim_runs_from_the_h200_preset_and_the_builtin_router_profile(capsys):
    from ppd_sim.cli import main as sim_main

    rc = sim_main(
        [
            "--profile",
            "h200-ppd-engine-llama8b",
            "--router-profile",
            "builtin",
            "--online-fit",
            "--policies",
            "pd,ppd",
            "--cluster",
            "1P1D",
            "--qps",
            "0.5",
            "--duration",
            "6",
            "--quiet",
            "--json",
            "-",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["config"]["coefficients"] == pytest.approx(H200_PPD_ENGINE_LLAMA8B["coefficients"])
    assert all(r["finished"] > 0 and not r["unfinished"] for r in out["results"])


@pytest.mark.parametrize("kw", [{"decode_batches": (0,)}, {"repeats": 0}, {"mixed_cached": (-1,)}, {"decode_steps": 2}])
def test_grid_validation_names_the_field(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        ProfileGrid(**kw).validate()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--decode-batches", "1,x"], "--decode-batches"),
        (["--decode-batches", "0"], "decode_batches"),
        (["--max-seconds", "-3"], "--max-seconds"),
        (["--worker", "localhost:1"], "--worker"),
        (["--repeats", "0"], "repeats"),
    ],
)
def test_profile_cli_rejects_bad_values_with_exit_2(argv, needle, capsys):
    assert server_main(["profile", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
