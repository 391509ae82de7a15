"""The one launcher of real processes for the tests: ``ppd-worker``, ``ppd-server`` and the real
``sglang-router``, on free loopback ports. Import it as ``processes`` (``tests/`` is on
``sys.path`` through the rootdir conftest).

:class:`Process` starts a command in its own session (its process group then holds it and
anything it spawns, e.g. a router's embedded workers), its stdout and stderr in a log file;
:meth:`Process.wait_healthy` polls a health URL and fails with the log's tail if the process exits
or stalls; :meth:`Process.stop` ends it by PID: SIGTERM, then SIGKILL of the group it leads if it
did not exit. :func:`started` wraps the three in a ``with`` block. Only processes started here
are ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ppd_server.fleet.launcher import ports_from_os

BIN = Path(sys.executable).parent
#: A router with an embedded SmolLM2 cluster loads the model once per worker on a busy 2-core box.
STARTUP_TIMEOUT_S = 420.0
NO_NETWORK_ENV = {
    # sglang-router fetches a tokenizer for non-local model paths: make that fail fast.
    "HF_ENDPOINT": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}  # fmt: skip
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy

# One iterator for the whole test process: a port the OS hands out again after it was released
# (a bootstrap port picked, then a worker's HTTP port) must not go to two listeners.
_PORTS = ports_from_os()


def free_port() -> int:
    return next(_PORTS)


class Process:
    """One started command; see the module docstring."""

    def __init__(
        self, name: str, argv: Sequence[str], port: int, log_path: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.bootstrap_port: int | None = None  # a prefill worker's, when the launcher knows it
        if log_path is None:
            fd, raw = tempfile.mkstemp(prefix=f"ppd-test-{name}-", suffix=".log")
            os.close(fd)
            log_path = Path(raw)
        self.log_path = log_path
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        with log_path.open("wb") as out:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
            )

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, path: str = "/health", timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                with _OPENER.open(self.url + path, timeout=2.0) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not healthy at {self.url}{path} after {timeout:g}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=30)
        # The group this process leads (start_new_session): it and whatever it spawned.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


@contextmanager
def started(
    name: str,
    argv: Sequence[str],
    port: int,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    health: str = "/health",
    timeout: float = 240.0,
) -> Iterator[Process]:
    """Start ``argv`` (listening on ``port``), yield it once healthy, always stop it."""
    proc = Process(name, argv, port, log_path, env)
    try:
        proc.wait_healthy(health, timeout)
        yield proc
    finally:
        proc.stop()


# -- the commands -----------------------------------------------------------------------------


def worker_argv(port: int, *args: str) -> list[str]:
    """A ``ppd-worker`` on one thread; ``args`` are extra CLI flags (default model: smollm2)."""
    return [sys.executable, "-m", "ppd_engine", "--host", "127.0.0.1", "--port", str(port), "--threads", "1", *args]


def router_argv(port: int, *args: str) -> list[str]:
    """``ppd-server``; with no worker flags in ``args`` it starts its embedded 1P1D cluster (SmolLM2)."""
    return [sys.executable, "-m", "ppd_server", "--host", "127.0.0.1", "--port", str(port), *args]


@contextmanager
def worker_process(tmp_dir: Path, name: str, *args: str) -> Iterator[Process]:
    """A ppd-worker subprocess (1 thread) with its /health up; ``args`` are extra CLI flags."""
    port = free_port()
    with started(name, worker_argv(port, *args), port, tmp_dir / f"{name}.log", timeout=120.0) as proc:
        yield proc


@contextmanager
def pd_pair(tmp_dir: Path, *args: str) -> Iterator[tuple[Process, Process]]:
    """A prefill worker (fresh bootstrap port, as ``prefill.bootstrap_port``) and a decode worker
    with the radix cache and conditional aggregation on, both up; ``args`` go to both."""
    bootstrap = free_port()
    with (
        worker_process(
            tmp_dir,
            "prefill",
            *args,
            "--disaggregation-mode",
            "prefill",
            "--disaggregation-bootstrap-port",
            str(bootstrap),
        ) as prefill,
        worker_process(
            tmp_dir,
            "decode",
            *args,
            "--disaggregation-mode",
            "decode",
            "--disaggregation-decode-enable-radix-cache",
            "--disaggregation-decode-enable-conditional-agg",
        ) as decode,
    ):
        prefill.bootstrap_port = bootstrap
        yield prefill, decode


@contextmanager
def pd_router_process(tmp_dir: Path, prefill_url: str, bootstrap_port: int, decode_url: str) -> Iterator[Process]:
    """The real sglang-router (PyPI) in PD mode in front of one prefill and one decode worker."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "sglang_router.launch_router",
        "--pd-disaggregation",
        "--prefill",
        prefill_url,
        str(bootstrap_port),
        "--decode",
        decode_url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(free_port()),
        "--health-check-interval-secs",
        "5",
    ]
    with started("sglang-router", cmd, port, tmp_dir / "router.log", env=NO_NETWORK_ENV, timeout=180.0) as proc:
        yield proc


# -- talking to a running router ----------------------------------------------------------------


def http_json(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30.0, key: str | None = None
) -> tuple[int, dict]:
    """One JSON call; ``key`` is sent as ``Authorization: Bearer KEY``."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(), headers=headers
    )
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@contextlib.contextmanager
def router_policy(base_url: str, spec: str) -> Iterator[None]:
    """Switch a running router's policy for the duration of a block (admin API), then restore it."""
    status, before = http_json("GET", f"{base_url}/admin/policy")
    assert status == 200, before
    status, body = http_json("PUT", f"{base_url}/admin/policy", {"spec": spec})
    assert status == 200, body
    try:
        yield
    finally:
        http_json("PUT", f"{base_url}/admin/policy", {"spec": before["spec"], "params": before["params"]})
