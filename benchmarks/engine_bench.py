"""Engine benchmark: drives the ppd-worker scheduler + model runner in-process (no HTTP).

Prints a table of
* prefill tok/s at 512 and 2048 prompt tokens (one full-prompt step), and 2048 as the worker
  serves it (chunks of --chunked-prefill-size);
* decode tok/s at batch 1, 8, 32 with context 1024;
* the KV transfer rate prefill -> decode over loopback TCP (2048 tokens);
* the PPD asymmetry (the paper's Figure 2): TPOT of 8 running decode streams alone, while a
  1024-token full prefill is served on the same worker (chunked by --chunked-prefill-size),
  and while a 64-token append-prefill over a cached 1024-token prefix is served. "Stall" is
  the extra time the decode streams lose over the whole prefill (sum of step time minus the
  alone step time, over the steps that carry prefill tokens).

Throughputs print the median and (best) over repeats: on a shared machine the best is the
closer estimate of the uncontended speed; prefill also prints tok/s on this thread's CPU
time (what other processes' load inflates least). Decode also prints its step times in ms (wall and
this thread's CPU time, best and median over every step of every round) and the batch-32 /
batch-1 step-time ratio from them.

Before/after in one run: ``--baseline-attention FILE`` adds the ``paged_attention`` of FILE
(e.g. ``git show REV:kernels/ppd_kernels/attention.py > /tmp/attention_before.py``) as the
backend "baseline", interleaved with the current one figure by figure. The model keeps CPU
decode KV in persistent rows (``ppd_kernels.decode_rows``) for the backend "fast" only, so
"baseline" also measures the pool-reading decode of before the rows.

Usage: python benchmarks/engine_bench.py [--model smollm2] [--dtype bfloat16] [--threads 1]
       [--baseline-attention FILE --rounds 2]   # before/after in one run, interleaved
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from ppd_engine.model_source import resolve_model
from ppd_engine.request import Mode, Req, State
from ppd_engine.runner import ModelRunner
from ppd_engine.sampling import SamplingParams
from ppd_engine.scheduler import Scheduler
from ppd_engine.stopping import OutputTracker


class Bench:
    def __init__(self, lm, dtype, page_size: int, chunk: int, max_tokens: int) -> None:
        self.lm, self.dtype, self.page_size, self.chunk = lm, dtype, page_size, chunk
        self.max_tokens = max_tokens
        self.rng = random.Random(0)
        self.ids = 0
        self.reset(chunk)

    def reset(self, chunk: int) -> None:
        num_pages = self.max_tokens // self.page_size
        self.sched = Scheduler(num_pages, self.page_size, chunk, 64, enable_radix_cache=True)
        self.runner = ModelRunner(self.lm, num_pages * self.page_size, self.page_size, self.dtype)

    def prompt(self, n: int) -> list[int]:
        return [self.rng.randrange(100, self.lm.config.vocab_size - 100) for _ in range(n)]

    def req(self, prompt: list[int], max_new: int) -> Req:
        params = SamplingParams(max_new_tokens=max_new, temperature=0.0, ignore_eos=True)
        self.ids += 1
        tracker = OutputTracker(
            params,
            self.lm.tokenizer.eos_token_ids,
            lambda ids, skip: self.lm.tokenizer.decode(ids, skip_special_tokens=skip),
        )
        return Req(rid=f"b{self.ids}", prompt_ids=prompt, sampling=params, tracker=tracker)

    def step(self) -> tuple[float, int]:
        """One engine step; returns (seconds, prefill tokens in it); ``last_cpu`` keeps the
        step's CPU time of this thread (what a shared machine's load inflates least)."""
        step = self.sched.schedule()
        prefill_tokens = sum(r.num_new for r in step.rows if r.req.state is State.PREFILLING)
        began, began_cpu = time.perf_counter(), time.thread_time()
        tokens = self.runner.run(step)
        self.sched.on_forward_done(step, tokens)
        elapsed = time.perf_counter() - began
        self.last_cpu = time.thread_time() - began_cpu
        for req in [r.req for r in step.rows if r.req.finished]:
            self.runner.release(req)
        return elapsed, prefill_tokens

    def run_to_decoding(self, reqs: list[Req]) -> None:
        for req in reqs:
            self.sched.add(req)
        while any(r.state in (State.WAITING, State.PREFILLING) for r in reqs):
            self.step()

    def abort_all(self) -> None:
        for req in list(self.sched.active) + list(self.sched.waiting):
            self.sched.abort(req, {"type": "abort"})
            self.runner.release(req)


def bench_prefill(b: Bench, n: int, chunk: int, repeats: int = 3) -> tuple[float, float, float, float]:
    """tok/s (median, best) of a fresh n-token prompt computed in chunks of ``chunk`` tokens,
    on wall time, then the same on this thread's CPU time."""
    b.reset(chunk=chunk)
    times, cpu = [], []
    for _ in range(repeats):
        req = b.req(b.prompt(n), max_new=1)
        b.sched.add(req)
        elapsed, elapsed_cpu = 0.0, 0.0
        while not req.output_ids:
            elapsed += b.step()[0]
            elapsed_cpu += b.last_cpu
        times.append(elapsed)
        cpu.append(elapsed_cpu)
    return n / statistics.median(times), n / min(times), n / statistics.median(cpu), n / min(cpu)


