"""Process helpers for the router e2e tests (imported by tests/e2e/conftest.py and the tests;
a uniquely named module, since several conftest.py files share the name ``conftest``).

:class:`RouterProcess` runs ``python -m ppd_server ...`` in its own session (so its process group
holds the router and its embedded workers), waits for ``/health``, and stops it: SIGTERM to the
router (which stops its workers by PID), then SIGKILL of that group if it did not exit.
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
from typing import Iterator

from engine.launch import free_port  # one port iterator for the whole test process

STARTUP_TIMEOUT_S = 420.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))




def http_json(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
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


class RouterProcess:
    def __init__(self, argv: list[str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix="ppd-server-e2e-", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        # its own session: its process group holds the router and its embedded workers
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)

    def tail(self, n: int = 40) -> str:
        with open(self.log.name, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ppd-server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with _OPENER.open(self.url + "/health", timeout=2.0) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"ppd-server not healthy after {STARTUP_TIMEOUT_S:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created: router + its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.log.close()
