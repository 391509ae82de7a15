"""Is ppd-sim right? The same ppd-bench workload measured on the embedded 1P1D cluster and
simulated with that cluster's measured profile; turn-2+ TTFT p50/p90 and TPOT p50 must agree
within 25%.

    python benchmarks/validate_sim.py                       # measure (~5 min on 2 cores), simulate, compare
    python benchmarks/validate_sim.py --reuse DIR           # re-simulate a saved measurement (seconds)

Steps, all real processes on loopback:
1. ``measure_profile`` (what ``ppd-server profile`` runs) with the ``long`` grid on an embedded
   unified ppd-worker (SmolLM2, the cluster's thread count) while a second one prefills on the
   other core, as the cluster's P does beside its D (``--isolated-profile``: one worker alone);
2. ``ppd-server --embedded 1P1D --policy ppd`` (its router starts from the built-in profile and
   fits online); ``ppd-bench run`` drives it with the workload and saves the sessions exactly as
   run (arrivals and think times); the workers' cache size, chunk size and last KV-transfer speed
   are read before the cluster stops;
3. ``ppd-sim --cluster 1P1D --profile <measured> --trace <the sessions as run> --router-profile
   builtin --online-fit`` with that chunk size, KV capacity and link speed;
4. side by side, with the ratio sim / measured. Exit status 1 when a compared figure is off by
   more than ``--tolerance``, 2 for bad arguments.

TPOT is compared over all turns (the simulator reports it over all turns with >= 2 tokens).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_CLI = "import sys; from ppd_server.cli import main; sys.exit(main())"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="validate_sim.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--workload", default="long-context-cpu", help="ppd-bench generator or workload file (default long-context-cpu)"
    )
    p.add_argument("--sessions", type=int, default=8, help="sessions (default 8)")
    p.add_argument(
        "--rate", type=float, default=0.08, help="new sessions per second (default 0.08: the 2-core box keeps up)"
    )
    p.add_argument(
        "--duration", type=float, default=100.0, help="sessions start within this many seconds (default 100)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", default="ppd", help="router policy, live and simulated (default ppd)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1: one core each)")
    p.add_argument("--profile", help="use this measured profile instead of measuring one")
    p.add_argument(
        "--profile-grid", default="long", help="ppd-server profile --grid (default long: the long-context shapes)"
    )
    p.add_argument(
        "--isolated-profile",
        action="store_true",
        help="profile one worker alone (plain `ppd-server profile`) instead of beside a busy second worker",
    )
    p.add_argument(
        "--neighbor-duty",
        type=float,
        default=1.0,
        help="share of the time the second worker prefills while the profile is measured (default 1.0; "
        "0.5 gave sim/measured 0.26-0.51 on this box, 1.0 gave 1.07-1.25)",
    )
    p.add_argument(
        "--link-gbs",
        default="auto",
        help="simulated P->D link GB/s; auto = the workers' last measured KV transfer speed",
    )
    p.add_argument("--tolerance", type=float, default=0.25, help="allowed |sim/measured - 1| (default 0.25)")
    p.add_argument("--reuse", metavar="DIR", help="skip measuring: re-simulate the measurement saved in DIR")
    p.add_argument("--keep", metavar="DIR", help="save the measurement here (default: a temp dir, printed)")
    p.add_argument("--json", help="write the comparison as JSON here")
    p.add_argument("--sim-args", default="", help="extra ppd-sim options")
    return p


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


def simulate(a: argparse.Namespace, d: Path, info: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Step 3: ppd-sim on the sessions as run, with the measured profile."""
    from ppd_sim.cli import main as sim_main

    link = info.get("kv_transfer_speed_gb_s") if a.link_gbs == "auto" else float(a.link_gbs)
    link = link if link and link > 0 else 1.0
    argv = [
        "--cluster",
        "1P1D",
        "--policies",
        a.policy,
        "--profile",
        str(d / "profile.json"),
        "--trace",
        str(d / "workload.jsonl"),
        "--router-profile",
        "builtin",
        "--online-fit",
        "--link-gbs",
        f"{link:.3g}",
        "--quiet",
    ]
    if info.get("chunked_prefill_size"):
        argv += ["--chunk-tokens", str(info["chunked_prefill_size"])]
    if info.get("max_total_num_tokens"):
        argv += ["--kv-capacity-tokens", str(info["max_total_num_tokens"])]
    arrivals = [
        json.loads(line).get("arrival_ms") or 0.0
        for line in (d / "workload.jsonl").read_text().splitlines()
        if line.strip()
    ]
    argv += ["--duration", f"{max(arrivals) / 1000.0 + 1.0:.0f}", *a.sim_args.split()]
    out = d / "simulated.json"
    rc = sim_main([*argv, "--json", str(out)])
    if rc != 0:
        raise RuntimeError(f"ppd-sim exited with {rc}")
    return json.loads(out.read_text()), argv


