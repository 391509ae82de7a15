"""Fast attention kernel against the readable reference, directly on random pools."""

from __future__ import annotations

import random

import pytest
import torch

from ppd_kernels import batch as batch_module
from ppd_kernels.attention import PATHS, paged_attention
from ppd_kernels.attention_reference import reference_attention
from ppd_kernels.batch import ForwardBatch, contiguous_runs

NUM_SLOTS, KV_HEADS, HEAD_DIM = 300, 2, 16

CASES = {
    "decode-batch": [(17, 1), (1, 1), (63, 1), (0, 1)],
    "extend-no-prefix": [(0, 9), (0, 2)],
    "extend-with-prefix": [(31, 8), (4, 20)],
    "mixed": [(0, 5), (40, 1), (12, 3), (7, 1), (0, 1)],
}


def random_batch(shape, rng: random.Random, split_runs: bool) -> ForwardBatch:
    free = list(range(NUM_SLOTS))
    if split_runs:  # slots come in short shuffled runs of 1..6
        runs, i = [], 0
        while i < NUM_SLOTS:
            n = rng.randint(1, 6)
            runs.append(free[i : i + n])
            i += n
        rng.shuffle(runs)
        free = [s for run in runs for s in run]
    slots, start = [], 0
    for cached, new in shape:
        slots.append(free[start : start + cached + new])
        start += cached + new
    return ForwardBatch.build([[0] * new for _, new in shape], [c for c, _ in shape], slots)


@pytest.fixture(params=["one-block", "small-blocks"])
def query_blocking(request, monkeypatch):
    """ "small-blocks" forces the row-blocked path (with its diagonal masks) on short contexts."""
    if request.param == "small-blocks":
        monkeypatch.setattr(batch_module, "SCORE_TILE", 64)
        monkeypatch.setattr(batch_module, "MIN_QUERY_BLOCK", 3)


@pytest.mark.usefixtures("query_blocking")
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("split_runs", [False, True], ids=["one-run", "many-runs"])
@pytest.mark.parametrize("num_heads", [2, 6], ids=["mha", "gqa3"])
@pytest.mark.parametrize("shape", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("path", [None, *PATHS], ids=["selected", *PATHS])
def test_fast_attention_matches_reference(shape, num_heads, split_runs, dtype, atol, path):
    rng = random.Random(hash((str(shape), num_heads, split_runs)) % 1000)
    torch.manual_seed(rng.randrange(1000))
    batch = random_batch(shape, rng, split_runs)
    plan = batch.plan()
    q = torch.randn(batch.input_ids.numel(), num_heads, HEAD_DIM).to(dtype)
    k_cache = torch.randn(KV_HEADS, NUM_SLOTS, HEAD_DIM).to(dtype)
    v_cache = torch.randn(KV_HEADS, NUM_SLOTS, HEAD_DIM).to(dtype)
    scale = HEAD_DIM**-0.5
    expected = reference_attention(q, k_cache, v_cache, plan, scale)
    got = paged_attention(q, k_cache, v_cache, plan, scale, path=path)
    assert got.shape == expected.shape and got.dtype == dtype
    assert (got.float() - expected.float()).abs().max().item() < atol


def test_small_blocks_really_split_queries(monkeypatch):
    monkeypatch.setattr(batch_module, "SCORE_TILE", 64)
    monkeypatch.setattr(batch_module, "MIN_QUERY_BLOCK", 3)
    assert batch_module.query_blocks(8, 20) == [(0, 3), (3, 6), (6, 8)]


@pytest.mark.parametrize(
    "slots,runs",
    [
        ([5], [(5, 1)]),
        ([0, 1, 2, 3], [(0, 4)]),
        ([8, 9, 2, 3, 4, 11], [(8, 2), (2, 3), (11, 1)]),
        ([3, 2, 1], [(3, 1), (2, 1), (1, 1)]),
    ],
)
def test_contiguous_runs(slots, runs):
    assert contiguous_runs(torch.tensor(slots)) == runs


def paged_batch(shape, rng: random.Random, page: int, num_slots: int) -> ForwardBatch:
    """Each sequence on whole shuffled pages of ``page`` slots (its last page partly used),
    as the engine's page allocator lays them out."""
    pages = list(range(num_slots // page))
    rng.shuffle(pages)
    slots = []
    for cached, new in shape:
        count = -(-(cached + new) // page)
        own, pages = pages[:count], pages[count:]
        slots.append([p * page + j for p in own for j in range(page)][: cached + new])
    return ForwardBatch.build([[0] * new for _, new in shape], [c for c, _ in shape], slots)


@pytest.mark.parametrize("num_slots", [304, 300], ids=["whole-blocks", "pool-not-whole-blocks"])
@pytest.mark.parametrize("shape", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("path", [None, *PATHS], ids=["selected", *PATHS])
def test_block_gather_matches_reference(shape, num_slots, path):
    """Page-aligned sequences take the block gather (or, when the pool is not made of whole
    blocks, the per-slot fallback of it); padding keys past a sequence's end stay hidden."""
    rng = random.Random(len(shape) * 7 + num_slots)
    torch.manual_seed(rng.randrange(1000))
    batch = paged_batch(shape, rng, page=8, num_slots=num_slots)
    plan = batch.plan()
    groups = [g for g in (plan.decode, plan.extend) if g is not None]
    assert any(g.block == 8 for g in groups if g.view is None) or all(g.view for g in groups)
    q = torch.randn(batch.input_ids.numel(), 6, HEAD_DIM)
    k_cache, v_cache = torch.randn(KV_HEADS, num_slots, HEAD_DIM), torch.randn(KV_HEADS, num_slots, HEAD_DIM)
    expected = reference_attention(q, k_cache, v_cache, plan, HEAD_DIM**-0.5)
    got = paged_attention(q, k_cache, v_cache, plan, HEAD_DIM**-0.5, path=path)
    assert (got - expected).abs().max().item() < 1e-5


def test_plan_groups_decode_and_extend_once():
    """However many sequences, a batch is at most two padded groups (the per-layer work has
    no loop over sequences)."""
    shape = [(3, 1)] * 10 + [(0, 5), (7, 4)]
    batch = random_batch(shape, random.Random(1), split_runs=False)
    plan = batch.plan()
    assert plan.decode.num_seqs == 10 and plan.extend.num_seqs == 2
    assert plan.extend.num_new_max == 5 and plan.extend.out_index.numel() == 9


def test_choose_path_per_device():
    """CPU: zero-copy per-sequence loop for groups over consecutive slots with long contexts
    or a single sequence (measured faster), the batched kernel for groups that must gather or
    have short contexts; CUDA: always batched."""
    import ppd_kernels.attention as attention_module
    from ppd_kernels.attention import choose_path

    def decode_group(shape, split_runs=False):
        return random_batch(shape, random.Random(2), split_runs).plan().decode

    long_ctx = 128  # the threshold is patched down to this so the group fits the test pool
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    contiguous = decode_group([(30, 1)] * 4)
    split = decode_group([(30, 1)] * 4, split_runs=True)
    single = decode_group([(30, 1)])
    assert contiguous.one_run and not split.one_run
    assert choose_path(contiguous, cpu) == "batched"  # short contexts: gather is cheaper
    assert choose_path(single, cpu) == "per_sequence"
    assert choose_path(split, cpu) == "batched"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention_module, "PER_SEQUENCE_MIN_CONTEXT", long_ctx)
        long_group = decode_group([(long_ctx, 1)] * 2)
        assert choose_path(long_group, cpu) == "per_sequence"
        assert choose_path(long_group, cuda) == "batched" and choose_path(split, cuda) == "batched"
