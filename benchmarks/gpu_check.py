"""One-GPU check of the embedded engine: correctness, speed beside its roofline, PPD vs PD.

    python benchmarks/gpu_check.py --out DIR                  # on a CUDA machine (<= 6 min)
    python benchmarks/gpu_check.py --device cpu --quick       # anywhere (~1 min; run by the tests)

Runs from a source checkout with PYTHONPATH=.:server:kernels (or the installed project), with
nothing but torch, numpy, aiohttp, tokenizers and jinja2: no network, no download (the model is
a built-in random-weight shape, ``synthetic:llama-3.1-8b`` by default on CUDA), and no
pydantic / opentelemetry / openai / gguf on its path.

Sections (each in the JSON under ``--out``; a failing section is recorded, the rest still run):
1. ``env``: torch, device, memory, CPU count, measured peak bf16 GEMM and device copy rate
   (the rooflines below use these measured peaks, not datasheet figures).
2. ``correctness``: the tiny synthetic model on the device vs CPU (fp32 logits of a mixed
   prefill + decode batch, greedy tokens) and the attention kernel cases (fast vs the readable
   reference) on the device.
3. ``engine``: the forward on the benchmark model: prefill 512/2k/8k, decode batch 1/8/32/64 x
   context 1k/4k, the append-vs-full stall ratio, each with its roofline and share.
4. ``kv_transfer`` (``gpu_check_kv``): GB/s between two processes on this host, TCP vs same-host handoff
   (shared memory on CPU, CUDA IPC on GPU).
5. ``serving``: PPD vs PD vs local with a prefill and a decode ppd-worker on the device under an
   open-loop multi-turn load (``gpu_check_serving``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
for sub in ("", "server", "kernels"):  # a source checkout without PYTHONPATH works too
    path = str(HERE.parent / sub) if sub else str(HERE.parent)
    if path not in sys.path:
        sys.path.insert(0, path)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gpu_check_kv import section_kv_transfer  # noqa: E402

from ppd_kernels import ForwardBatch, KVPool, load_model  # noqa: E402


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def best(self, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
        """Best wall seconds of ``fn`` (synchronised) over ``repeats`` runs."""
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - began)
        return min(times)


def section_env(device: torch.device, clock: Clock, quick: bool) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
        )
    n = 1024 if quick or device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = clock.best(lambda: a @ a, repeats=3 if quick else 10)
    env["peak_bf16_tflops"] = round(2 * n**3 / seconds / 1e12, 3)
    big = torch.empty(2 ** (26 if quick or device.type == "cpu" else 30), dtype=torch.uint8, device=device)
    dst = torch.empty_like(big)
    seconds = clock.best(lambda: dst.copy_(big), repeats=3 if quick else 10)
    env["copy_gbps"] = round(2 * big.numel() / seconds / 1e9, 1)  # read + write
    return env


def section_correctness(device: torch.device, quick: bool) -> dict[str, Any]:
    from ppd_kernels.attention import paged_attention
    from ppd_kernels.attention_reference import reference_attention

    out: dict[str, Any] = {}
    ref = load_model("synthetic:3", dtype=torch.float32, device="cpu")
    dev = load_model("synthetic:3", dtype=torch.float32, device=device)
    shapes = [(0, 40), (17, 1), (30, 1), (12, 9)]  # (cached, new): mixed batch
    slots, start = [], 0
    for cached, new in shapes:
        slots.append(list(range(start, start + cached + new)))
        start += cached + new + 5
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 250, (new,), generator=gen).tolist() for _, new in shapes]
    logits = {}
    for name, lm in (("cpu", ref), ("device", dev)):
        kv = KVPool(lm.config, start, dtype=torch.float32, device=lm.model.embed.device)
        gen_kv = torch.Generator().manual_seed(1)
        kv.data.copy_(torch.randn(kv.data.shape, generator=gen_kv))
        batch = ForwardBatch.build(ids, [c for c, _ in shapes], slots, device=lm.model.embed.device)
        logits[name] = lm.model.forward(batch, kv).cpu()
    diff = (logits["cpu"] - logits["device"]).abs().max().item()
    scale = logits["cpu"].abs().max().item()
    out["fp32_logits_max_rel_err"] = diff / scale
    out["fp32_argmax_equal"] = bool(torch.equal(logits["cpu"].argmax(-1), logits["device"].argmax(-1)))
    # the attention kernel cases on the device
    cases = passed = 0
    rng = torch.Generator().manual_seed(5)
    for dtype, atol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        for shape in (
            [(17, 1), (1, 1), (63, 1), (0, 1)],
            [(0, 9), (0, 2)],
            [(31, 8), (4, 20)],
            [(0, 5), (40, 1), (12, 3), (7, 1), (0, 1)],
        ):
            for num_heads in (2, 6):
                for shuffled in (False, True):
                    perm = torch.randperm(320, generator=rng) if shuffled else torch.arange(320)
                    slot_lists, at = [], 0
                    for cached, new in shape:
                        slot_lists.append(perm[at : at + cached + new].tolist())
                        at += cached + new
                    batch = ForwardBatch.build(
                        [[0] * n for _, n in shape], [c for c, _ in shape], slot_lists, device=device
                    )
                    plan = batch.plan()
                    q = torch.randn(batch.input_ids.numel(), num_heads, 16, generator=rng).to(device, dtype)
                    k = torch.randn(2, 320, 16, generator=rng).to(device, dtype)
                    v = torch.randn(2, 320, 16, generator=rng).to(device, dtype)
                    want = reference_attention(q, k, v, plan, 0.25)
                    got = paged_attention(q, k, v, plan, 0.25)
                    cases += 1
                    passed += int((got.float() - want.float()).abs().max().item() < atol)
    out["attention_cases"] = f"{passed}/{cases}"
    out["ok"] = passed == cases and out["fp32_logits_max_rel_err"] < 1e-3 and out["fp32_argmax_equal"]
    return out


def _model_bytes(lm) -> int:
    model = lm.model
    total = sum(
        t.numel() * t.element_size()
        for layer in model.layers
        for t in (layer.w_qkv, layer.w_o, layer.w_gate_up, layer.w_down)
    )
    return total + model.lm_head.numel() * model.lm_head.element_size()


def _paged_slots(batch: int, length: int, page: int = 16) -> list[list[int]]:
    pages = -(-length // page)
    return [[(i * pages + p) * page + j for p in range(pages) for j in range(page)][:length] for i in range(batch)]


def section_engine(lm, device: torch.device, clock: Clock, env: dict[str, Any], quick: bool) -> dict[str, Any]:
    cfg = lm.config
    dtype = lm.model.dtype
    peak = env["peak_bf16_tflops"] * 1e12
    bandwidth = env["copy_gbps"] * 1e9
    weight_bytes = _model_bytes(lm)
    params = weight_bytes / dtype.itemsize
    kv_token = cfg.kv_bytes_per_token(dtype)
    prefills = (128, 512) if quick else (512, 2048, 8192)
    decodes = [(b, c) for c in ((256,) if quick else (1024, 4096)) for b in ((1, 8) if quick else (1, 8, 32, 64))]
    vocab = cfg.vocab_size
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {
        "model": lm.name,
        "dtype": str(dtype).removeprefix("torch."),
        "weights_gb": round(weight_bytes / 1e9, 2),
        "prefill": [],
        "decode": [],
    }

    def ids(n: int) -> list[int]:
        return torch.randint(3, min(vocab, 250), (n,), generator=gen).tolist()

    for n in prefills:
        kv = KVPool(cfg, n, dtype=dtype, device=device)
        batch = ForwardBatch.build([ids(n)], [0], [list(range(n))], device=device)
        seconds = clock.best(
            lambda batch=batch, kv=kv: lm.model.forward(ForwardBatch(batch.input_ids, batch.positions, batch.seqs), kv),
            repeats=1 if quick else 2,
        )
        flops = 2 * params * n + 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim * n * n  # causal QK + PV
        roof = flops / peak
        out["prefill"].append(
            {"tokens": n, "ms": seconds * 1e3, "tok_s": n / seconds, "roofline_ms": roof * 1e3, "share": roof / seconds}
        )
        del kv
    for b, ctx in decodes:
        slots = _paged_slots(b, ctx + 1)
        kv = KVPool(cfg, max(max(s) for s in slots) + 1, dtype=dtype, device=device)
        kv.data.normal_()
        batch = ForwardBatch.build([ids(1) for _ in range(b)], [ctx] * b, slots, device=device)
        seconds = clock.best(
            lambda batch=batch, kv=kv: lm.model.forward(ForwardBatch(batch.input_ids, batch.positions, batch.seqs), kv),
            repeats=3 if quick else 5,
        )
        roof = (weight_bytes + b * (ctx + 1) * kv_token) / bandwidth
        out["decode"].append(
            {
                "batch": b,
                "context": ctx,
                "step_ms": seconds * 1e3,
                "tok_s": b / seconds,
                "roofline_ms": roof * 1e3,
                "share": roof / seconds,
            }
        )
        del kv
    out["stall"] = _stall(lm, device, clock, ids, quick)
    return out


def _stall(lm, device, clock, ids, quick: bool) -> dict[str, Any]:
    """8 decode streams at context C: the extra step time of a 256-token append over a cached
    C-token prefix vs a full C-token prefill (one chunk), as the CPU engine_bench defines it."""
    cfg, dtype = lm.config, lm.model.dtype
    ctx, append, streams = (256, 32, 4) if quick else (4096, 256, 8)
    stream_slots = _paged_slots(streams, ctx + 1)
    base = max(max(s) for s in stream_slots) + 1
    base = -(-base // 16) * 16
    prefix_slots = list(range(base, base + ctx + append))
    kv = KVPool(cfg, base + ctx + append, dtype=dtype, device=device)
    kv.data.normal_()

    def step(extra_new: int, extra_cached: int):
        new_ids = [ids(1) for _ in range(streams)]
        slots = list(stream_slots)
        cached = [ctx] * streams
        if extra_new:
            new_ids.append(ids(extra_new))
            slots.append(prefix_slots[: extra_cached + extra_new])
            cached.append(extra_cached)
        batch = ForwardBatch.build(new_ids, cached, slots, device=device)
        return lambda: lm.model.forward(ForwardBatch(batch.input_ids, batch.positions, batch.seqs), kv)

    # interleaved rounds, best of each: a shared machine's load hits the three alike
    steps = {"alone": step(0, 0), "full": step(ctx, 0), "append": step(append, ctx)}
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(3):
        for name, fn in steps.items():
            best[name] = min(best[name], clock.best(fn, 1 if quick else 2))
    alone, full, appended = best["alone"], best["full"], best["append"]
    return {
        "streams": streams,
        "context": ctx,
        "append": append,
        "alone_ms": alone * 1e3,
        "full_step_ms": full * 1e3,
        "append_step_ms": appended * 1e3,
        "stall_ratio": (appended - alone) / max(full - alone, 1e-9),
    }


def run_section(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    began = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    results.setdefault("seconds", {})[name] = round(time.perf_counter() - began, 1)
    print(f"[gpu_check] {name}: {results['seconds'][name]} s", file=sys.stderr, flush=True)


def summary(results: dict[str, Any]) -> str:
    lines = []
    env = results.get("env", {})
    lines.append(
        f"device {env.get('device')} {env.get('gpu', '')}  torch {env.get('torch')}  "
        f"peak bf16 {env.get('peak_bf16_tflops')} TFLOP/s  copy {env.get('copy_gbps')} GB/s"
    )
    c = results.get("correctness", {})
    lines.append(
        f"correctness: ok={c.get('ok')}  fp32 logits rel err {c.get('fp32_logits_max_rel_err', float('nan')):.2e}"
        f"  attention cases {c.get('attention_cases')}"
        if "error" not in c
        else f"correctness: {c['error']}"
    )
    e = results.get("engine", {})
    if "error" in e:
        lines.append(f"engine: {e['error']}")
    else:
        lines.append(f"engine: {e.get('model')} {e.get('dtype')}, weights {e.get('weights_gb')} GB")
        for p in e.get("prefill", []):
            lines.append(
                f"  prefill {p['tokens']:>5}: {p['ms']:9.1f} ms  {p['tok_s']:9.0f} tok/s   "
                f"roofline {p['roofline_ms']:8.1f} ms  share {p['share']:.0%}"
            )
        for d in e.get("decode", []):
            lines.append(
                f"  decode b={d['batch']:<3} ctx {d['context']:>5}: {d['step_ms']:8.1f} ms/step   "
                f"roofline {d['roofline_ms']:7.2f} ms  share {d['share']:.0%}"
            )
        s = e.get("stall", {})
        if s:
            lines.append(
                f"  stall ({s['streams']} streams, ctx {s['context']}): append {s['append']} "
                f"{s['append_step_ms']:.1f} ms vs full {s['full_step_ms']:.1f} ms (alone "
                f"{s['alone_ms']:.1f}): ratio {s['stall_ratio']:.3f}"
            )
    t = results.get("kv_transfer", {})
    lines.append(
        f"kv transfer {t.get('mb', 0):.0f} MB: tcp {t.get('tcp_gbps', 0):.2f} GB/s, same-host "
        f"({t.get('same_host_kind')}) {t.get('same_host_gbps', 0):.2f} GB/s"
        if "error" not in t
        else f"kv transfer: {t['error']}"
    )
    srv = results.get("serving", {})
    if "error" in srv:
        lines.append(f"serving: {srv['error']}")
    for row in srv.get("policies", []):
        lines.append(
            f"  {row['policy']:>6}: turn-2+ TTFT p50/p90 {row['ttft2_p50_ms']:.0f}/{row['ttft2_p90_ms']:.0f} ms"
            f"  TPOT p50 {row['tpot_p50_ms']:.1f} ms  local {row['share_local']:.2f}  failed {row['failed']}"
        )
    lines.append(f"sections: {results.get('seconds')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument(
        "--model",
        default=None,
        help="benchmark model (default: synthetic:llama-3.1-8b on CUDA, synthetic:small on CPU)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (~1 min on CPU)")
    parser.add_argument("--out", default=None, help="write results.json here")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip (e.g. serving)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        print(f"gpu_check: error: --device {args.device}: no CUDA device visible", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(1)
    skip = {s for s in args.skip.split(",") if s}
    model_name = args.model or ("synthetic:llama-3.1-8b" if device.type == "cuda" else "synthetic:small")
    dtype = torch.bfloat16
    clock = Clock(device)
    results: dict[str, Any] = {"args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    run_section(results, "env", lambda: section_env(device, clock, args.quick))
    if "correctness" not in skip:
        run_section(results, "correctness", lambda: section_correctness(device, args.quick))
    lm = load_model(model_name, dtype=dtype, device=device)
    if "engine" not in skip and "error" not in results["env"]:
        run_section(results, "engine", lambda lm=lm: section_engine(lm, device, clock, results["env"], args.quick))
    if "kv_transfer" not in skip:
        run_section(results, "kv_transfer", lambda lm=lm: section_kv_transfer(lm, device, args.quick))
    del lm
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "serving" not in skip:
        from gpu_check_serving import section_serving

        link = results.get("kv_transfer", {}).get("same_host_gbps")
        run_section(
            results,
            "serving",
            lambda: section_serving(
                model_name,
                str(device),
                args.quick,
                results.get("engine"),
                link_gbps=link * 8 if link else 100.0,
                log_dir=args.out,
            ),
        )
    text = summary(results)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "summary.txt").write_text(text + "\n")
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
