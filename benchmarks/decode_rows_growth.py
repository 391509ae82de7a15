"""The stall of every decode stream when the CPU decode rows outgrow their capacity.

    python benchmarks/decode_rows_growth.py [--streams 16] [--context 1000] [--steps 140]

``ppd_kernels.decode_rows`` reallocates the rows (and copies the kept ones) whenever the longest
context passes a multiple of ``LENGTH_STEP``: that step stalls every running stream. This drives
the engine's scheduler and model in-process (SmolLM2, bf16, 1 thread, no HTTP), decodes
``--streams`` sequences of about ``--context`` tokens, and prints the median step, the growth
steps (above 1.5x the median) and the share of all step time they add; CPU time of this thread,
which a shared machine's load inflates least.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from engine_bench import Bench

from ppd_engine.model_source import resolve_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--context", type=int, default=1000)
    p.add_argument("--steps", type=int, default=140)
    a = p.parse_args()
    for name, value in (("--streams", a.streams), ("--context", a.context), ("--steps", a.steps)):
        if value < 1:
            p.error(f"{name} must be >= 1, got {value}")
    torch.set_num_threads(1)
    from ppd_kernels import load_model

    lm = load_model(resolve_model("smollm2"), dtype=torch.bfloat16)
    b = Bench(lm, torch.bfloat16, 16, 512, max_tokens=(a.context + a.steps + 64) * (a.streams + 1) + 4096)
    b.reset(chunk=4096)
    b.run_to_decoding([b.req(b.prompt(a.context + 7 * i), max_new=a.steps + 8) for i in range(a.streams)])
    times = []
    for _ in range(a.steps):
        b.step()
        times.append(b.last_cpu * 1000)
    median = statistics.median(times)
    spikes = [(i, t) for i, t in enumerate(times) if t > 1.5 * median]
    excess = sum(t - median for _, t in spikes)
    print(f"{a.streams} streams x ~{a.context} tokens, {a.steps} decode steps, CPU ms of the engine thread")
    print(f"median step {median:.0f} ms; growth steps " + ", ".join(f"#{i} {t:.0f} ms" for i, t in spikes))
    print(f"the growth steps add {excess:.0f} ms, {100 * excess / sum(times):.1f}% of all step time")


if __name__ == "__main__":
    main()
