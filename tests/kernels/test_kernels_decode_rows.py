"""Decode rows (persistent contiguous KV of the decoding sequences, CPU) against the dense
full-recompute oracle, over many forwards in which sequences join (alone or beside a
prefill), leave, grow past the rows' capacity, reuse an id on other slots, exceed the
budget, or meet a failing forward."""

from __future__ import annotations

import random

import pytest
import torch
from kernels_harness import LAYOUTS, allocate_slots, dense_logits, tolerance

from ppd_kernels import ForwardBatch, KVPool
from ppd_kernels import decode_rows as rows_module
from ppd_kernels import model as model_module

POOL = 600


@pytest.fixture
def small_steps(monkeypatch):
    """Rows and positions grow in small steps, so growth, compaction and shrink all happen."""
    monkeypatch.setattr(rows_module, "ROW_STEP", 2)
    monkeypatch.setattr(rows_module, "LENGTH_STEP", 4)


class Seq:
    def __init__(self, key, length: int, prompt: int, slots: list[int], rng: random.Random, vocab: int) -> None:
        self.key, self.prompt, self.slots = key, prompt, slots
        self.tokens = [rng.randrange(vocab) for _ in range(length)]
        self.done = 0  # tokens in the pool


def drive(model, kv: KVPool, schedule: list[list[tuple[Seq, int]]]) -> int:
    """Run each step (a list of (sequence, tokens to compute)) and check every sequence's
    logits against the oracle; returns the number of checks."""
    checks = 0
    for step in schedule:
        batch = ForwardBatch.build(
            [s.tokens[s.done : s.done + n] for s, n in step],
            [s.done for s, _ in step],
            [s.slots[: s.done + n] for s, n in step],
            seq_ids=[s.key for s, _ in step],
        )
        logits = model.forward(batch, kv)
        for row, (s, n) in enumerate(step):
            s.done += n
            expected = dense_logits(model, s.tokens[: s.done])[-1]
            assert (logits[row] - expected).abs().max().item() < tolerance(expected), (s.key, s.done)
            checks += 1
    return checks


def scenario(model, layout: str, seed: int) -> tuple[list[list[tuple[Seq, int]]], list[Seq]]:
    rng = random.Random(seed)
    vocab = model.config.vocab_size
    lengths = [30, 26, 34, 22, 28]
    slots = allocate_slots(lengths, layout, rng)
    a, b, c, d, e = (Seq(k, n, 6, sl, rng, vocab) for k, n, sl in zip("abcde", lengths, slots))
    reused = Seq("a", 20, 5, slots[4][:20], rng, vocab)  # the id "a" again, on other slots
    schedule = [[(a, 6), (b, 9)], [(a, 1), (b, 1)], [(b, 1), (a, 1)]]  # member order changes
    schedule += [[(a, 1), (b, 1), (c, 7)]]  # a prefill beside the decode rows
    schedule += [[(a, 1), (b, 1), (c, 1)] for _ in range(5)]  # grow past several LENGTH_STEPs
    schedule += [[(c, 1), (a, 1)], [(c, 1), (a, 1), (d, 3)], [(a, 1), (d, 1), (c, 1)]]  # b left, d joins
    schedule += [[(d, 1), (c, 1)], [(reused, 5)], [(reused, 1), (d, 1)], [(d, 1), (reused, 1), (c, 1)]]
    schedule += [[(e, 1)], [(e, 1), (d, 1)]]  # a one-token first forward joins the rows directly
    return schedule, [a, b, c, d, e, reused]


@pytest.mark.usefixtures("small_steps")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_rows_follow_joins_leaves_growth_and_id_reuse(synthetic_fp32, layout):
    model = synthetic_fp32.model
    kv = KVPool(model.config, POOL, dtype=model.dtype)
    schedule, _ = scenario(model, layout, seed=3)
    assert drive(model, kv, schedule) > 30
    assert kv.decode_rows.capacity != (0, 0)  # the rows really served the decode groups


@pytest.fixture(scope="module")
def synthetic_bf16():
    from ppd_kernels import load_model

    return load_model("synthetic:1", dtype=torch.bfloat16)


