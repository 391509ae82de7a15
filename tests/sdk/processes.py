"""Start and stop real PPD processes for the SDK's end-to-end tests: loopback only, free
ports, and only the processes started here are ended, by PID (terminate, then kill)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from engine.launch import free_port  # one port iterator for the whole test process

BIN = Path(sys.executable).parent




def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, deadline_s: float) -> None:
    """Poll ``url`` until it answers 200; fail with the process log if it exits or stalls."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not healthy after {deadline_s:.0f}s:\n{log.read_text()[-3000:]}")


@contextmanager
def running(argv: Sequence[str], health_path: str, port: int, log: Path, env: dict[str, str] | None = None,
            deadline_s: float = 240.0) -> Iterator[str]:
    """Run ``argv`` (listening on ``port``), yield its base URL once healthy, always stop it."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base + health_path, proc, log, deadline_s)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # The session we created holds this process and any it spawned (a router's workers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def worker_argv(port: int, model: str = "smollm2") -> list[str]:
    """A unified (plain OpenAI-compatible) embedded worker."""
    return [str(BIN / "ppd-worker"), "--model", model, "--port", str(port), "--threads", "1"]


def router_argv(port: int, *extra: str) -> list[str]:
    """``ppd-server`` with its embedded 1P1D cluster (real SmolLM2)."""
    return [str(BIN / "ppd-server"), "--port", str(port), *extra]
