"""How far the cost model trusts a profile as the prior of each worker's online fit.

A profile measured on this engine, model and hardware says so with ``"prior_rel_std": r``: each
coefficient is trusted within ``r`` of its value. Anything else - generic defaults, a roofline,
another machine's measurement, or a trusted profile of *another model* than the one the worker
serves (the built-in SmolLM2 CPU profile in front of an 8B model on GPUs) - is a loose prior that
tens of samples correct. :func:`same_model` decides whether a worker serves the profile's model.
"""

from __future__ import annotations

import re

from ppd_server.routing.robust_fit import RobustFit

# A profile without "prior_rel_std" (generic defaults, another machine's, a roofline) is a loose
# prior: std 3x its value, at least these floors, which span CPU-to-GPU speeds, so a profile from
# other hardware is corrected within tens of samples.
_PREFILL_FLOORS = (20.0, 1.0, 100.0)
_DECODE_FLOORS = (20.0, 5.0, 10.0)
# A trusted profile ("prior_rel_std": r, e.g. one measured on this engine and hardware): std r x
# each coefficient, and at least r x a tenth of a typical request's time over that term's feature
# at these typical features (512 new tokens on an empty cache; 8 streams holding 8k tokens), so
# a coefficient the profile fitted at 0 can still move.
_TYPICAL_PREFILL_X = (1.0, 512.0, 512.0 * 512.0 / 1e6)
_TYPICAL_DECODE_X = (1.0, 8.0, 8.0)
_PREFILL_SCALE0 = 0.2  # prior guess of the relative timing noise (TTFT: scheduling, cache, co-tenants)
_DECODE_SCALE0 = 0.1  # a TPOT is a mean over many steps: steadier


def prior_std(
    start: tuple[float, float, float],
    rel: float | None,
    floors: tuple[float, float, float],
    typical_x: tuple[float, float, float],
) -> list[float]:
    """Prior std per coefficient: loose (no ``rel``: 3x, with floors) or ``rel`` of a trusted profile."""
    if rel is None:
        return [max(3 * v, f) for v, f in zip(start, floors)]
    typical_ms = sum(v * x for v, x in zip(start, typical_x))
    return [rel * max(v, typical_ms / (10 * x), 1e-6) for v, x in zip(start, typical_x)]


def prefill_fit(start: tuple[float, float, float], rel: float | None) -> RobustFit:
    return RobustFit(start, prior_std(start, rel, _PREFILL_FLOORS, _TYPICAL_PREFILL_X), _PREFILL_SCALE0)


def decode_fit(start: tuple[float, float, float], rel: float | None) -> RobustFit:
    return RobustFit(start, prior_std(start, rel, _DECODE_FLOORS, _TYPICAL_DECODE_X), _DECODE_SCALE0)


_QUANT_SUFFIX = re.compile(r"[.-](q\d\w*|f16|bf16|f32|fp16|fp8|int[48]|awq|gptq)$")


def model_key(name: str) -> str:
    """A model's name as profiles and workers may spell it, reduced for comparison: the last
    path component, lower case, without a weights-file extension, a quantization suffix or a
    hardware note (``"llama-3.1-8b@h100 (roofline)"`` -> ``"llama-3.1-8b"``;
    ``"/m/SmolLM2-135M-Instruct.Q4_1.gguf"`` -> ``"smollm2-135m-instruct"``)."""
    key = name.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    key = re.split(r"[@ (]", key, maxsplit=1)[0]
    for ext in (".gguf", ".safetensors", ".bin"):
        key = key.removesuffix(ext)
    return _QUANT_SUFFIX.sub("", key)


def same_model(profile_model: str | None, served_model: str | None) -> bool:
    """Whether a worker serving ``served_model`` runs the model a profile was measured on
    (unknown on either side: assume so, as the profile claims)."""
    if not profile_model or not served_model:
        return True
    return model_key(profile_model) == model_key(served_model)