def bench_decode(b: Bench, batch: int, ctx: int, steps: int = 12) -> tuple[list[float], list[float]]:
    """Step times (wall, CPU) in seconds of ``batch`` decode streams at context ``ctx``."""
    b.reset(chunk=2048)
    reqs = [b.req(b.prompt(ctx), max_new=steps + 8) for _ in range(batch)]
    b.run_to_decoding(reqs)
    b.step()  # warm-up
    wall, cpu = [], []
    for _ in range(steps):
        wall.append(b.step()[0])
        cpu.append(b.last_cpu)
    b.abort_all()
    return wall, cpu


def bench_asymmetry(b: Bench, chunk: int, streams: int = 8, ctx: int = 1024) -> dict[str, float]:
    b.reset(chunk=chunk)
    prefix = b.prompt(ctx)
    # Cache a 1024-token prefix for the append case (a finished earlier turn).
    warm = b.req(prefix, max_new=1)
    b.run_to_decoding([warm])
    while not warm.finished:
        b.step()
    reqs = [b.req(b.prompt(ctx), max_new=400) for _ in range(streams)]
    b.run_to_decoding(reqs)
    alone_steps = [(b.step()[0], b.last_cpu) for _ in range(10)]
    alone = statistics.median(w for w, _ in alone_steps)
    alone_cpu = statistics.median(c for _, c in alone_steps)

    def serve(prompt: list[int]) -> tuple[float, float, int, float]:
        extra = b.req(prompt, max_new=1)
        b.sched.add(extra)
        stall, stall_cpu, steps, times = 0.0, 0.0, 0, []
        while not extra.finished and extra.state is not State.DECODING:
            elapsed, prefill_tokens = b.step()
            if prefill_tokens:
                times.append(elapsed)
                stall += elapsed - alone
                stall_cpu += b.last_cpu - alone_cpu
                steps += 1
        return statistics.mean(times), stall, steps, stall_cpu

    full_tpot, full_stall, full_steps, full_cpu = serve(b.prompt(ctx))
    append_tpot, append_stall, append_steps, append_cpu = serve(prefix + b.prompt(64))
    b.abort_all()
    return {
        "alone": alone,
        "full_tpot": full_tpot,
        "full_stall": full_stall,
        "full_steps": full_steps,
        "append_tpot": append_tpot,
        "append_stall": append_stall,
        "append_steps": append_steps,
        "cpu_ratio": append_cpu / full_cpu,
    }


