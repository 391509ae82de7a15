"""Replica throughput: 1 vs 2 ``ppd-server`` replicas behind nginx (the shipped
``docs/nginx/ppd-router.conf``), in front of the SAME instant fake P/D workers, in one run.

    python benchmarks/replica_scaling.py [--seconds 4] [--concurrency 64] [--rounds 2]

For each setup (1 replica direct, 1 replica behind nginx, 2 replicas behind nginx), interleaved
over ``--rounds``: ``--concurrency`` keep-alive connections send ``POST /v1/chat/completions``
(P->D, max_tokens 1; non-streaming, then streaming) for ``--seconds``; it prints requests/s
(median over rounds), errors, and the CPU time per request of the replicas (all of them) and of
nginx (from /proc). Requests carry no conversation id, so nginx spreads them by request id.

What it can show: on a box with fewer cores than nginx + replicas + fakes + load generator need,
the 1 -> 2 factor is capped by CPU, not by the router; the replicas' CPU per request (unchanged
from 1 to 2 replicas = no shared bottleneck between them) is what predicts scaling on a bigger
box: req/s per replica-core = 1e6 / (CPU us/req). Everything is bounded; every process started
here is ended by PID. Needs ``nginx`` (``apt-get install nginx``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_client as bc  # the load generator
import bench_procs as bp  # process helpers and the instant fake workers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "docs" / "nginx" / "ppd-router.conf"
MAIN = """
user root;
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/ppd-router.conf;
}}
"""


def _nginx(nginx: str, tmp: Path, replicas: list[str], port: int) -> subprocess.Popen:
    text = CONF.read_text().replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    text = text.replace("127.0.0.1:30001", replicas[0])
    if len(replicas) > 1:
        text = text.replace("127.0.0.1:30002", replicas[1])
    else:
        text = "\n".join(ln for ln in text.splitlines() if "127.0.0.1:30002" not in ln)
    (tmp / "ppd-router.conf").write_text(text)
    (tmp / "nginx.conf").write_text(MAIN.format(tmp=tmp))
    return bp.start([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")])


def _pids(proc: subprocess.Popen) -> list[int]:
    """The process and its children (nginx's worker runs in a child of the master)."""
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            return [proc.pid, *(int(x) for x in f.read().split())]
    except OSError:
        return [proc.pid]


def _cpu(ps: list[subprocess.Popen]) -> float:
    return sum(bp.cpu_seconds(pid) for p in ps for pid in _pids(p))


def _measure(url: str, procs: dict[str, list[subprocess.Popen]], seconds: float, concurrency: int) -> list[tuple]:
    out = []
    for mode, body in bc.MODES:
        before = {k: _cpu(ps) for k, ps in procs.items()}
        rps, errors, _ = asyncio.run(bc.measure_throughput(url, concurrency, seconds, body))
        cpu = {k: _cpu(ps) - before[k] for k, ps in procs.items()}
        n = max(1.0, rps * seconds)
        out.append((mode, rps, errors, {k: v / n * 1e6 for k, v in cpu.items()}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="throughput window per setup and mode (default 4)")
    ap.add_argument("--concurrency", type=int, default=64, help="connections (default 64)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        ap.error("nginx is not installed (apt-get install nginx)")
    if args.seconds <= 0 or args.concurrency < 1 or args.rounds < 1:
        ap.error("--seconds, --concurrency and --rounds must be positive")
    started: list[subprocess.Popen] = []
    results: dict[str, list[list[tuple]]] = {}
    with tempfile.TemporaryDirectory(prefix="ppd-replicas-") as raw:
        tmp = Path(raw)
        try:
            p_port, d_port, boot = bp.free_port(), bp.free_port(), bp.free_port()
            fakes = [bp.start(bp.worker_argv(mode, port)) for mode, port in (("prefill", p_port), ("decode", d_port))]
            started += fakes
            p_url, d_url = f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{d_port}"
            bp.wait_http(d_url + "/health", 20, fakes[1])
            bp.wait_http(p_url + "/health", 20, fakes[0])
            workers = ["--prefill", p_url, str(boot), "--decode", d_url, "--log-level", "warning"]
            for _ in range(args.rounds):
                for setup, n, behind in (("1 replica, direct", 1, False), ("1 replica + nginx", 1, True),
                                         ("2 replicas + nginx", 2, True)):  # fmt: skip
                    ports = [bp.free_port() for _ in range(n)]
                    reps = [bp.start([sys.executable, "-m", "ppd_server", "--port", str(p), *workers]) for p in ports]
                    started += reps
                    for p, proc in zip(ports, reps, strict=True):
                        bp.wait_http(f"http://127.0.0.1:{p}/health", 60, proc)
                    procs = {"replicas": reps}
                    url = f"http://127.0.0.1:{ports[0]}"
                    ng = None
                    if behind:
                        front = bp.free_port()
                        ng = _nginx(nginx, tmp, [f"127.0.0.1:{p}" for p in ports], front)
                        started.append(ng)
                        url = f"http://127.0.0.1:{front}"
                        bp.wait_http(url + "/health", 20, ng)
                        procs["nginx"] = [ng]
                    results.setdefault(setup, []).append(_measure(url, procs, args.seconds, args.concurrency))
                    for proc in [*reps, *([ng] if ng else [])]:
                        bp.stop(proc)
                    time.sleep(0.5)
        finally:
            for proc in started:
                bp.stop(proc)
    print(
        f"\nreplica scaling: P->D chat completions to instant fakes, {args.concurrency} connections x "
        f"{args.seconds:g}s, {args.rounds} round(s) interleaved (median req/s), {os.cpu_count()} cores shared by "
        f"everything (no pinning)"
    )
    base: dict[str, float] = {}
    for mode, _ in bc.MODES:
        print(f"\n{mode}")
        print(
            f"{'setup':<22}{'req/s':>9}{'x 1 replica':>13}{'errors':>8}{'replicas CPU us/req':>21}{'nginx us/req':>14}"
        )
        for setup, rounds in results.items():
            rows = [r for rnd in rounds for r in rnd if r[0] == mode]
            rps = statistics.median(r[1] for r in rows)
            errors = sum(r[2] for r in rows)
            rep_us = statistics.median(r[3]["replicas"] for r in rows)
            ng_us = statistics.median(r[3].get("nginx", 0.0) for r in rows)
            if setup == "1 replica + nginx":
                base[mode] = rps
            factor = f"{rps / base[mode]:.2f}" if mode in base and setup != "1 replica, direct" else "-"
            ng = f"{ng_us:>14.0f}" if "nginx" in rows[0][3] else f"{'-':>14}"
            print(f"{setup:<22}{rps:>9.0f}{factor:>13}{errors:>8d}{rep_us:>21.0f}{ng}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
