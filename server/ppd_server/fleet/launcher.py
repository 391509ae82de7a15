"""The embedded cluster: start ``ppd-worker`` (or real SGLang) processes, wait, stop.

``plan_cluster`` is pure (config + a port allocator -> the exact argv of every worker), so the
SGLang command lines are unit-tested without a GPU; :class:`Cluster` runs a plan: starts each
process (its own session, output to a log file, pinned to one core where the OS allows), waits
until every ``/health`` answers 200 with a progress message, and stops exactly the processes it
started, by PID (SIGTERM, then SIGKILL after a grace period). Workers stay in the router's
process group, so whoever ends that group (Ctrl-C, a test fixture's last resort) ends them too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ppd_server.config import PrefillSpec, RouterConfig

_ROLE_MODE = {"prefill": "prefill", "decode": "decode", "unified": None}


@dataclass(frozen=True, slots=True)
class WorkerLaunch:
    role: str  # prefill | decode | unified
    port: int
    bootstrap_port: int | None
    argv: tuple[str, ...]
    cpu: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"{self.role}:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ports_from_os(exclude: Iterable[int] = ()) -> Iterator[int]:
    """Free loopback ports, never the same one twice and never one in ``exclude``."""
    seen: set[int] = set(exclude)
    while True:
        p = free_port()
        if p not in seen:
            seen.add(p)
            yield p


def ppd_worker_command() -> list[str]:
    """How to run ``ppd-worker`` from this interpreter (the console script beside it, or -m)."""
    script = os.path.join(os.path.dirname(sys.executable), "ppd-worker")
    if os.path.exists(script):
        return [script]
    found = shutil.which("ppd-worker")
    return [found] if found else [sys.executable, "-m", "ppd_engine"]


def _roles(config: RouterConfig) -> list[str]:
    layout = config.embedded_layout
    return ["prefill"] * layout.prefill + ["decode"] * layout.decode + ["unified"] * layout.unified


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


def plan_cluster(
    config: RouterConfig, ports: Iterator[int] | None = None, cpus: list[int] | None = None
) -> list[WorkerLaunch]:
    ports = ports or ports_from_os(exclude={config.port})  # the router binds its own port after the workers start
    cpus = _cpus() if cpus is None else cpus
    plans = []
    gpu = 0
    for i, role in enumerate(_roles(config)):
        port = next(ports)
        boot = next(ports) if role == "prefill" else None
        if config.backend == "sglang":
            argv = sglang_argv(role, config.model_path or config.model, port, boot, base_gpu_id=gpu, tp=config.tp)
            gpu += config.tp
            cpu = None
        else:
            device = config.devices[i % len(config.devices)]
            argv = ppd_worker_argv(role, config, port, boot, device)
            cpu = cpus[i % len(cpus)] if cpus and device == "cpu" else None
        plans.append(WorkerLaunch(role, port, boot, tuple(argv), cpu))
    return plans


def ppd_worker_argv(
    role: str, config: RouterConfig, port: int, bootstrap_port: int | None, device: str = "cpu"
) -> list[str]:
    argv = ppd_worker_command() + [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        config.model,
        "--threads",
        str(config.worker_threads),
    ]
    if config.decode_rows_tokens is not None:
        argv += ["--decode-rows-tokens", str(config.decode_rows_tokens)]
    if device != "cpu":
        argv += ["--device", device]
        if config.gpu_memory_fraction is not None:
            argv += ["--memory-fraction", str(config.gpu_memory_fraction)]
    mode = _ROLE_MODE[role]
    if mode:
        argv += ["--disaggregation-mode", mode]
    if role == "prefill":
        argv += ["--disaggregation-bootstrap-port", str(bootstrap_port)]
        if config.kv_link_gbps:
            argv += ["--kv-link-gbps", str(config.kv_link_gbps)]
    if role == "decode":
        argv += ["--disaggregation-decode-enable-radix-cache", "--disaggregation-decode-enable-conditional-agg"]
    return argv


def sglang_argv(
    role: str,
    model_path: str,
    port: int,
    bootstrap_port: int | None,
    *,
    base_gpu_id: int,
    tp: int,
    python: str | None = None,
) -> list[str]:
    """The real SGLang worker command for one role (GPU box)."""
    argv = [
        python or sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        model_path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-gpu-id",
        str(base_gpu_id),
        "--tp",
        str(tp),
        "--enable-cache-report",
        "--enable-metrics",
    ]
    mode = _ROLE_MODE[role]
    if mode:
        argv += ["--disaggregation-mode", mode]
    if role == "prefill":
        argv += ["--disaggregation-bootstrap-port", str(bootstrap_port)]
    if role == "decode":
        argv += ["--disaggregation-decode-enable-radix-cache", "--disaggregation-decode-enable-conditional-agg"]
    return argv


def with_workers(config: RouterConfig, plans: list[WorkerLaunch]) -> RouterConfig:
    """The config pointing at the launched workers (so the app is the same as for external ones).
    A capped embedded KV link (``--kv-link-gbps``) is also what the cost model should assume."""
    link = min(config.link_gbps, config.kv_link_gbps) if config.kv_link_gbps else config.link_gbps
    return config.replace(
        prefill=tuple(PrefillSpec(p.url, p.bootstrap_port) for p in plans if p.role == "prefill"),
        decode=tuple(p.url for p in plans if p.role == "decode"),
        worker=tuple(p.url for p in plans if p.role == "unified"),
        link_gbps=link,
    )


class ClusterError(RuntimeError):
    pass


class Cluster:
    """Runs a plan. Use as a context manager, or call start() / wait_healthy() / stop()."""

    def __init__(
        self, plans: list[WorkerLaunch], log_dir: str | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        self.plans = plans
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="ppd-workers-")
        self.progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Cluster:
        try:
            self.start()
            return self
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_path(self, plan: WorkerLaunch) -> str:
        return os.path.join(self.log_dir, f"{plan.role}-{plan.port}.log")

    def start(self, timeout_s: float = 180.0) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        for plan in self.plans:
            log = open(self.log_path(plan), "wb")  # noqa: SIM115 - owned by the child's lifetime
            # Same process group as the router: a terminal's Ctrl-C, or a supervisor ending the
            # router's group, reaches the workers too; stop() still ends each one by PID.
            proc = subprocess.Popen(plan.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            log.close()
            self.procs[plan.name] = proc
            if plan.cpu is not None:
                try:
                    os.sched_setaffinity(proc.pid, {plan.cpu})
                except (AttributeError, OSError):
                    pass
        self.progress(
            f"[ppd-server] started {len(self.plans)} worker(s): "
            + ", ".join(f"{p.role} {p.url}" + (f" (core {p.cpu})" if p.cpu is not None else "") for p in self.plans)
            + f"; logs in {self.log_dir}"
        )
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float) -> None:
        t0 = time.monotonic()
        pending = {p.name: p for p in self.plans}
        last_report = 0.0
        while pending:
            for name, plan in list(pending.items()):
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise ClusterError(
                        f"worker {name} exited with code {proc.returncode}; last log lines:\n{self._tail(plan)}"
                    )
                if _healthy(plan.url):
                    del pending[name]
            elapsed = time.monotonic() - t0
            if not pending:
                break
            if elapsed > timeout_s:
                raise ClusterError(
                    f"workers not healthy after {timeout_s:.0f}s: {', '.join(pending)}; logs in {self.log_dir}"
                )
            if elapsed - last_report >= 5.0:
                last_report = elapsed
                self.progress(f"[ppd-server] waiting for {len(pending)} worker(s) to load the model... {elapsed:.0f}s")
            time.sleep(0.2)
        self.progress(f"[ppd-server] all {len(self.plans)} worker(s) healthy after {time.monotonic() - t0:.1f}s")

    def _tail(self, plan: WorkerLaunch, n: int = 20) -> str:
        try:
            with open(self.log_path(plan), "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with _suppress_gone():
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with _suppress_gone():
                    proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url + "/health", timeout=2.0) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _suppress_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is not None and issubclass(exc_type, ProcessLookupError)
