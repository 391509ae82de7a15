"""A trusted profile is trusted only for the model it was measured on: the built-in SmolLM2 CPU
profile in front of workers serving an 8B model on GPUs is a loose prior, which a handful of
true samples corrects (trusted, it held local prefill at CPU speed in the simulated 1P3D
big_paste cell: 1.4% local, SLO attainment 53.7% where local alone reached 100%)."""

from __future__ import annotations

import random

import pytest

from ppd_server.routing.cost_model import CostModel
from ppd_server.routing.latency import prefill_ms
from ppd_server.routing.observation import Observation
from ppd_server.routing.profile_prior import model_key, same_model
from ppd_server.routing.types import CostCoefficients

CPU = CostCoefficients(57.1, 1.398, 292.5, 18.98, 3.54, 1.60)
GPU = CostCoefficients(15.0, 0.01, 15.0, 6.5, 0.05, 0.01)  # an 8B model on one H100, roughly
PROFILE = {"model": "SmolLM2-135M-Instruct", "coefficients": CPU.to_dict(), "prior_rel_std": 0.5}
D = "http://d"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("SmolLM2-135M-Instruct", "/cache/SmolLM2-135M-Instruct.Q4_1.gguf", True),
        ("SmolLM2-135M-Instruct", "smollm2-135m-instruct", True),
        ("llama-3.1-8b@h100 (roofline)", "llama-3.1-8b", True),
        ("SmolLM2-135M-Instruct", "llama-3.1-8b", False),
        ("SmolLM2-135M-Instruct", "meta-llama/Llama-3.1-8B-Instruct", False),
        ("Qwen2.5-14B-Instruct-AWQ", "/models/qwen2.5-14b-instruct/", True),  # a quantization of the same model
        ("Qwen2.5-14B-Instruct", "Qwen2.5-7B-Instruct", False),
        (None, "llama-3.1-8b", True),
        ("SmolLM2-135M-Instruct", None, True),
    ],
)
def test_same_model_compares_names_as_profiles_and_workers_spell_them(a, b, same):
    assert same_model(a, b) is same


def test_model_key_strips_path_extension_quantization_and_hardware_note():
    assert model_key("/m/SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct"
    assert model_key("llama-3.1-8b-shaped@h200 (ppd-worker, cuda, bf16)") == "llama-3.1-8b-shaped"


def _local_turns(cm: CostModel, model: str | None, n: int) -> None:
    rng = random.Random(3)
    for _ in range(n):
        new, cached = rng.randrange(300, 700), rng.randrange(500, 2000)
        predicted = prefill_ms(cm.coefficients(D, "decode", model), new, cached)
        ttft = prefill_ms(GPU, new, cached) * rng.uniform(0.95, 1.05)
        cm.observe(Observation("local", D, None, new, cached, ttft, None, 0, predicted, None))


def _error(cm: CostModel, model: str | None) -> float:
    c = cm.coefficients(D, "decode", model)
    return max(abs(prefill_ms(c, n, 1000) / prefill_ms(GPU, n, 1000) - 1) for n in (300, 500, 700))


def test_a_trusted_profile_of_another_model_is_corrected_by_a_few_samples():
    foreign, own = CostModel(PROFILE), CostModel(PROFILE)
    assert foreign.trusts_profile_for("SmolLM2-135M-Instruct") and not foreign.trusts_profile_for("llama-3.1-8b")
    _local_turns(foreign, "llama-3.1-8b", 12)
    _local_turns(own, "SmolLM2-135M-Instruct", 12)
    # the same 12 GPU-speed samples: the loose prior lands near them, the trusted one holds on to CPU speed
    assert _error(foreign, "llama-3.1-8b") < 0.5
    assert _error(own, "SmolLM2-135M-Instruct") > 2 * _error(foreign, "llama-3.1-8b")


def test_a_model_learned_later_remakes_the_fit_only_when_it_changes_the_trust():
    cm = CostModel(PROFILE)
    _local_turns(cm, None, 5)  # before the first /server_info: the profile's claim stands
    learned = cm.coefficients(D, "decode")
    assert cm.coefficients(D, "decode", "SmolLM2-135M-Instruct.Q4_1.gguf") == learned  # same model: samples kept
    assert cm.coefficients(D, "decode", "llama-3.1-8b") == CostModel(PROFILE).coefficients("x", "decode")  # fresh
    _local_turns(cm, "llama-3.1-8b", 12)
    assert _error(cm, "llama-3.1-8b") < 0.5