@pytest.mark.usefixtures("small_steps")
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"])
def test_rows_match_the_pool_paths_step_by_step(synthetic_fp32, synthetic_bf16, dtype, atol):
    """Same schedule on two pools: rows (seq ids) and no rows (no ids): the same logits up
    to rounding, every step."""
    model = (synthetic_fp32 if dtype is torch.float32 else synthetic_bf16).model
    schedule, _ = scenario(model, "pages", seed=5)
    with_rows, without = KVPool(model.config, POOL, dtype=dtype), KVPool(model.config, POOL, dtype=dtype)
    progress: dict[int, int] = {}
    for step in schedule:
        args = (
            [s.tokens[progress.get(id(s), 0) : progress.get(id(s), 0) + n] for s, n in step],
            [progress.get(id(s), 0) for s, _ in step],
            [s.slots[: progress.get(id(s), 0) + n] for s, n in step],
        )
        got = model.forward(ForwardBatch.build(*args, seq_ids=[s.key for s, _ in step]), with_rows)
        expected = model.forward(ForwardBatch.build(*args), without)
        assert (got - expected).abs().max().item() < atol * max(1.0, expected.abs().max().item())
        for s, n in step:
            progress[id(s)] = progress.get(id(s), 0) + n
    assert without.decode_rows.capacity == (0, 0) and with_rows.decode_rows.capacity != (0, 0)


def test_over_budget_falls_back_to_the_pool(synthetic_fp32):
    model = synthetic_fp32.model
    kv = KVPool(model.config, POOL, dtype=torch.float32, decode_rows_budget=8)
    schedule, _ = scenario(model, "contiguous", seed=4)
    drive(model, kv, schedule)
    assert kv.decode_rows.capacity == (0, 0)


def test_rows_keep_members_at_the_front_and_in_order(small_steps):
    from ppd_kernels.synthetic import synthetic_config

    config = synthetic_config()
    kv = KVPool(config, POOL, dtype=torch.float32)
    rows = kv.decode_rows

    base = {"x": 0, "y": 100, "z": 200, "w": 300, "v": 400}

    def prepare(keys_lengths):
        batch = ForwardBatch.build(
            [[0]] * len(keys_lengths),
            [n for _, n in keys_lengths],
            [list(range(base[k], base[k] + n + 1)) for k, n in keys_lengths],
            seq_ids=[k for k, _ in keys_lengths],
        )
        return rows.prepare(batch.plan(), kv.data)

    staged = prepare([("x", 5), ("y", 9), ("z", 2)])
    assert staged.rows.tolist() == [0, 1, 2] and staged.identity and staged.used == 3
    assert rows.capacity == (4, 12)
    assert staged.key_mask.sum(1).tolist() == [12 - n for n in (6, 10, 3)]
    staged = prepare([("z", 3), ("x", 6)])  # y left: its row is free, z and x keep theirs
    assert staged.rows.tolist() == [2, 0] and not staged.identity and staged.used == 3
    assert staged.key_mask[1].sum().item() == 12 - 1  # a free row sees one key
    staged = prepare([("z", 4), ("x", 7), ("w", 2), ("v", 2)])  # newcomers fill the free rows
    assert staged.rows.tolist() == [2, 0, 1, 3] and rows.capacity == (4, 12)
    staged = prepare([("y", 40), ("x", 5)])  # y back on other lengths: refilled; rows grow
    assert rows.capacity == (2, 44)
    staged = prepare([("x", 6)])  # under a quarter used: shrinks, x compacted to row 0
    assert staged.rows.tolist() == [0] and staged.identity and rows.capacity == (2, 8)


def test_a_failing_forward_clears_the_rows(synthetic_fp32, monkeypatch):
    model = synthetic_fp32.model
    kv = KVPool(model.config, POOL, dtype=torch.float32)
    schedule, _ = scenario(model, "contiguous", seed=6)
    drive(model, kv, schedule[:3])
    assert kv.decode_rows.capacity != (0, 0)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setitem(model_module.ATTENTION_BACKENDS, "fast", broken)
    with pytest.raises(RuntimeError, match="boom"):
        drive(model, kv, schedule[3:4])
    assert kv.decode_rows.capacity == (0, 0)


def test_kept_rows_are_copied_as_runs_packed_to_the_front():
    from ppd_kernels.decode_rows import _runs

    assert _runs([0, 1, 2, 5, 6, 9]) == [(0, 0, 3), (3, 5, 7), (5, 9, 10)]
    assert _runs([3]) == [(0, 3, 4)] and _runs([]) == []
