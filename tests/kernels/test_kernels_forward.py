"""Paged forward (prefill, extend on a cached prefix, decode, ragged mixed batches, any slot
layout) against a plain full-recompute forward, for both attention backends."""

from __future__ import annotations

import random

import pytest
import torch
from kernels_harness import (
    LAYOUTS,
    POOL_SLOTS,
    SHAPES,
    allocate_slots,
    dense_logits,
    run_mixed_batch,
    tolerance,
)

from ppd_kernels import ForwardBatch, KVPool, load_model
from ppd_kernels import attention as attention_module
from ppd_kernels.model import LlamaModel
from ppd_kernels.synthetic import synthetic_config, synthetic_weights

# "fast" picks its kernel per group (attention.choose_path); "fast:<path>" forces one, so
# both kernels run every case whatever the selection does on this device.
BACKENDS = ["fast", "fast:batched", "fast:per_sequence", "reference"]


def set_backend(model: LlamaModel, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, _, path = backend.partition(":")
    model.attention_backend = name
    if path:
        monkeypatch.setattr(attention_module, "choose_path", lambda group, device: path)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_mixed_batch_matches_full_recompute(synthetic_fp32, shape, layout, backend, monkeypatch):
    model = synthetic_fp32.model
    set_backend(model, backend, monkeypatch)
    try:
        for got, expected in run_mixed_batch(model, shape, layout, seed=len(shape)):
            assert (got - expected).abs().max().item() < tolerance(expected)
    finally:
        model.attention_backend = "fast"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_chunked_prefill_then_decode_steps(synthetic_fp32, layout):
    model = synthetic_fp32.model
    rng = random.Random(7)
    tokens = [rng.randrange(model.config.vocab_size) for _ in range(40)]
    slots = allocate_slots([len(tokens)], layout, rng)[0]
    expected = dense_logits(model, tokens)
    kv = KVPool(model.config, POOL_SLOTS, dtype=torch.float32)
    steps = [(0, 11), (11, 17), (17, 30)] + [(i, i + 1) for i in range(30, 40)]
    for start, end in steps:
        batch = ForwardBatch.build([tokens[start:end]], [start], [slots[:end]])
        got = model.forward(batch, kv)[0]
        assert (got - expected[end - 1]).abs().max().item() < tolerance(expected[end - 1]), (start, end)


@pytest.mark.parametrize(
    "variant",
    [
        dict(attention_bias=True, tie_word_embeddings=False),
        dict(rope_interleaved=False, num_kv_heads=4),
        dict(num_kv_heads=1, num_layers=3),
    ],
    ids=["bias-untied", "rotate-half-mha", "mqa-3-layers"],
)
def test_model_variants_match_full_recompute(variant):
    config = synthetic_config(**variant)
    model = LlamaModel(config, synthetic_weights(config, seed=5), dtype=torch.float32)
    for got, expected in run_mixed_batch(model, SHAPES["ragged-mixed"], "pages", seed=3):
        assert (got - expected).abs().max().item() < tolerance(expected)


def test_bf16_forward_close_to_fp32():
    fp32 = load_model("synthetic:2", dtype=torch.float32).model
    bf16 = load_model("synthetic:2", dtype=torch.bfloat16).model
    shape = SHAPES["ragged-mixed"]
    for (got, _), (reference, _) in zip(
        run_mixed_batch(bf16, shape, "pages", seed=1), run_mixed_batch(fp32, shape, "pages", seed=1)
    ):
        assert got.dtype == torch.float32
        assert torch.corrcoef(torch.stack([got, reference]))[0, 1] > 0.99
        assert got.argmax() == reference.argmax() or (reference.max() - reference[got.argmax()]) < 0.5


def test_forward_rejects_pool_of_other_dtype(synthetic_fp32):
    kv = KVPool(synthetic_fp32.config, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        synthetic_fp32.model.forward(ForwardBatch.build([[1, 2]], [0], [[0, 1]]), kv)


def test_batch_validation_names_the_problem():
    with pytest.raises(ValueError, match="num_cached \\+ num_new"):
        ForwardBatch.build([[1, 2]], [3], [[0, 1]])
    with pytest.raises(ValueError, match="num_new >= 1"):
        ForwardBatch.build([[]], [0], [[]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequences_sharing_a_cached_prefix(synthetic_fp32, backend, monkeypatch):
    """Radix-cache case: two sequences read the same prefix slots in one batch."""
    model = synthetic_fp32.model
    set_backend(model, backend, monkeypatch)
    try:
        prefix, a, b = list(range(40, 50)), [7, 8, 9], [11]
        kv = KVPool(model.config, 64, dtype=torch.float32)
        model.forward(ForwardBatch.build([prefix], [0], [list(range(10))]), kv)
        logits = model.forward(ForwardBatch.build([a, b], [10, 10], [list(range(13)), [*range(10), 30]]), kv)
    finally:
        model.attention_backend = "fast"
    for got, tokens in zip(logits, (prefix + a, prefix + b)):
        expected = dense_logits(model, tokens)[-1]
        assert (got - expected).abs().max().item() < tolerance(expected)
