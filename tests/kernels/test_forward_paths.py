"""Paged forward (prefill, extend on a cached prefix, decode, ragged mixed batches, any slot
layout) against a plain full-recompute forward, for both attention backends."""

from __future__ import annotations

import random

import pytest
import torch
from kernel_oracle import dense_logits

from ppd_kernels import ForwardBatch, KVPool, load_model
from ppd_kernels.model import LlamaModel
from ppd_kernels.synthetic import synthetic_config, synthetic_weights

POOL_SLOTS = 512
BACKENDS = ["fast", "reference"]
LAYOUTS = ["contiguous", "pages", "shuffled"]

# (num_cached, num_new) per sequence of the final mixed batch
SHAPES = {
    "prefill-only": [(0, 7)],
    "single-decode": [(9, 1)],
    "extend-on-prefix": [(12, 5)],
    "one-token-prefill": [(0, 1)],
    "ragged-mixed": [(0, 6), (13, 1), (5, 4), (20, 1), (1, 1), (0, 1), (3, 2)],
    "long-context": [(70, 1), (40, 9), (33, 1)],
}


def allocate_slots(lengths: list[int], layout: str, rng: random.Random) -> list[list[int]]:
    """Slots for sequences of the given total lengths, laid out contiguously, as shuffled
    4-slot pages, or as individually shuffled slots."""
    if layout == "contiguous":
        slots, start = [], 3
        for n in lengths:
            slots.append(list(range(start, start + n)))
            start += n + 5
        return slots
    if layout == "pages":
        pages = rng.sample(range(POOL_SLOTS // 4), sum((n + 3) // 4 for n in lengths))
        slots = []
        for n in lengths:
            own, pages = pages[:(n + 3) // 4], pages[(n + 3) // 4:]
            slots.append([page * 4 + i for page in own for i in range(4)][:n])
        return slots
    free = rng.sample(range(POOL_SLOTS), sum(lengths))
    slots = []
    for n in lengths:
        slots.append(free[:n])
        free = free[n:]
    return slots


def tolerance(reference: torch.Tensor) -> float:
    return 1e-4 * max(1.0, reference.abs().max().item())


def run_mixed_batch(model: LlamaModel, shape: list[tuple[int, int]], layout: str, seed: int):
    """Fill every prefix (all prefixes in one batch), then run the mixed batch in shuffled
    order. Returns [(logits, dense oracle logits)] per sequence."""
    rng = random.Random(seed)
    vocab = model.config.vocab_size
    tokens = [[rng.randrange(vocab) for _ in range(c + n)] for c, n in shape]
    slots = allocate_slots([c + n for c, n in shape], layout, rng)
    kv = KVPool(model.config, POOL_SLOTS, dtype=model.dtype)
    with_prefix = [i for i, (c, _) in enumerate(shape) if c > 0]
    if with_prefix:
        model.forward(ForwardBatch.build([tokens[i][:shape[i][0]] for i in with_prefix],
                                         [0] * len(with_prefix),
                                         [slots[i][:shape[i][0]] for i in with_prefix]), kv)
    order = list(range(len(shape)))
    rng.shuffle(order)
    logits = model.forward(ForwardBatch.build([tokens[i][shape[i][0]:] for i in order],
                                              [shape[i][0] for i in order],
                                              [slots[i] for i in order]), kv)
    return [(logits[order.index(i)], dense_logits(model, tokens[i])[-1]) for i in range(len(shape))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_mixed_batch_matches_full_recompute(synthetic_fp32, shape, layout, backend):
    model = synthetic_fp32.model
    model.attention_backend = backend
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


@pytest.mark.parametrize("variant", [dict(attention_bias=True, tie_word_embeddings=False),
                                     dict(rope_interleaved=False, num_kv_heads=4),
                                     dict(num_kv_heads=1, num_layers=3)],
                         ids=["bias-untied", "rotate-half-mha", "mqa-3-layers"])
def test_model_variants_match_full_recompute(variant):
    config = synthetic_config(**variant)
    model = LlamaModel(config, synthetic_weights(config, seed=5), dtype=torch.float32)
    for got, expected in run_mixed_batch(model, SHAPES["ragged-mixed"], "pages", seed=3):
        assert (got - expected).abs().max().item() < tolerance(expected)


def test_bf16_forward_close_to_fp32():
    fp32 = load_model("synthetic:2", dtype=torch.float32).model
    bf16 = load_model("synthetic:2", dtype=torch.bfloat16).model
    shape = SHAPES["ragged-mixed"]
    for (got, _), (reference, _) in zip(run_mixed_batch(bf16, shape, "pages", seed=1),
                                        run_mixed_batch(fp32, shape, "pages", seed=1)):
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
def test_sequences_sharing_a_cached_prefix(synthetic_fp32, backend):
    """Radix-cache case: two sequences read the same prefix slots in one batch."""
    model = synthetic_fp32.model
    model.attention_backend = backend
    try:
        prefix, a, b = list(range(40, 50)), [7, 8, 9], [11]
        kv = KVPool(model.config, 64, dtype=torch.float32)
        model.forward(ForwardBatch.build([prefix], [0], [list(range(10))]), kv)
        logits = model.forward(ForwardBatch.build(
            [a, b], [10, 10], [list(range(13)), [*range(10), 30]]), kv)
    finally:
        model.attention_backend = "fast"
    for got, tokens in zip(logits, (prefix + a, prefix + b)):
        expected = dense_logits(model, tokens)[-1]
        assert (got - expected).abs().max().item() < tolerance(expected)