def bench_transfer(b: Bench, n: int = 2048, repeats: int = 3, same_host: bool = False) -> float:
    """GB/s of a prefill->decode KV transfer of ``n`` tokens (pool read, framing, payload,
    pool write), as the workers do it: over loopback TCP, or with ``same_host`` through the
    shared-memory handoff (both ends in this process here; gpu_check measures two processes)."""
    import asyncio

    from ppd_engine.kv_transfer import BootstrapServer, PrefillResult, fetch_kv

    b.reset(chunk=2048)
    src, dst = b.req(b.prompt(n), max_new=1), b.req(b.prompt(n), max_new=1)
    dst.mode = Mode.DECODE_RECV  # admitted without compute: pages only
    for req in (src, dst):
        b.sched.add(req)
    b.sched.schedule()  # admits both: pages allocated

    async def once(room: int) -> float:
        server = BootstrapServer("127.0.0.1", 0, timeout=30, same_host=same_host)
        await server.start()
        result = PrefillResult(1, n, 0, lambda start, end: b.runner.read_kv(src, start, end))

        async def store(received) -> None:
            b.runner.write_kv(dst, received.start, received.data)

        began = time.perf_counter()
        await asyncio.gather(
            server.send(room, result), fetch_kv("127.0.0.1", server.port, room, 0, 30, store, same_host=same_host)
        )
        elapsed = time.perf_counter() - began
        await server.close()
        return elapsed

    times = [asyncio.run(once(room)) for room in range(repeats)]
    b.abort_all()
    return n * b.runner.kv_bytes_per_token / statistics.median(times) / 1e9


