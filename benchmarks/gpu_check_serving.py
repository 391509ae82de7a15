"""gpu_check's serving section: PPD vs PD vs local on a real prefill + decode ppd-worker pair.

Two ``ppd-worker`` processes (prefill, decode) share the device (``--memory-fraction``) and
serve an open-loop multi-turn load: Poisson session arrivals; turn 1 = a long document plus
a question, then short follow-ups after a think time, streamed. The same seeded workload
runs under each policy. Routing is done here with the router's own policy objects
(``ppd_server.routing``: importable without the router's HTTP/telemetry dependencies, which a
bare CUDA image lacks) over live ``/v1/loads`` views of the two workers, with cost
coefficients measured by gpu_check's engine section (or the defaults when it did not run).
Turn 1 always goes P->D; ``pd`` keeps every turn P->D, ``local`` sends turn 2+ to the decode
worker with ``do_local_prefill``, ``ppd`` asks ``PPDPolicy.decide`` per turn.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(role: str, model: str, device: str, port: int, boot: int, quick: bool, log: Path):
    argv = [
        sys.executable,
        "-m",
        "ppd_engine",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        model,
        "--device",
        device,
        "--dtype",
        "bfloat16",
        "--max-total-tokens",
        "16384" if quick else "131072",
        "--threads",
        "1",
    ]
    if device != "cpu":
        argv += ["--memory-fraction", "0.45"]
    if role == "prefill":
        argv += ["--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(boot)]
    else:
        argv += [
            "--disaggregation-mode",
            "decode",
            "--disaggregation-decode-enable-radix-cache",
            "--disaggregation-decode-enable-conditional-agg",
        ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "server"), str(ROOT / "kernels"), env.get("PYTHONPATH", "")]
    )
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


async def _wait_healthy(session, url: str, proc, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {url} exited with {proc.returncode}")
        try:
            async with session.get(url + "/health") as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"worker {url} not healthy in time")


class MiniRouter:
    """The turn dispatch of ppd-server, reduced to one P/D pair (see the module docstring)."""

    def __init__(
        self,
        session,
        policy: str,
        p_url: str,
        d_url: str,
        boot: int,
        coefficients: dict[str, float] | None,
        link_gbps: float,
    ) -> None:
        self.http, self.policy_name = session, policy
        self.p_url, self.d_url, self.boot = p_url, d_url, boot
        self.link_gbps = link_gbps
        self.policy = None
        self.coefficients = coefficients
        if policy == "ppd":
            from ppd_server.routing.policies import make_policy

            self.policy = make_policy("ppd")

    async def _view(self, url: str, role: str):
        from ppd_server.fleet.loads import parse_v1_loads
        from ppd_server.routing.types import CostCoefficients, WorkerView

        async with self.http.get(url + "/v1/loads") as r:
            load = parse_v1_loads(await r.json())
        coefficients = CostCoefficients.from_dict(self.coefficients) if self.coefficients else CostCoefficients()
        return WorkerView(
            url=url,
            role=role,
            can_local_prefill=role == "decode",
            decode_radix_cache=role == "decode",
            bootstrap_port=self.boot if role == "prefill" else None,
            max_total_tokens=load.max_total_tokens,
            running_reqs=load.running_reqs,
            waiting_reqs=load.waiting_reqs,
            waiting_tokens=load.waiting_tokens,
            used_tokens=load.used_tokens,
            running_context_tokens=load.running_context_tokens,
            chunked_prefill_size=512,
            coefficients=coefficients,
        )

    async def route(self, conv: str, turn: int, prompt_len: int, max_new: int, cached_d: int, cached_p: int) -> str:
        if turn == 1 or self.policy_name == "pd":
            return "pd"
        if self.policy_name == "local":
            return "local"
        from ppd_server.routing.types import ClusterView, RequestView, SessionView

        workers = (await self._view(self.p_url, "prefill"), await self._view(self.d_url, "decode"))
        decision = self.policy.decide(
            RequestView(conversation_id=conv, turn=turn, prompt_tokens=prompt_len, max_new_tokens=max_new),
            ClusterView(workers=workers, link_gbps=self.link_gbps),
            SessionView(
                conversation_id=conv,
                decode_url=self.d_url,
                prefill_url=self.p_url,
                cached_tokens_decode=cached_d,
                cached_tokens_prefill=cached_p,
                turns=turn - 1,
            ),
        )
        return decision.route

    async def generate(self, ids: list[int], max_new: int, route: str) -> tuple[float, list[float], list[int]]:
        """Stream one turn; returns (TTFT s, token arrival times, output ids)."""
        body: dict[str, Any] = {
            "input_ids": ids,
            "stream": True,
            "sampling_params": {"max_new_tokens": max_new, "temperature": 0, "ignore_eos": True},
        }
        prefill = None
        if route == "pd":
            body.update(bootstrap_host="127.0.0.1", bootstrap_port=self.boot, bootstrap_room=random.randrange(2**63))
            prefill = asyncio.ensure_future(self._post(self.p_url, {**body, "stream": False}))
        else:
            body["do_local_prefill"] = True
        began = time.perf_counter()
        arrivals, output = [], []
        async with self.http.post(self.d_url + "/generate", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"decode answered {r.status}: {(await r.text())[:200]}")
            async for line in r.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(str(chunk["error"]))
                ids_now = chunk.get("output_ids", [])
                for _ in range(len(ids_now) - len(output)):
                    arrivals.append(time.perf_counter() - began)
                output = ids_now
        if prefill is not None:
            await prefill
        return (arrivals[0] if arrivals else float("nan")), arrivals, output

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        async with self.http.post(url + "/generate", json=body) as r:
            await r.read()


async def _session(
    router: MiniRouter, conv: str, rng: random.Random, spec: dict[str, int], records: list[dict[str, Any]]
) -> None:
    history = [rng.randrange(3, 250) for _ in range(spec["doc"])]
    cached_d = cached_p = 0
    for turn in range(1, spec["turns"] + 1):
        history = history + [rng.randrange(3, 250) for _ in range(spec["question"])]
        try:
            route = await router.route(conv, turn, len(history), spec["max_new"], cached_d, cached_p)
            ttft, arrivals, output = await router.generate(history, spec["max_new"], route)
            tpot = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) if len(arrivals) > 1 else float("nan")
            records.append({"turn": turn, "route": route, "ttft": ttft, "tpot": tpot, "ok": True})
            if route == "pd":
                cached_p = len(history)
            history = history + output
            cached_d = len(history)
        except Exception as exc:
            records.append({"turn": turn, "route": "?", "ok": False, "error": str(exc)[:200]})
            return
        await asyncio.sleep(spec["think_s"])


def _pct(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


async def _run_policy(
    policy: str, urls: tuple[str, str], boot: int, spec: dict[str, Any], coefficients, link_gbps: float
) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(42)  # the same workload for every policy
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        for url in urls:
            async with http.post(url + "/flush_cache") as r:
                await r.read()
        router = MiniRouter(http, policy, urls[0], urls[1], boot, coefficients, link_gbps)
        records: list[dict[str, Any]] = []
        tasks, clock = [], 0.0
        began = time.perf_counter()
        for i in range(spec["sessions"]):
            clock += rng.expovariate(spec["rate"])
            delay = clock - (time.perf_counter() - began)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_session(router, f"c{i}", random.Random(i), spec, records)))
        await asyncio.gather(*tasks)
    later = [r for r in records if r["ok"] and r["turn"] > 1]
    ok = [r for r in records if r["ok"]]
    return {
        "policy": policy,
        "turns": len(records),
        "failed": sum(not r["ok"] for r in records),
        "ttft2_p50_ms": _pct([r["ttft"] for r in later], 0.5) * 1e3,
        "ttft2_p90_ms": _pct([r["ttft"] for r in later], 0.9) * 1e3,
        "tpot_p50_ms": _pct([r["tpot"] for r in ok], 0.5) * 1e3,
        "share_local": (sum(r["route"] == "local" for r in later) / len(later)) if later else 0.0,
        "errors": sorted({r["error"] for r in records if not r["ok"]})[:3],
    }


def coefficients_from_engine(engine: dict[str, Any] | None) -> dict[str, float] | None:
    """A cost profile from gpu_check's engine section (same device, same model shape)."""
    if not engine or "prefill" not in engine or not engine.get("decode"):
        return None
    prefill = max(engine["prefill"], key=lambda p: p["tokens"] if p["tokens"] <= 2048 else 0)
    decode = {(d["batch"], d["context"]): d["step_ms"] for d in engine["decode"]}
    ctx = min(c for _, c in decode)
    batches = sorted(b for b, c in decode if c == ctx)
    b1, bn = batches[0], batches[-1]
    per_seq = max(0.0, (decode[(bn, ctx)] - decode[(b1, ctx)]) / max(1, bn - b1))
    return {
        "prefill_base_ms": 1.0,
        "prefill_per_token_ms": prefill["ms"] / prefill["tokens"],
        "prefill_attn_ms_per_ktok2": 0.0,
        "decode_base_ms": decode[(b1, ctx)],
        "decode_per_seq_ms": per_seq,
        "decode_per_kctx_ms": 0.0,
    }


