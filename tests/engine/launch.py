"""Process-launch helpers for e2e tests: real ppd-worker / sglang-router subprocesses on free
loopback ports, ended by PID (terminate, then kill) whatever happens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from ppd_server.fleet.launcher import ports_from_os

NO_NETWORK_ENV = {
    # sglang-router fetches a tokenizer for non-local model paths: make that fail fast.
    "HF_ENDPOINT": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}


# One iterator for the whole test process: a port the OS hands out again after it was released
# (a bootstrap port picked, then a worker's HTTP port) must not go to two listeners.
_PORTS = ports_from_os()


def free_port() -> int:
    return next(_PORTS)


class Proc:
    def __init__(self, name: str, args: list[str], url: str, log_path: Path, env: dict | None = None) -> None:
        self.name, self.url, self.log_path = name, url, log_path
        self.bootstrap_port: int | None = None  # a prefill worker's, when the launcher knows it
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      env={**os.environ, **(env or {})})

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, path: str = "/health", timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


@contextmanager
def worker_process(tmp_dir: Path, name: str, *args: str) -> Iterator[Proc]:
    """A ppd-worker subprocess (1 thread) with its /health up; ``args`` are extra CLI flags."""
    port = free_port()
    cmd = [sys.executable, "-m", "ppd_engine", "--host", "127.0.0.1", "--port", str(port),
           "--threads", "1", *args]
    proc = Proc(name, cmd, f"http://127.0.0.1:{port}", tmp_dir / f"{name}.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@contextmanager
def pd_pair(tmp_dir: Path, *args: str) -> Iterator[tuple[Proc, Proc]]:
    """A prefill worker (fresh bootstrap port, as ``prefill.bootstrap_port``) and a decode worker
    with the radix cache and conditional aggregation on, both up; ``args`` go to both."""
    bootstrap = free_port()
    with worker_process(tmp_dir, "prefill", *args, "--disaggregation-mode", "prefill",
                        "--disaggregation-bootstrap-port", str(bootstrap)) as prefill, \
            worker_process(tmp_dir, "decode", *args, "--disaggregation-mode", "decode",
                           "--disaggregation-decode-enable-radix-cache",
                           "--disaggregation-decode-enable-conditional-agg") as decode:
        prefill.bootstrap_port = bootstrap
        yield prefill, decode


@contextmanager
def pd_router_process(tmp_dir: Path, prefill_url: str, bootstrap_port: int, decode_url: str) -> Iterator[Proc]:
    """The real sglang-router (PyPI) in PD mode in front of one prefill and one decode worker."""
    port = free_port()
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--pd-disaggregation",
           "--prefill", prefill_url, str(bootstrap_port), "--decode", decode_url,
           "--host", "127.0.0.1", "--port", str(port), "--prometheus-host", "127.0.0.1",
           "--prometheus-port", str(free_port()), "--health-check-interval-secs", "5"]
    proc = Proc("sglang-router", cmd, f"http://127.0.0.1:{port}", tmp_dir / "router.log", env=NO_NETWORK_ENV)
    try:
        proc.wait_ready(path="/health", timeout=180.0)
        yield proc
    finally:
        proc.stop()
