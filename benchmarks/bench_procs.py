"""Processes for the router benchmarks (``router_overhead.py``, ``router_load.py``): free ports,
starting and ending processes by PID, readiness, the routers' command lines (ppd-server,
sglang-router 0.3.2, smg, all in P/D mode over the same workers), and what /proc says about a
process (CPU seconds, resident memory) and the machine (load average)."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

HERE = os.path.dirname(os.path.abspath(__file__))

#: sglang-router and smg fetch a tokenizer for a non-local model name: make that fail fast, offline
#: (sglang-protocol.md §1).
_BLACKHOLE = "http://127.0.0.1:9"
NO_NETWORK_ENV = {
    "HF_ENDPOINT": _BLACKHOLE,
    "HTTP_PROXY": _BLACKHOLE,
    "HTTPS_PROXY": _BLACKHOLE,
    "http_proxy": _BLACKHOLE,
    "https_proxy": _BLACKHOLE,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit(want: int = 16384) -> int:
    """Raise this process's open-file limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, want), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def start(argv: list[str], env: dict | None = None, log: str | None = None) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; only this process, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    """Until GET ``url`` answers 200 (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


def get_json(url: str, timeout_s: float = 30.0) -> dict:
    import json

    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS, KiB), from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def async_runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    """``uvloop.run`` when uvloop is installed (a cheaper load generator), else ``asyncio.run``."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def worker_argv(mode: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(HERE, "instant_worker.py"), mode, str(port), *extra]


def ppd_argv(prefill: str, bootstrap: int, decode: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ppd_server", "--prefill", prefill, str(bootstrap), "--decode", decode,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra,
    ]  # fmt: skip


def rust_router_argv(system: str, prefill: str, bootstrap: int, decode: str, port: int) -> list[str]:
    """sglang-router 0.3.2 or smg in PD mode (the same flags: smg grew out of sglang-router)."""
    pd = [
        "--pd-disaggregation", "--prefill", prefill, str(bootstrap), "--decode", decode,
        "--policy", "round_robin", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warn",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
    ]  # fmt: skip
    if system == "sglang-router":
        return [sys.executable, "-m", "sglang_router.launch_router", *pd]
    exe = shutil.which("smg") or os.path.join(os.path.dirname(sys.executable), "smg")
    return [exe, "launch", *pd]


def smg_missing() -> str | None:
    exe = shutil.which("smg") or os.path.join(os.path.dirname(sys.executable), "smg")
    return None if os.path.exists(exe) else "smg is not installed (pip install smg)"
