"""Router overhead and throughput: ppd-server (with its own HTTP/1.1 worker client, and optionally
with aiohttp's client in its place), optionally ppd-server from another checkout
(``--baseline-tree``: before/after a change), sglang-router 0.3.2 and smg, all in front of the SAME
instant fake workers, in one run.

    python benchmarks/router_overhead.py [--requests 2000] [--seconds 4] [--concurrency 32]
        [--rounds 1] [--baseline-tree DIR] [--skip-sglang] [--skip-smg] [--with-aiohttp-client]

Processes: one fake prefill + one fake decode SGLang worker (``instant_worker.py``: a keep-alive
HTTP/1.1 server answering at once with canned bodies; a ``"stream": true`` request gets a chunked
SSE answer) and one router at a time, pinned to core 0 (``taskset``); the fakes and this load
generator (``bench_client.py``) share the other core(s).

Figures (``POST /v1/chat/completions``, max_tokens 1, P->D for every router), for a
non-streaming and a streaming (SSE, usage chunk) request:
* latency: sequential requests; p50/p99 direct to the fake decode, and through each router;
  "added" = router p50/p99 - direct p50/p99;
* throughput: ``--concurrency`` connections for ``--seconds`` (after a warm-up): requests/s, and
  the router's own CPU time per request (with ``--rounds`` > 1: the median, the best round and every
  round's figure) (/proc utime+stime, all threads), whose inverse is the
  request rate one fully available core would sustain - robust when other processes share the
  machine, unlike req/s. Ratios between routers of the same run are what to quote.
Everything is bounded by counts and time; every process started here is ended by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

import bench_client as bc
import bench_procs as bp


def serve_router(client: str, argv: list[str]) -> int:
    """ppd-server exactly as ``python -m ppd_server`` runs it, with its worker client swapped for
    aiohttp's when ``client == "aiohttp"`` (the only difference between the two rows)."""
    if client == "aiohttp":
        from aiohttp_upstream import AiohttpPool

        import ppd_server.http.app as app_module

        app_module.UpstreamPool = AiohttpPool  # type: ignore[misc,assignment]
    from ppd_server.cli import main as ppd_server_main

    return ppd_server_main(argv)


def _measure_router(name: str, argv: list[str], env: dict, ready: str, args: argparse.Namespace) -> list[tuple]:
    port = bp.free_port()
    argv = [a if a != "{port}" else str(port) for a in argv]
    proc = bp.start(argv, env)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        bp.wait_http(url + ready, 120, proc)
        asyncio.run(bc.measure_latency(url, 50, bc.BODY))  # the first P->D (Rust routers: lazy setup)
        for mode, body in bc.MODES:
            lat = asyncio.run(bc.measure_latency(url, args.requests, body))
            rps, errors, cpu = asyncio.run(
                bc.measure_throughput(url, args.concurrency, args.seconds, body, lambda: bp.cpu_seconds(proc.pid))
            )
            rows.append((mode, name, lat, (rps, errors, (cpu or 0.0) * 1e6)))
    finally:
        bp.stop(proc)
    return rows


def _merge_rounds(rows: list[tuple]) -> list[tuple]:
    """One row per (mode, router): latencies pooled over the rounds, throughput figures their medians."""
    merged: dict[tuple[str, str], list[tuple]] = {}
    for mode, name, lat, thr in rows:
        merged.setdefault((mode, name), []).append((lat, thr))
    out = []
    for (mode, name), runs in merged.items():
        lat = [x for run_lat, _ in runs for x in run_lat]
        thrs = [thr for _, thr in runs if thr is not None]
        thr = None
        if thrs:
            thr = (
                statistics.median(t[0] for t in thrs),
                sum(t[1] for t in thrs),
                statistics.median(t[2] for t in thrs),
                [t[2] for t in thrs],  # every round's CPU us/request (best-of and spread)
            )
        out.append((mode, name, lat, thr))
    return out