def load_baseline(path: str) -> str:
    """Register ``paged_attention`` of the file at ``path`` (e.g. the kernel of an earlier
    commit: ``git show REV:kernels/ppd_kernels/attention.py > /tmp/attention_before.py``) as
    the attention backend "baseline"; returns its name. ``path`` "pool": today's kernel
    under the name "pool", which reads the paged pool (no decode rows)."""
    import importlib.util

    from ppd_kernels import model as model_module

    if path == "pool":
        model_module.ATTENTION_BACKENDS["pool"] = model_module.paged_attention
        return "pool"

    spec = importlib.util.spec_from_file_location("attention_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model_module.ATTENTION_BACKENDS["baseline"] = module.paged_attention
    return "baseline"


def measure(b: Bench, backends: list[str], rounds: int) -> dict[str, list[tuple[str, str, str]]]:
    """Every figure for every backend, interleaved (backend A, B, A, B, ... per figure) so a
    shared machine's load changes hit both alike; throughputs keep the best of the rounds."""

    def best_of(fn) -> dict[str, tuple[float, ...]]:
        """Per backend: (median, best) of each (median, best) pair that ``fn`` returns."""
        got: dict[str, list[tuple[float, ...]]] = {name: [] for name in backends}
        for _ in range(rounds):
            for name in backends:
                b.lm.model.attention_backend = name
                got[name].append(fn())
        out = {}
        for name, vals in got.items():
            columns = list(zip(*vals))  # (medians, bests) per pair
            out[name] = tuple(statistics.median(c) if i % 2 == 0 else max(c) for i, c in enumerate(columns))
        return out

    def rate(value: tuple[float, ...]) -> str:
        text = f"{value[0]:8.0f} tok/s  (best {value[1]:.0f})"
        return text + (f"  CPU-time {value[2]:.0f} (best {value[3]:.0f})" if len(value) == 4 else "")

    rows: dict[str, list[tuple[str, str, str]]] = {name: [] for name in backends}

    def add(label: str, results: dict, note: str = "") -> None:
        for name, value in results.items():
            rows[name].append((label, rate(value), note))

    chunk = b.chunk
    for n in (512, 2048):
        add(
            f"prefill {n} tok, one step",
            best_of(lambda n=n: bench_prefill(b, n, chunk=n)),
            "target >= 700 at 512" if n == 512 else "",
        )
    add(f"prefill 2048 tok, chunks of {chunk}", best_of(lambda: bench_prefill(b, 2048, chunk)), "as served")
    steps: dict[int, dict[str, dict[str, tuple[float, float]]]] = {}
    for batch in (1, 8, 32):
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in backends}
        for _ in range(rounds):
            for name in backends:
                b.lm.model.attention_backend = name
                wall, cpu = bench_decode(b, batch, 1024)
                times[name][0].extend(wall)
                times[name][1].extend(cpu)
        steps[batch] = {
            name: {kind: (min(t), statistics.median(t)) for kind, t in zip(("wall", "cpu"), pair)}
            for name, pair in times.items()
        }
        add(
            f"decode batch {batch}, ctx 1024",
            {name: (batch / s["wall"][1], batch / s["wall"][0]) for name, s in steps[batch].items()},
            "target >= 100" if batch == 8 else "",
        )
    for batch in (1, 8, 32):
        for name in backends:
            wall, cpu = steps[batch][name]["wall"], steps[batch][name]["cpu"]
            rows[name].append(
                (
                    f"decode step batch {batch}, ctx 1024",
                    f"{wall[0] * 1000:8.1f} ms best, {wall[1] * 1000:.1f} median",
                    f"CPU {cpu[0] * 1000:.1f} best, {cpu[1] * 1000:.1f} median",
                )
            )
    for name in backends:
        ratio = {
            f"{kind} {which}": steps[32][name][kind][i] / steps[1][name][kind][i]
            for kind in ("wall", "cpu")
            for i, which in enumerate(("best", "median"))
        }
        rows[name].append(
            (
                "decode step batch 32 / batch 1",
                f"{ratio['wall best']:8.2f} x best",
                f"median {ratio['wall median']:.2f} x; CPU {ratio['cpu best']:.2f} x best, "
                f"{ratio['cpu median']:.2f} x median; target <= 4",
            )
        )
    for name in backends:
        b.lm.model.attention_backend = name
        for label, same_host in (("loopback TCP", False), ("same-host shm", True)):
            gbps = bench_transfer(b, same_host=same_host)
            rows[name].append(
                (
                    f"KV transfer 2048 tok, {label}",
                    f"{gbps:8.2f} GB/s",
                    f"{2048 * b.runner.kv_bytes_per_token / 1e6:.0f} MB",
                )
            )
    for name in backends:
        b.lm.model.attention_backend = name
        a = bench_asymmetry(b, b.chunk)
        rows[name] += [
            ("TPOT, 8 streams ctx 1024, alone", f"{a['alone'] * 1000:8.1f} ms", ""),
            (
                "TPOT while a 1024 full prefill is served",
                f"{a['full_tpot'] * 1000:8.1f} ms",
                f"{a['full_steps']} step(s), added stall {a['full_stall'] * 1000:.0f} ms",
            ),
            (
                "TPOT while a 64 append on cached 1024",
                f"{a['append_tpot'] * 1000:8.1f} ms",
                f"{a['append_steps']} step(s), added stall {a['append_stall'] * 1000:.0f} ms",
            ),
            (
                "append stall / full-prefill stall",
                f"{a['append_stall'] / a['full_stall']:8.3f}",
                f"on this thread's CPU time {a['cpu_ratio']:.3f}; target <= 0.15",
            ),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--chunked-prefill-size", type=int, default=512)
    parser.add_argument(
        "--baseline-attention",
        metavar="FILE",
        help="also measure the paged_attention of FILE (an earlier kernel, which reads the paged "
        "pool), interleaved with the current one in this run; 'pool': today's kernel without the "
        "CPU decode rows",
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from ppd_kernels import load_model

    dtype = getattr(torch, args.dtype)
    lm = load_model(resolve_model(args.model), dtype=dtype)
    b = Bench(lm, dtype, args.page_size, args.chunked_prefill_size, max_tokens=48 * 1024)
    backends = ([load_baseline(args.baseline_attention)] if args.baseline_attention else []) + ["fast"]
    print(
        f"# engine_bench: {lm.name}, {args.dtype}, {args.threads} thread(s), page {args.page_size}, "
        f"chunked prefill {args.chunked_prefill_size}, attention {' vs '.join(backends)}, "
        f"{args.rounds} round(s)"
    )
    rows = measure(b, backends, args.rounds)
    width = max(len(r[0]) for r in rows["fast"])
    for name in backends:
        if len(backends) > 1:
            print(f"## attention: {name}")
        for label, value, note in rows[name]:
            print(f"{label:<{width}}  {value}  {note}")


if __name__ == "__main__":
    main()
