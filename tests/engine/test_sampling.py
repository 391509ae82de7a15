"""Sampling-param validation (SGLang 400s), the sampler, and stop handling."""

from __future__ import annotations

import pytest
import torch

from ppd_engine.errors import InvalidRequest
from ppd_engine.sampling import SamplingParams, sample, token_seed
from ppd_engine.stopping import OutputTracker

from .bookkeeping import decode_bytes


def test_defaults_and_sglang_names():
    p = SamplingParams.from_dict(
        {
            "max_new_tokens": 5,
            "temperature": 0,
            "top_k": 3,
            "top_p": 0.5,
            "stop": "x",
            "stop_token_ids": [7],
            "sampling_seed": 9,
            "ignore_eos": True,
            "n": 1,
            "frequency_penalty": 0.0,
        }
    )
    assert (p.max_new_tokens, p.greedy, p.top_k, p.top_p, p.stop, p.seed, p.ignore_eos) == (
        5,
        True,
        3,
        0.5,
        ("x",),
        9,
        True,
    )
    assert p.stop_token_ids == frozenset({7})
    assert SamplingParams.from_dict(None).max_new_tokens == 128


@pytest.mark.parametrize(
    "params, param",
    [
        ({"bogus": 1}, "sampling_params"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 1.5}, "max_new_tokens"),
        ({"stop": [1]}, "stop"),
        ({"stop_token_ids": "a"}, "stop_token_ids"),
        ({"n": 2}, "n"),
        ({"json_schema": "{}"}, "json_schema"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
    ],
    ids=lambda v: str(v),
)
def test_invalid_params_are_rejected_with_the_field_named(params, param):
    with pytest.raises(InvalidRequest) as info:
        SamplingParams.from_dict(params)
    assert info.value.param == param and info.value.status == 400


def test_sampling_params_must_be_an_object():
    with pytest.raises(InvalidRequest):
        SamplingParams.from_dict([1, 2])  # type: ignore[arg-type]


def test_greedy_rows_take_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    greedy = SamplingParams(temperature=0.0)
    assert sample(logits, [greedy, greedy], [None, None]) == [1, 0]


def test_top_k_one_is_greedy_and_top_k_limits_choices():
    logits = torch.tensor([[0.0, 1.0, 0.9, -5.0]])
    assert sample(logits, [SamplingParams(top_k=1)], [None]) == [1]
    p = SamplingParams(temperature=1.0, top_k=2)
    seen = {sample(logits, [p], [seed])[0] for seed in range(50)}
    assert seen == {1, 2}


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    p = SamplingParams(temperature=1.0, top_p=0.5)
    assert {sample(logits, [p], [seed])[0] for seed in range(30)} == {0}


def test_seeded_sampling_depends_only_on_seed_and_token_index():
    logits = torch.randn(1, 100)
    p = SamplingParams(temperature=1.0, seed=1234)
    runs = [[sample(logits, [p], [token_seed(p, i)])[0] for i in range(10)] for _ in range(2)]
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
    assert token_seed(SamplingParams(temperature=0.0, seed=1), 0) is None
    assert token_seed(SamplingParams(temperature=1.0), 0) is None


def tracker(**kw) -> OutputTracker:
    return OutputTracker(SamplingParams(**kw), eos_ids=[0], decode=decode_bytes)


def test_eos_stops_unless_ignored():
    t = tracker(max_new_tokens=10)
    assert t.append(1) is None
    assert t.append(0) == {"type": "stop", "matched": 0}
    t = tracker(max_new_tokens=3, ignore_eos=True)
    assert t.append(0) is None and t.append(0) is None
    assert t.append(0) == {"type": "length", "length": 3}


def test_stop_token_ids():
    t = tracker(stop_token_ids=frozenset({5}))
    t.append(1)
    assert t.append(5) == {"type": "stop", "matched": 5}


def test_stop_string_spanning_tokens_is_trimmed():
    t = tracker(stop=("cd",))  # tokens 1..4 -> "a b c d"
    assert t.append(1) is None and t.append(2) is None and t.append(3) is None
    assert t.append(4) == {"type": "stop", "matched": "cd"}
    assert t.text == "ab"


def test_no_stop_trim_keeps_the_stop_string():
    t = tracker(stop=("b",), no_stop_trim=True)
    t.append(1)
    assert t.append(2) == {"type": "stop", "matched": "b"} and t.text == "ab"


def test_incomplete_utf8_is_held_back():
    pieces = {1: "caf", 2: "caf\ufffd", 3: "café"}
    t = OutputTracker(SamplingParams(), [0], lambda ids, skip: pieces[len(ids)])
    t.append(7)
    t.append(7)
    assert t.text == "caf"
    t.append(7)
    assert t.text == "café"


@pytest.mark.parametrize("top_p", [1e-300, 1e-45, 1e-9])
def test_a_tiny_top_p_keeps_the_most_likely_token(top_p):
    # regression: top_p > 0 that rounds to 0 in float32 masked every token and
    # torch.multinomial raised inside the engine thread, killing the worker
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    p = SamplingParams.from_dict({"temperature": 1.0, "top_p": top_p})
    assert sample(logits, [p], [7]) == [1]
