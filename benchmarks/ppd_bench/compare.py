"""The measured comparison: PPD against classic P/D routers, in front of the SAME workers.

One embedded 1P1D ``ppd-worker`` pair (SmolLM2-135M, one core each) is started once; then, one
system after another, a front end is started in front of it, the same sessions (same arrivals,
same prompt text, same output lengths) are run through it with :func:`ppd_bench.driver.arun`
after one tiny warm-up request (no system pays a cold start inside the run), and it is stopped.
Between systems both workers' caches are flushed (``POST /flush_cache``), so no system inherits
another's prefixes.

Systems: ``ppd``, ``pd``, ``local``, ``threshold:N``, ``ratio:X`` (``ppd-server --policy``),
``sglang-router`` (the real sglang-router from PyPI, ``--pd-disaggregation``) and ``smg``
(``smg launch --pd-disaggregation``, if it is installed). A system that cannot start is reported
with the reason instead of figures; the others still run.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from ppd_bench.driver import BenchError, RunConfig, arun
from ppd_bench.stats import TurnRecord, summarize
from ppd_sim.workload import Session

ROUTERS = ("sglang-router", "smg")

#: sglang-router / smg would fetch a tokenizer for a non-local model name: fail fast, offline.
NO_NETWORK_ENV = {
    "HF_ENDPOINT": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@dataclass(frozen=True, slots=True)
class CompareConfig:
    systems: tuple[str, ...] = ("ppd", "sglang-router", "pd", "local", "threshold:256", "smg")
    baseline: str = "sglang-router"
    worker_threads: int = 1
    log_dir: str | None = None
    startup_timeout_s: float = 180.0
    rounds: int = 1  # >1: the system list again, reversed every other round (ABBA), results pooled

    def validate(self) -> None:
        from ppd_server.routing.policies import make_policy

        if not self.systems:
            raise BenchError("--systems names no system")
        for system in self.systems:
            s, _ = split_system(system)
            if s in ROUTERS:
                continue
            try:
                make_policy(s)
            except ValueError:
                raise BenchError(
                    f"unknown system {s!r} in --systems; use a ppd-server policy (ppd, pd, local, "
                    f"threshold:N, ratio:X) or one of {', '.join(ROUTERS)}"
                ) from None
        if len(set(self.systems)) != len(self.systems):
            raise BenchError(f"--systems {','.join(self.systems)!r} names a system twice")
        if not 1 <= self.rounds <= 20:
            raise BenchError(f"--rounds must be in 1..20, got {self.rounds}")
        if not 1 <= self.worker_threads <= 64:
            raise BenchError(f"--worker-threads must be in 1..64, got {self.worker_threads}")


def split_system(system: str) -> tuple[str, float | None]:
    """``ppd@tpot=4`` -> ("ppd", 4.0): a ppd-server policy whose clients send TPOT weight 4 (the
    weights sweep); a plain name -> (name, None). BenchError names a bad suffix."""
    name, sep, suffix = system.partition("@")
    if not sep:
        return system, None
    key, _, value = suffix.partition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = float("nan")
    if key != "tpot" or not (math.isfinite(weight) and 0 <= weight <= 1000) or name in ROUTERS:
        raise BenchError(
            f"bad system {system!r} in --systems; a ppd-server policy may carry @tpot=W (the clients' TPOT "
            "weight, 0..1000), e.g. ppd@tpot=4"
        )
    return name, weight


class _Proc:
    """One child process with its log; stopped by PID (terminate, then kill)."""

    def __init__(self, name: str, argv: list[str], url: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.url, self.log_path = name, url, log
        with open(log, "wb") as f:
            self.popen = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
            )

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with code {self.popen.returncode}: {self.tail(600)}")
                try:
                    if client.get(self.url + path, timeout=2.0).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:g}s: {self.tail(600)}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def _front_argv(
    system: str, port: int, prefill: str, bootstrap: int, decode: str, prom_port: int
) -> tuple[list[str], dict[str, str], str]:
    """argv, extra env and readiness path of one front end."""
    common = ["--host", "127.0.0.1", "--port", str(port)]
    # sglang-router and smg take the same PD-mode flags (smg grew out of sglang-router)
    pd_mode = [
        "--pd-disaggregation",
        "--prefill",
        prefill,
        str(bootstrap),
        "--decode",
        decode,
        *common,
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(prom_port),
        "--health-check-interval-secs",
        "5",
    ]
    if system == "sglang-router":
        return [sys.executable, "-m", "sglang_router.launch_router", *pd_mode], NO_NETWORK_ENV, "/health"
    if system == "smg":
        exe = shutil.which("smg") or os.path.join(os.path.dirname(sys.executable), "smg")
        return [exe, "launch", *pd_mode], NO_NETWORK_ENV, "/health"
    argv = [
        sys.executable,
        "-m",
        "ppd_server",
        "--prefill",
        prefill,
        str(bootstrap),
        "--decode",
        decode,
        "--policy",
        system,
        *common,
        "--log-level",
        "warning",
    ]
    return argv, {}, "/v1/models"


def smg_available() -> str | None:
    """None when ``smg`` can be started here, else why not."""
    exe = shutil.which("smg") or os.path.join(os.path.dirname(sys.executable), "smg")
    if not os.path.exists(exe):
        return "smg is not installed (pip install smg)"
    return None


async def flush_caches(urls: Sequence[str], attempts: int = 20) -> None:
    """``POST /flush_cache`` on every worker, retried while a worker is still busy."""
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        for url in urls:
            for _ in range(attempts):
                try:
                    r = await client.post(url + "/flush_cache")
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"cannot flush the cache of {url}")


def compare(
    config: CompareConfig,
    run: RunConfig,
    sessions: Sequence[Session],
    workload: str = "",
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every system in ``config.systems`` over the same sessions in front of one embedded
    1P1D pair; returns ``{"run", "workers", "systems": [{"system", "result" | "error", ...}], ...}``.
    ``checkpoint`` gets the document so far after each system (to save partial results)."""
    from ppd_server.config import RouterConfig
    from ppd_server.fleet.launcher import Cluster, plan_cluster, ports_from_os

    config.validate()
    run.validate()
    log_dir = Path(config.log_dir or tempfile.mkdtemp(prefix="ppd-bench-compare-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = ports_from_os()
    plans = plan_cluster(RouterConfig(embedded="1P1D", worker_threads=config.worker_threads), ports)
    prefill = next(p for p in plans if p.role == "prefill")
    decode = next(p for p in plans if p.role == "decode")
    assert prefill.bootstrap_port is not None
    out: list[dict[str, Any]] = []
    started = time.monotonic()
    doc: dict[str, Any] = {
        "ppd_bench_compare": 1,
        "workload": workload,
        "baseline": config.baseline,
        "run": _run_dict(run),
        "log_dir": str(log_dir),
        "systems": out,
    }
    with Cluster(
        plans, str(log_dir), progress=lambda m: print(m.replace("[ppd-server]", "[ppd-bench compare]"), file=sys.stderr)
    ):
        doc["workers"] = {
            "prefill": prefill.url,
            "decode": decode.url,
            "bootstrap_port": prefill.bootstrap_port,
            "cpus": [p.cpu for p in plans],
            "model": "smollm2",
            "threads": config.worker_threads,
        }
        entries: dict[str, dict[str, Any]] = {system: {"system": system, "rounds": []} for system in config.systems}
        out.extend(entries.values())
        for r in range(config.rounds):
            # ABBA: odd rounds run the systems in reverse, so a drift in the machine's speed
            # (other tenants) weighs on every system alike.
            order = config.systems if r % 2 == 0 else tuple(reversed(config.systems))
            for system in order:
                entry = entries[system]
                entry["rounds"].append(
                    _run_one(system, r, config, run, sessions, workload, ports, prefill, decode, log_dir)
                )
                _pool(entry, run)
                doc["wall_s"] = round(time.monotonic() - started, 1)
                if checkpoint is not None:
                    checkpoint(doc)
    doc["wall_s"] = round(time.monotonic() - started, 1)
    return doc


def _run_one(
    system: str,
    round_no: int,
    config: CompareConfig,
    run: RunConfig,
    sessions: Sequence[Session],
    workload: str,
    ports: Iterator[int],
    prefill: Any,
    decode: Any,
    log_dir: Path,
) -> dict[str, Any]:
    """One system, one round: flush the workers' caches, start the front end, run, stop it."""
    entry: dict[str, Any] = {"round": round_no + 1}
    if system == "smg" and (why := smg_available()):
        entry["error"] = why
        return entry
    asyncio.run(flush_caches([prefill.url, decode.url]))
    port = next(ports)
    policy, w_tpot = split_system(system)
    if w_tpot is not None:
        run = replace(run, w_tpot=w_tpot)
    argv, env, ready = _front_argv(policy, port, prefill.url, prefill.bootstrap_port, decode.url, next(ports))
    name = system.replace(":", "-").replace("@", "-").replace("=", "")
    proc = _Proc(name, argv, f"http://127.0.0.1:{port}", log_dir / f"front-{name}-r{round_no + 1}.log", env)
    entry["command"] = " ".join(argv)
    try:
        t0 = time.monotonic()
        proc.wait_ready(ready, config.startup_timeout_s)
        entry["startup_s"] = round(time.monotonic() - t0, 2)
        # One tiny request first, so no system pays a cold start (ppd-server loads its tokenizer
        # on the first request) inside the measured run; then a clean cache again.
        asyncio.run(_warm_up(proc.url))
        asyncio.run(flush_caches([prefill.url, decode.url]))
        print(
            f"[ppd-bench compare] {system} (round {round_no + 1}/{config.rounds}): up on {proc.url}; "
            f"running {len(sessions)} sessions",
            file=sys.stderr,
        )
        busy_before = _busy_seconds([prefill.url, decode.url])
        t_run = time.monotonic()
        entry["result"] = asyncio.run(arun(replace(run, url=proc.url, label=system), sessions, workload))
        entry["busy_share"] = _busy_share(busy_before, _busy_seconds([prefill.url, decode.url]), t_run)
        entry["loadavg"] = [round(x, 2) for x in os.getloadavg()]  # the machine's, other tenants included
    except (RuntimeError, BenchError) as e:
        entry["error"] = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        print(f"[ppd-bench compare] {system}: not run: {entry['error']}", file=sys.stderr)
    finally:
        proc.stop()
    return entry


def _busy_seconds(urls: Sequence[str]) -> dict[str, float | None]:
    """Each worker's total forward-pass time so far (``sglang:forward_step_seconds_sum``)."""
    out: dict[str, float | None] = {}
    for url in urls:
        try:
            text = httpx.get(url + "/metrics", timeout=5.0, trust_env=False).text
        except httpx.HTTPError:
            out[url] = None
            continue
        out[url] = next(
            (
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("sglang:forward_step_seconds_sum")
            ),
            None,
        )
    return out


def _busy_share(before: dict[str, float | None], after: dict[str, float | None], since: float) -> dict[str, float]:
    """Share of the run each worker spent in forward passes (its utilisation)."""
    wall = time.monotonic() - since
    return {
        url: round((after[url] - b) / wall, 3)  # type: ignore[operator]
        for url, b in before.items()
        if b is not None and after.get(url) is not None and wall > 0
    }


async def _warm_up(url: str) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=120.0) as client:
        models = (await client.get(url + "/v1/models")).json().get("data") or [{"id": "default"}]
        body = {"model": models[0]["id"], "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 2}
        r = await client.post(url + "/v1/chat/completions", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"warm-up request answered HTTP {r.status_code}: {r.text[:200]}")


def _pool(entry: dict[str, Any], run: RunConfig) -> None:
    """The system's ``result``: its rounds' records together (session ids prefixed by the round),
    summarized over the rounds' total time; ``error`` when no round ran."""
    done = [r for r in entry["rounds"] if r.get("result")]
    if not done:
        entry["error"] = "; ".join(sorted({r.get("error", "?") for r in entry["rounds"]}))
        return
    entry.pop("error", None)
    if len(done) == 1:
        entry["result"] = done[0]["result"]
        return
    records = [
        TurnRecord.from_json({**rec, "session": f"r{r['round']}/{rec['session']}"})
        for r in done
        for rec in r["result"]["records"]
    ]
    wall = sum(r["result"]["wall_s"] for r in done)
    first = done[0]["result"]
    pooled = {k: v for k, v in first.items() if k not in ("records", "summary", "wall_s", "hit_deadline")}
    pooled["load"] = {
        **first["load"],
        "sessions": sum(r["result"]["load"]["sessions"] for r in done),
        "turns": sum(r["result"]["load"]["turns"] for r in done),
        "measured_requests_per_s": round(len(records) / wall, 3) if wall else None,
    }
    pooled.update(
        rounds=len(done),
        wall_s=round(wall, 3),
        hit_deadline=any(r["result"]["hit_deadline"] for r in done),
        summary=summarize(records, wall, run.slo_ttft_ms, run.slo_tpot_ms),
        records=[x.to_json() for x in records],
    )
    entry["result"] = pooled


def _run_dict(run: RunConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(run).items() if k not in ("api_key", "progress", "url", "label")}
