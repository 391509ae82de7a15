"""gpu_check's ``kv_transfer`` section: KV GB/s between two processes on this host, TCP vs the
same-host handoff (shared memory on CPU, CUDA IPC on GPU), through the engine's own
``ppd_engine.kv_transfer`` (a prefill-side bootstrap server in a child process, ``fetch_kv`` here).
Same constraints as ``gpu_check.py``: torch and the project only, no network."""

from __future__ import annotations

import time
from typing import Any

import torch


def _transfer_server(device: str, tokens: int, shape: list[int], port_queue, stop) -> None:
    """Child process: a prefill-side bootstrap server that serves rooms 0.. with one KV blob."""
    import asyncio

    from ppd_engine.kv_transfer import BootstrapServer, PrefillResult

    torch.set_num_threads(1)
    blob = torch.randn(shape, device=device).to(torch.bfloat16)

    async def main() -> None:
        server = BootstrapServer("127.0.0.1", 0, 60)
        await server.start()
        port_queue.put(server.port)
        room = 0
        while not stop.is_set():
            try:
                await server.send(room, PrefillResult(1, tokens, 0, lambda s, e: blob[:, :, :, s:e]))
            except Exception:
                break
            room += 1
        await server.close()

    asyncio.run(main())


def section_kv_transfer(lm, device: torch.device, quick: bool) -> dict[str, Any]:
    import asyncio
    import multiprocessing as mp

    from ppd_engine.kv_transfer import fetch_kv

    cfg = lm.config
    # 2048 tokens of the model (268 MB on the 8B shape); small models: at least 16 / 64 MB
    per_token = cfg.kv_bytes_per_token(torch.bfloat16)
    tokens = max(2048, -(-(16 if quick else 64) * 2**20 // per_token))
    shape = [cfg.num_layers, 2, cfg.num_kv_heads, tokens, cfg.head_dim]
    nbytes = torch.Size(shape).numel() * 2
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_transfer_server, args=(str(device), tokens, shape, ports, stop), daemon=True)
    child.start()
    out: dict[str, Any] = {"tokens": tokens, "mb": nbytes / 1e6}
    try:
        port = ports.get(timeout=120)
        target = torch.empty(shape, dtype=torch.bfloat16, device=device)

        async def store(received) -> None:
            target.copy_(received.data)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        async def run(same_host: bool, rounds: int, room0: int) -> float:
            best = float("inf")
            for i in range(rounds):
                began = time.perf_counter()
                await fetch_kv("127.0.0.1", port, room0 + i, 0, 60, store, same_host=same_host)
                best = min(best, time.perf_counter() - began)
            return best

        rounds = 3 if quick else 5
        room = 0
        for label, same_host in (("tcp", False), ("same_host", True), ("tcp", False), ("same_host", True)):
            seconds = asyncio.run(run(same_host, rounds, room))
            room += rounds
            out[f"{label}_gbps"] = max(out.get(f"{label}_gbps", 0.0), nbytes / seconds / 1e9)
        out["same_host_kind"] = "cuda_ipc" if device.type == "cuda" else "shm"
    finally:
        stop.set()
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
    return out
