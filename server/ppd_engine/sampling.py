"""Sampling parameters (SGLang's ``sampling_params`` names, validated) and the sampler.

``SamplingParams.from_dict`` raises ``InvalidRequest`` on an unknown key (SGLang answers 400)
or a value it cannot honour. ``sample`` is the only function here that needs torch; it is
imported lazily so the bookkeeping stays torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_NEW_TOKENS = 128

# Keys SGLang accepts that we honour only at their neutral value (else a clear 400).
_NEUTRAL = {
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
    "min_p": 0.0,
    "n": 1,
    "json_schema": None,
    "regex": None,
    "ebnf": None,
    "structural_tag": None,
    "logit_bias": None,
    "stop_regex": None,
    "custom_params": None,
}
# Keys accepted and ignored (presentation only).
_IGNORED = {"spaces_between_special_tokens", "stream_interval", "min_new_tokens"}


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    no_stop_trim: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-6 or self.top_k == 1

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None, default_max_new_tokens: int | None = None) -> SamplingParams:
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest("sampling_params must be an object", param="sampling_params")
        params = dict(params or {})
        known = set(cls.__dataclass_fields__) - {"seed"} | {"sampling_seed"} | set(_NEUTRAL) | _IGNORED
        unknown = sorted(set(params) - known)
        if unknown:
            raise InvalidRequest(f"unknown sampling_params key(s): {', '.join(unknown)}", param="sampling_params")
        for key, neutral in _NEUTRAL.items():
            value = params.pop(key, None)
            if value is not None and value != neutral:
                raise InvalidRequest(f"sampling_params.{key}={value!r} is not supported by this engine", param=key)
        for key in _IGNORED:
            params.pop(key, None)

        max_new = params.get("max_new_tokens")
        if max_new is None:
            max_new = default_max_new_tokens if default_max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
        temperature = _number(params, "temperature", 1.0, low=0.0)
        top_p = _number(params, "top_p", 1.0, low=0.0, high=1.0)
        if top_p <= 0.0:
            raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
        top_k = params.get("top_k", -1)
        if top_k is None:
            top_k = -1
        if not _is_int(top_k) or (top_k < 1 and top_k != -1):
            raise InvalidRequest("top_k must be -1 (off) or a positive integer", param="top_k")
        if not _is_int(max_new) or max_new < 0:
            raise InvalidRequest("max_new_tokens must be a non-negative integer", param="max_new_tokens")
        seed = params.get("sampling_seed")
        if seed is not None and not _is_int(seed):
            raise InvalidRequest("sampling_seed must be an integer", param="sampling_seed")
        return cls(
            max_new_tokens=max_new,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=_stop_strings(params.get("stop")),
            stop_token_ids=_stop_ids(params.get("stop_token_ids")),
            ignore_eos=_flag(params, "ignore_eos", False),
            skip_special_tokens=_flag(params, "skip_special_tokens", True),
            no_stop_trim=_flag(params, "no_stop_trim", False),
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(params: dict, key: str, default: float, low: float, high: float = math.inf) -> float:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be a number in [{low}, {high}]", param=key)
    return float(value)


def _flag(params: dict, key: str, default: bool) -> bool:
    value = params.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key} must be a boolean", param=key)
    return value


def _stop_strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidRequest("stop must be a string or a list of strings", param="stop")
    return tuple(s for s in value if s)


def _stop_ids(value: Any) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(_is_int(i) for i in value):
        raise InvalidRequest("stop_token_ids must be a list of integers", param="stop_token_ids")
    return frozenset(value)


def token_seed(params: SamplingParams, index: int) -> int | None:
    """Seed for output token ``index`` of a seeded request. Deriving it per token (rather than
    keeping one RNG per request) makes seeded output independent of where each token is
    sampled: unified, or the first token on a prefill worker and the rest on a decode worker."""
    if params.seed is None or params.greedy:
        return None
    return (params.seed * 1_000_003 + index) % (1 << 63)


def sample(logits: torch.Tensor, params: list[SamplingParams], seeds: list[int | None]) -> list[int]:
    """One token per row of ``logits`` [B, V] (float32). Greedy rows take the argmax; a row
    with a seed draws from its own generator, others from torch's default one."""
    import torch

    # max(dim).indices: the same first-maximum index as argmax (NaN included), measured 5x
    # faster on CPU for [32, 49152] float32 (0.75 vs 3.8 ms, 1 thread)
    tokens = logits.max(dim=-1).indices.tolist()
    for row, (p, seed) in enumerate(zip(params, seeds)):
        if p.greedy:
            continue
        generator = None
        if seed is not None:
            generator = torch.Generator(device=logits.device)
            generator.manual_seed(seed)
        scores = logits[row] / p.temperature
        if p.top_k > 0 and p.top_k < scores.numel():
            kth = torch.topk(scores, p.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest set whose mass reaches top_p (the first token always stays).
            outside = sorted_probs.cumsum(0) - sorted_probs >= p.top_p
            outside[0] = False  # also when a tiny top_p rounds to 0 in float32 (else nothing is left)
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        tokens[row] = int(torch.multinomial(probs, 1, generator=generator).item())
    return tokens