def _event_loop_name() -> str:
    """What ``ppd_server.cli`` runs on here: uvloop when importable (a declared dependency), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return "asyncio (uvloop not installed)"
    return f"uvloop {uvloop.__version__}"


def _print_table(rows: list[tuple], args: argparse.Namespace, load_before: str, load_after: str) -> None:
    print(
        f"\nrouter overhead: chat completions, P->D to instant fakes; router pinned to core {args.router_core}; "
        f"{args.requests} sequential requests; {args.concurrency} connections x {args.seconds:g}s; "
        f"{args.rounds} round(s); load average before {load_before}, after {load_after}; "
        f"ppd-server's event loop: {_event_loop_name()}"
    )
    for mode, _ in bc.MODES:
        print(f"\n{mode}")
        print(
            f"{'path':<30}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{'req/s':>10}{'errors':>8}"
            f"{'CPU us/req':>12}{'req/s per CPU-s':>17}{'CPU/req vs ppd':>16}{'best us/req':>13}  rounds"
        )
        direct = next(lat for m, name, lat, thr in rows if m == mode and thr is None)
        d50, d99 = bc.pct(direct, 50), bc.pct(direct, 99)
        ppd_cpu = next((thr[2] for m, name, _, thr in rows if m == mode and thr and name.endswith("upstream.py")), None)
        for m, name, lat, thr in rows:
            if m != mode:
                continue
            p50, p99 = bc.pct(lat, 50), bc.pct(lat, 99)
            added = f"{p50 - d50:>11.3f}{p99 - d99:>11.3f}" if thr else f"{'-':>11}{'-':>11}"
            tput = (
                f"{thr[0]:>10.0f}{thr[1]:>8d}{thr[2]:>12.0f}{1e6 / max(thr[2], 1e-9):>17.0f}"
                f"{(thr[2] / ppd_cpu if ppd_cpu else 0):>15.2f}x{min(thr[3]):>13.0f}  "
                + "/".join(f"{c:.0f}" for c in thr[3])
                if thr
                else f"{'-':>10}{'-':>8}{'-':>12}{'-':>17}{'-':>16}"
            )
            print(f"{name:<30}{p50:>9.3f}{p99:>9.3f}{added}{tput}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve-router", choices=("upstream", "aiohttp"), help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests for latency (default 2000)")
    ap.add_argument("--seconds", type=float, default=4.0, help="throughput window per router (default 4)")
    ap.add_argument("--concurrency", type=int, default=32, help="connections for throughput (default 32)")
    ap.add_argument("--router-core", type=int, default=0, help="core the router is pinned to (default 0)")
    ap.add_argument(
        "--baseline-tree",
        metavar="DIR",
        help="also measure ppd-server from this checkout (e.g. `git archive main | tar -x -C DIR`)",
    )
    ap.add_argument("--skip-sglang", action="store_true", help="leave sglang-router out")
    ap.add_argument("--skip-smg", action="store_true", help="leave smg out")
    ap.add_argument(
        "--with-aiohttp-client", action="store_true", help="also ppd-server with aiohttp's client as its worker client"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every router this many times, interleaved (latency pooled, req/s and CPU/req medians; default 1)",
    )
    args, rest = ap.parse_known_args()
    if args.serve_router:
        return serve_router(args.serve_router, rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.requests < 1 or args.seconds <= 0 or args.concurrency < 1 or args.rounds < 1:
        ap.error("--requests, --seconds, --concurrency and --rounds must be positive")
    if args.baseline_tree and not os.path.isdir(os.path.join(args.baseline_tree, "server", "ppd_server")):
        ap.error(f"--baseline-tree {args.baseline_tree!r} is not a PPD checkout (no server/ppd_server)")
    bp.raise_fd_limit()
    cores = sorted(os.sched_getaffinity(0))
    others = [c for c in cores if c != args.router_core] or cores
    os.sched_setaffinity(0, set(others))  # the load generator and the fakes stay off the router's core
    pin = ["taskset", "-c", str(args.router_core)]
    procs = []
    try:
        p_port, d_port, boot = bp.free_port(), bp.free_port(), bp.free_port()
        prefill = bp.start(bp.worker_argv("prefill", p_port))
        decode = bp.start(bp.worker_argv("decode", d_port))
        procs += [prefill, decode]
        p_url, d_url = f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{d_port}"
        bp.wait_http(d_url + "/health", 20, decode)
        bp.wait_http(p_url + "/health", 20, prefill)
        load_before = bp.loadavg()
        rows = [
            (mode, "direct to fake decode", asyncio.run(bc.measure_latency(d_url, args.requests, body)), None)
            for mode, body in bc.MODES
        ]
        ppd = bp.ppd_argv(p_url, boot, d_url, 0)
        ppd[ppd.index("--port") + 1] = "{port}"
        self_argv = [sys.executable, os.path.abspath(__file__)]
        routers = [
            ("ppd-server, upstream.py", pin + self_argv + ["--serve-router", "upstream", *ppd[3:]], {}, "/health")
        ]
        if args.with_aiohttp_client:
            routers.append(
                ("ppd-server, aiohttp client", pin + self_argv + ["--serve-router", "aiohttp", *ppd[3:]], {}, "/health")
            )
        if args.baseline_tree:
            tree = os.path.abspath(args.baseline_tree)
            # that tree's packages in place of this one's; other entries (e.g. a uvloop install
            # beside the venv) stay, so both trees run on the same event loop
            own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            extra = [
                e
                for e in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if e and not os.path.abspath(e).startswith(own)
            ]
            trees = [os.path.join(tree, d) for d in ("", "server", "kernels", "integrations")]
            path = os.pathsep.join(trees + extra)
            routers.append(("ppd-server, baseline tree", pin + ppd, {"PYTHONPATH": path}, "/health"))
        for system, skip in (("sglang-router", args.skip_sglang), ("smg", args.skip_smg)):
            if skip or (system == "smg" and bp.smg_missing()):
                continue
            argv = bp.rust_router_argv(system, p_url, boot, d_url, 0)
            argv[argv.index("--port") + 1] = "{port}"
            label = "sglang-router 0.3.2 (pd)" if system == "sglang-router" else "smg 1.13 (pd)"
            routers.append((label, pin + argv, bp.NO_NETWORK_ENV, "/health"))
        for _ in range(args.rounds):  # interleaved: a load drift on a shared box hits every router alike
            for name, argv, env, ready in routers:
                rows += _measure_router(name, argv, env, ready, args)
        _print_table(_merge_rounds(rows), args, load_before, bp.loadavg())
    finally:
        for proc in procs:
            bp.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
