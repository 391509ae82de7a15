"""validate_sim.py, step 1-2: measure. The profile of a worker beside a busy neighbour, then the
live run on ``ppd-server --embedded 1P1D`` driven by ``ppd-bench run``, then (cluster still up,
idle) the decomposition probe of :mod:`validate_decompose`. Everything lands in one directory:
``profile.json``, ``measured.json``, ``workload.jsonl`` (the sessions as run), ``router.log`` and
``cluster.json`` (the workers' cache size, chunk size, page size, last KV-transfer speed, and the
probe's figures). Real processes on loopback; every step has a time bound.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from validate_decompose import probe_overheads

HERE = Path(__file__).resolve().parent
_CLI = "import sys; from ppd_server.cli import main; sys.exit(main())"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(msg: str) -> None:
    print(f"[validate_sim] {msg}", file=sys.stderr, flush=True)


def _run(argv: list[str], timeout_s: float, what: str) -> None:
    _log(f"{what}: {' '.join(argv[3:] if argv[1] == '-c' else argv[1:])}")
    proc = subprocess.run(argv, env=_env(), timeout=timeout_s, stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed with exit status {proc.returncode}")


def _get(url: str, timeout_s: float = 5.0) -> Any:
    import httpx

    r = httpx.get(url, timeout=timeout_s, trust_env=False)
    r.raise_for_status()
    return r.json() if "json" in r.headers.get("content-type", "") else r.text


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith("#") and name in line.split("{")[0].split(" ")[0]:
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def profile_beside_a_busy_worker(a: argparse.Namespace, out: Path) -> None:
    """The profile as the cluster's workers see each other: an embedded 2R pair, one core each;
    the grid is measured on the first while the second prefills 1.5k-token prompts for
    ``--neighbor-duty`` of the time (on this 2-vCPU box a decode step is ~1.8x slower while the
    other core prefills: the cluster's P and D slow each other down)."""
    import threading

    from ppd_server.config import RouterConfig
    from ppd_server.fleet.launcher import Cluster, plan_cluster
    from ppd_server.profiling import GRIDS, measure_profile, save_profile
    from ppd_server.profiling.probe import _Probe

    plans = plan_cluster(RouterConfig(embedded="2R", model="smollm2", worker_threads=a.threads).validate())
    cluster = Cluster(plans)
    stop = threading.Event()
    try:
        cluster.start(timeout_s=240)
        busy = _Probe(plans[1].url, 120.0, seed=1)

        def keep_busy() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    busy.stream(busy.tokens(1500), 1)
                except Exception:
                    pass
                took = time.monotonic() - t0
                stop.wait(took * (1.0 - a.neighbor_duty) / a.neighbor_duty)

        thread = threading.Thread(target=keep_busy, daemon=True)
        thread.start()
        _log(
            f"profile --grid {a.profile_grid} of {plans[0].url} while {plans[1].url} prefills "
            f"{100 * a.neighbor_duty:.0f}% of the time"
        )
        profile = measure_profile(
            plans[0].url,
            GRIDS[a.profile_grid],
            max_seconds=120,
            progress=lambda i, n, label: _log(f"profile {i}/{n} {label}") if i % 4 == 0 else None,
        )
        profile["source"] += (
            f"; measured while a second worker on the other core prefilled 1.5k-token prompts "
            f"{100 * a.neighbor_duty:.0f}% of the time"
        )
        save_profile(profile, out)
    finally:
        stop.set()
        cluster.stop()


def measure(a: argparse.Namespace, d: Path) -> dict[str, Any]:
    """Steps 1-2: the profile, then the live run; saves everything in ``d``."""
    prof = d / "profile.json"
    if a.profile:
        prof.write_text(Path(a.profile).read_text())
    elif not a.isolated_profile:
        profile_beside_a_busy_worker(a, prof)
    else:
        _run(
            [
                sys.executable,
                "-c",
                _CLI,
                "profile",
                "--grid",
                a.profile_grid,
                "--threads",
                str(a.threads),
                "--max-seconds",
                "150",
                "-o",
                str(prof),
            ],
            300,
            "profile",
        )
    port = _free_port()
    log = open(d / "router.log", "wb")  # noqa: SIM115 - closed in the finally below, once the router has exited
    router = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI,
            "--embedded",
            "1P1D",
            "--port",
            str(port),
            "--policy",
            a.policy,
            "--worker-threads",
            str(a.threads),
        ],
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    info: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 240
        while True:
            if router.poll() is not None:
                raise RuntimeError(f"ppd-server exited with {router.returncode}; log {d / 'router.log'}")
            try:
                if _get(url + "/health").get("status") == "ok":
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ppd-server not healthy after 240 s; log {d / 'router.log'}")
            time.sleep(1.0)
        _log(f"cluster up at {url}")
        workers = _get(url + "/admin/workers")
        workers = workers.get("workers", workers) if isinstance(workers, dict) else workers
        by_role = {w["role"]: w["url"] for w in workers}
        dinfo = _get(by_role["decode"] + "/server_info")
        info = {
            "decode_url": by_role["decode"],
            "prefill_url": by_role["prefill"],
            "max_total_num_tokens": dinfo.get("max_total_num_tokens"),
            "chunked_prefill_size": dinfo.get("chunked_prefill_size"),
            "kv_bytes_per_token": dinfo.get("kv_bytes_per_token"),
            "page_size": dinfo.get("page_size"),
            "load_interval_s": 0.5,
        }
        _run(
            [
                sys.executable,
                "-m",
                "ppd_bench",
                "run",
                "--url",
                url,
                "--workload",
                a.workload,
                "--sessions",
                str(a.sessions),
                "--rate",
                f"{a.rate:g}",
                "--duration",
                f"{a.duration:g}",
                "--deadline",
                f"{a.duration + 120:g}",
                "--seed",
                str(a.seed),
                "--label",
                a.policy,
                "--no-progress",
                "--out",
                str(d / "measured.json"),
                "--save-workload",
                str(d / "workload.jsonl"),
            ],
            a.duration + 200,
            "ppd-bench run",
        )
        speeds = [
            _metric(_get(w + "/metrics"), "kv_transfer_speed_gb_s") for w in (by_role["prefill"], by_role["decode"])
        ]
        info["kv_transfer_speed_gb_s"] = max((s for s in speeds if s), default=None)
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]  # the machine's, after the run
        if a.decompose_rounds:
            _log(f"decomposition probe: {a.decompose_rounds} idle turn-2 shapes, router vs worker chat vs /generate")
            info["decomposition"] = probe_overheads(url, by_role["decode"], rounds=a.decompose_rounds)
    finally:
        router.send_signal(signal.SIGTERM)
        try:
            router.wait(timeout=30)
        except subprocess.TimeoutExpired:
            router.kill()
            router.wait()
        log.close()
    (d / "cluster.json").write_text(json.dumps(info, indent=1))
    return info