def compare(measured: dict[str, Any], sim: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    m, s = measured["summary"], sim["results"][0]
    rows = [
        ("turn-2+ TTFT p50", m["turn2plus"]["ttft_ms"]["p50"], s["turn2plus_ttft_ms"]["p50"], True),
        ("turn-2+ TTFT p90", m["turn2plus"]["ttft_ms"]["p90"], s["turn2plus_ttft_ms"]["p90"], True),
        ("TPOT p50", m["all"]["tpot_ms"]["p50"], s["tpot_ms"]["p50"], True),
        ("turn-1 TTFT p50", m["turn1"]["ttft_ms"]["p50"], s["turn1_ttft_ms"]["p50"], False),
        ("E2E p50", m["all"]["e2e_ms"]["p50"], s["e2e_ms"]["p50"], False),
    ]
    out = []
    for name, mv, sv, gated in rows:
        ratio = sv / mv if mv and sv is not None else None
        out.append(
            {
                "name": name,
                "measured": mv,
                "simulated": sv,
                "ratio": ratio,
                "gated": gated,
                "ok": ratio is not None and abs(ratio - 1) <= tolerance if gated else None,
            }
        )
    local_m = (m["turn2plus"].get("route_share") or {}).get("local")
    out.append(
        {
            "name": "turns 2+ local (share)",
            "measured": local_m,
            "simulated": s.get("turn2plus_local_share"),
            "ratio": (s["turn2plus_local_share"] / local_m) if local_m else None,
            "gated": False,
            "ok": None,
        }
    )
    return out


def mixed_gap(profile: dict[str, Any]) -> str | None:
    """How far the engine's mixed iterations are from the simulator's additive model (prefill
    chunk + decode rows), with coefficients fitted on the plain prefill and decode samples only."""
    from ppd_server.profiling.fit import fit_coefficients, predict_ms
    from ppd_server.routing.linalg import median

    plain = [s for s in profile.get("samples", []) if s.get("kind") in ("prefill", "decode")]
    mixed = [s for s in profile.get("samples", []) if s.get("kind") == "mixed" and s.get("ms")]
    if not plain or not mixed:
        return None
    coefs, _ = fit_coefficients(plain)
    ratios = sorted(s["ms"] / predict_ms(coefs, s) for s in mixed if predict_ms(coefs, s) > 0)
    if not ratios:
        return None
    return (
        f"The engine's mixed iterations (a prefill chunk riding with decode streams) took {median(ratios):.2f}x "
        f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}, {len(ratios)} samples) what the simulator's additive model "
        "(prefill chunk + decode rows without their base) predicts from the plain prefill and decode timings "
        "of the same profile (1.0 = additive); the profile's joint fit reconciles them."
    )


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    for name, v in (
        ("--sessions", a.sessions),
        ("--rate", a.rate),
        ("--duration", a.duration),
        ("--tolerance", a.tolerance),
        ("--threads", a.threads),
        ("--neighbor-duty", a.neighbor_duty),
    ):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            p.error(f"{name} must be > 0, got {v}")
    if a.neighbor_duty > 1:
        p.error(f"--neighbor-duty must be in (0, 1], got {a.neighbor_duty}")
    if a.link_gbs != "auto":
        try:
            float(a.link_gbs)
        except ValueError:
            p.error(f"--link-gbs must be a number or 'auto', got {a.link_gbs!r}")
    started = time.monotonic()
    if a.reuse:
        d = Path(a.reuse)
        if not (d / "measured.json").exists():
            p.error(f"--reuse {a.reuse!r} holds no measured.json")
        info = json.loads((d / "cluster.json").read_text())
    else:
        d = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="ppd-validate-"))
        d.mkdir(parents=True, exist_ok=True)
        try:
            info = measure(a, d)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
            print(f"validate_sim.py: error: {e}", file=sys.stderr)
            return 1
        _log(f"measurement saved in {d}")
    measured = json.loads((d / "measured.json").read_text())
    sim, sim_argv = simulate(a, d, info)
    rows = compare(measured, sim, a.tolerance)
    profile = json.loads((d / "profile.json").read_text())
    print(f"{'metric':<24} {'measured':>10} {'ppd-sim':>10} {'sim/meas':>9}")
    for r in rows:
        fmt = (
            (lambda v: "-" if v is None else f"{v:.3f}")
            if "share" in r["name"]
            else (lambda v: "-" if v is None else f"{v:.1f}")
        )
        flag = "" if r["ok"] is None else ("  ok" if r["ok"] else f"  OFF by more than {100 * a.tolerance:g}%")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['name']:<24} {fmt(r['measured']):>10} {fmt(r['simulated']):>10} {ratio:>9}{flag}")
    load = measured.get("load", {})
    profile_setting = (
        " (one worker alone)"
        if a.isolated_profile
        else f" beside a second worker prefilling on the other core {100 * a.neighbor_duty:.0f}% of the time"
    )
    doc = {
        "metrics": [r for r in rows if r["gated"]],
        "extra": [r for r in rows if not r["gated"]],
        "ok": all(r["ok"] for r in rows if r["gated"]),
        "tolerance": a.tolerance,
        "seconds": round(time.monotonic() - started, 1),
        "conditions": (
            f"Workload {measured.get('workload')}: {load.get('sessions')} sessions ({load.get('turns')} turns) at "
            f"{load.get('sessions_per_s')} new sessions/s (~{load.get('offered_requests_per_s')} requests/s), "
            f"policy {a.policy}, "
            f"embedded 1P1D ppd-workers (SmolLM2-135M, {a.threads} thread(s) each) on this machine; profile "
            f"grid `{a.profile_grid}`{profile_setting}"
            f" (fit error % {profile.get('fit')}); simulated as "
            f"`ppd-sim {' '.join(sim_argv)}`."
        ),
        "cluster": info,
        "profile_coefficients": profile.get("coefficients"),
        "sim_argv": sim_argv,
        "dir": str(d),
        "notes": [n for n in (mixed_gap(profile),) if n],
    }
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