def section_serving(
    model: str,
    device: str,
    quick: bool,
    engine: dict[str, Any] | None = None,
    link_gbps: float = 100.0,
    log_dir: str | None = None,
) -> dict[str, Any]:
    import aiohttp

    spec = (
        {"sessions": 3, "rate": 2.0, "turns": 3, "doc": 200, "question": 16, "max_new": 6, "think_s": 0.3}
        if quick
        else {"sessions": 16, "rate": 0.5, "turns": 5, "doc": 3000, "question": 40, "max_new": 64, "think_s": 1.0}
    )
    logs = Path(log_dir or os.environ.get("TMPDIR", "/tmp"))
    logs.mkdir(parents=True, exist_ok=True)
    p_port, d_port, boot = _free_port(), _free_port(), _free_port()
    procs = [
        _start_worker("prefill", model, device, p_port, boot, quick, logs / "gpu_check_prefill.log"),
        _start_worker("decode", model, device, d_port, boot, quick, logs / "gpu_check_decode.log"),
    ]
    urls = (f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{d_port}")
    coefficients = coefficients_from_engine(engine)

    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + (120 if quick else 300)
            for url, proc in zip(urls, procs):
                await _wait_healthy(http, url, proc, deadline)
        policies = ["pd", "local", "ppd"]
        try:
            import ppd_server.routing.policies  # noqa: F401
        except ImportError:
            policies = ["pd", "local"]
        return [await _run_policy(p, urls, boot, spec, coefficients, link_gbps) for p in policies]

    try:
        rows = asyncio.run(main())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {
        "workload": spec,
        "coefficients": coefficients,
        "policies": rows,
        "router": "in-process MiniRouter over ppd_server.routing policies",
    }


if __name__ == "__main__":
    print(
        json.dumps(
            section_serving(sys.argv[1] if len(sys.argv) > 1 else "synthetic:small", "cpu", True), indent=2, default=str
        )
    )
