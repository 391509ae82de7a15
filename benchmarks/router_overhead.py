"""Router overhead: ppd-server (with its own HTTP/1.1 worker client, and with aiohttp's client in
its place), optionally ppd-server from another checkout (``--baseline-tree``: before/after a
change) and sglang-router 0.3.2, all in front of the SAME instant fake workers, in one run.

    python benchmarks/router_overhead.py [--requests 2000] [--seconds 4] [--concurrency 32]
                                         [--baseline-tree DIR] [--skip-sglang]

Processes: one fake prefill + one fake decode SGLang worker (this file, ``--serve-fake``: a
minimal keep-alive HTTP/1.1 server answering instantly with canned bodies; a ``"stream": true``
request gets a chunked SSE answer) and one router at a time, pinned to core 0 (``taskset``); the
fakes and this load generator share the other core(s). The load generator is a raw asyncio
keep-alive client (cheap, so it is not the bottleneck).

Figures (``POST /v1/chat/completions``, max_tokens 1, P->D for every router), for a
non-streaming and a streaming (SSE, usage chunk) request:
* latency: sequential requests; p50/p99 direct to the fake decode, and through each router;
  "added" = router p50/p99 - direct p50/p99;
* throughput: ``--concurrency`` connections for ``--seconds`` (after a warm-up): requests/s, and
  the router's own CPU time per request (/proc, all threads), whose inverse is the request rate
  one fully available core would sustain - robust when other processes share the machine.
Everything is bounded by counts and time; every process started here is ended by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

_INFO = {
    "disaggregation_mode": "{mode}",
    "disaggregation_bootstrap_port": 0,
    "model_path": "fake/fake-model",
    "served_model_name": "fake-model",
    "max_total_num_tokens": 1_000_000,
    "kv_bytes_per_token": 1000,
    "disaggregation_decode_enable_radix_cache": True,
    "disaggregation_decode_enable_conditional_agg": True,
    "page_size": 1,
    "dp_size": 1,
}
_CHAT = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 1,
            "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
).encode()
_BODY = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
_STREAM_BODY = json.dumps(
    {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


def _sse_answer() -> bytes:
    """A whole streamed chat answer (role, one token, finish, usage, [DONE]) as HTTP/1.1 chunks."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake-model"}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 1,
                "total_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        },
    ]
    out = b""
    for data in [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]:
        out += f"{len(data):x}\r\n".encode() + data + b"\r\n"
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + out + b"0\r\n\r\n"
    )


# --- the instant fake worker ----------------------------------------------------------------


def _responses(mode: str) -> dict[str, bytes]:
    info = json.dumps(_INFO).replace("{mode}", mode).encode()
    loads = json.dumps(
        {
            "timestamp": 0,
            "version": "fake",
            "loads": [
                {
                    "dp_rank": 0,
                    "num_running_reqs": 0,
                    "num_waiting_reqs": 0,
                    "num_used_tokens": 0,
                    "max_total_num_tokens": 1_000_000,
                }
            ],
        }
    ).encode()
    models = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "sglang"}]})
    model_info = json.dumps(
        {
            "model_path": "fake/fake-model",
            "tokenizer_path": "fake/fake-model",
            "is_generation": True,
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
        }
    )
    gen = json.dumps(
        {
            "text": "x",
            "output_ids": [1],
            "meta_info": {
                "id": "g",
                "prompt_tokens": 9,
                "completion_tokens": 1,
                "cached_tokens": 0,
                "finish_reason": {"type": "length", "length": 1},
            },
        }
    ).encode()
    return {
        "/health": b"",
        "/health_generate": b"",
        "/server_info": info,
        "/get_server_info": info,
        "/v1/loads": loads,
        "/model_info": model_info.encode(),
        "/get_model_info": model_info.encode(),
        "/v1/models": models.encode(),
        "/get_load": b"[]",
        "/v1/chat/completions": _CHAT,
        "/v1/completions": _CHAT,
        "/generate": gen,
    }


class _FakeWorker(asyncio.Protocol):
    def __init__(self, responses: dict[str, bytes]) -> None:
        self.responses = responses
        self.stream_answer = _sse_answer()
        self.buf = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1"):  # e.g. a gRPC / HTTP/2 preface
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()
                return
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            rest = self.buf[end + 4 :]
            if headers.get("transfer-encoding", "").lower() == "chunked":
                done = rest.find(b"0\r\n\r\n")
                if done < 0:
                    return
                request_body, self.buf = rest[:done], rest[done + 5 :]
            else:
                n = int(headers.get("content-length", "0"))
                if len(rest) < n:
                    return
                request_body, self.buf = rest[:n], rest[n:]
            path = parts[1].split("?")[0]
            streamed = b'"stream": true' in request_body or b'"stream":true' in request_body
            if path == "/v1/chat/completions" and streamed:
                self.transport.write(self.stream_answer)
                continue
            body = self.responses.get(path)
            status = b"200 OK" if body is not None else b"404 Not Found"
            body = body if body is not None else b""
            self.transport.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )


def serve_fake(mode: str, port: int) -> None:
    _use_uvloop()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: _FakeWorker(_responses(mode)), "127.0.0.1", port))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()


# --- the load generator ---------------------------------------------------------------------


class _Conn:
    """One keep-alive HTTP/1.1 connection sending the canned POST and reading whole answers."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str, body: bytes
    ) -> None:
        self.reader, self.writer = reader, writer
        self.request = (
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def call(self) -> int:
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status


async def _connect(url: str, path: str, body: bytes = _BODY) -> _Conn:
    host = url.split("//", 1)[1]
    h, p = host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(h, int(p))
    return _Conn(reader, writer, host, path, body)


async def measure_latency(url: str, n: int, body: bytes) -> list[float]:
    conn = await _connect(url, "/v1/chat/completions", body)
    for _ in range(min(200, n)):  # warm-up
        await conn.call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status = await conn.call()
        out.append((time.perf_counter() - t0) * 1000.0)
        if status != 200:
            raise RuntimeError(f"{url} answered {status}")
    conn.writer.close()
    return out


async def measure_throughput(url: str, concurrency: int, seconds: float, body: bytes) -> tuple[float, int]:
    conns = [await _connect(url, "/v1/chat/completions", body) for _ in range(concurrency)]
    counting = False
    done = errors = 0
    stop_at = time.perf_counter() + 0.5 + seconds

    async def worker(c: _Conn) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            status = await c.call()
            if counting:
                done += status == 200
                errors += status != 200

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    await asyncio.sleep(0.5)
    counting, t0 = True, time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 30)
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.writer.close()
    return done / elapsed, errors


# --- orchestration --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    async def probe() -> bool:
        try:
            conn = await asyncio.wait_for(_connect(url, "/v1/chat/completions"), 2)
            ok = await asyncio.wait_for(conn.call(), 5) == 200
            conn.writer.close()
            return ok
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return False

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        if asyncio.run(probe()):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


def _start(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def _use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def serve_router(client: str, argv: list[str]) -> int:
    """ppd-server exactly as ``python -m ppd_server`` runs it, with its worker client swapped for
    aiohttp's when ``client == "aiohttp"`` (the only difference between the two rows)."""
    if client == "aiohttp":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from aiohttp_upstream import AiohttpPool

        import ppd_server.http.app as app_module

        app_module.UpstreamPool = AiohttpPool  # type: ignore[misc,assignment]
    from ppd_server.cli import main as ppd_server_main

    return ppd_server_main(argv)


MODES = (("non-streaming", _BODY), ("streaming", _STREAM_BODY))


def _measure_router(name: str, argv: list[str], env: dict, args: argparse.Namespace) -> list[tuple]:
    port = _free_port()
    proc = _start(argv + ["--host", "127.0.0.1", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        _wait_ready(url, 120, proc)
        for mode, body in MODES:
            lat = asyncio.run(measure_latency(url, args.requests, body))
            cpu0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
            rps, errors = asyncio.run(measure_throughput(url, args.concurrency, args.seconds, body))
            cpu_per_req_us = (_cpu_seconds(proc.pid) - cpu0) / max(1.0, rps * (time.perf_counter() - t0)) * 1e6
            rows.append((mode, name, lat, (rps, errors, cpu_per_req_us)))
    finally:
        _stop(proc)
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
            )
        out.append((mode, name, lat, thr))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve-fake", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
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
    if args.serve_fake:
        serve_fake(args.serve_fake[0], int(args.serve_fake[1]))
        return 0
    if args.requests < 1 or args.seconds <= 0 or args.concurrency < 1 or args.rounds < 1:
        ap.error("--requests, --seconds, --concurrency and --rounds must be positive")
    if args.baseline_tree and not os.path.isdir(os.path.join(args.baseline_tree, "server", "ppd_server")):
        ap.error(f"--baseline-tree {args.baseline_tree!r} is not a PPD checkout (no server/ppd_server)")
    _use_uvloop()
    cores = sorted(os.sched_getaffinity(0))
    others = [c for c in cores if c != args.router_core] or cores
    os.sched_setaffinity(0, set(others))  # the load generator and the fakes stay off the router's core
    pin = ["taskset", "-c", str(args.router_core)]
    procs: list[subprocess.Popen] = []
    try:
        p_port, d_port, boot = _free_port(), _free_port(), _free_port()
        prefill = _start([sys.executable, __file__, "--serve-fake", "prefill", str(p_port)])
        decode = _start([sys.executable, __file__, "--serve-fake", "decode", str(d_port)])
        procs += [prefill, decode]
        p_url, d_url = f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{d_port}"
        _wait_ready(d_url, 20, decode)
        _wait_ready(p_url, 20, prefill)
        rows = [
            (mode, "direct to fake decode", asyncio.run(measure_latency(d_url, args.requests, body)), None)
            for mode, body in MODES
        ]
        workers = ["--prefill", p_url, str(boot), "--decode", d_url, "--log-level", "warning"]
        routers = [
            ("ppd-server, upstream.py", pin + [sys.executable, __file__, "--serve-router", "upstream", *workers], {}),
            ("ppd-server, aiohttp client", pin + [sys.executable, __file__, "--serve-router", "aiohttp", *workers], {}),
        ]
        if args.baseline_tree:
            tree = os.path.abspath(args.baseline_tree)
            path = os.pathsep.join(os.path.join(tree, d) for d in ("", "server", "kernels", "integrations"))
            routers.append(
                (
                    "ppd-server, baseline tree",
                    pin + [sys.executable, "-m", "ppd_server", *workers],
                    {"PYTHONPATH": path},
                )
            )
        if not args.skip_sglang:
            blackhole = "http://127.0.0.1:9"  # sglang-protocol.md §1: its tokenizer fetch fails fast
            env = {
                "HF_ENDPOINT": blackhole,
                "HTTP_PROXY": blackhole,
                "HTTPS_PROXY": blackhole,
                "http_proxy": blackhole,
                "https_proxy": blackhole,
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
            routers.append(
                (
                    "sglang-router 0.3.2 (pd)",
                    pin
                    + [
                        sys.executable,
                        "-m",
                        "sglang_router.launch_router",
                        "--pd-disaggregation",
                        "--prefill",
                        p_url,
                        str(boot),
                        "--decode",
                        d_url,
                        "--policy",
                        "round_robin",
                        "--log-level",
                        "warn",
                    ],
                    env,
                )
            )
        for _ in range(args.rounds):  # interleaved: a load drift on a shared box hits every router alike
            for name, argv, env in routers:
                rows += _measure_router(name, argv, env, args)
        rows = _merge_rounds(rows)
        print(
            f"\nrouter overhead: chat completions, P->D to instant fakes; router pinned to core {args.router_core}; "
            f"{args.requests} sequential requests; {args.concurrency} connections x {args.seconds:g}s; "
            f"{args.rounds} round(s)"
        )
        for mode, _ in MODES:
            print(f"\n{mode}")
            print(
                f"{'path':<30}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{'req/s':>10}{'errors':>8}"
                f"{'CPU us/req':>12}{'req/s per CPU-s':>17}"
            )
            direct = next(lat for m, name, lat, thr in rows if m == mode and thr is None)
            d50, d99 = _pct(direct, 50), _pct(direct, 99)
            for m, name, lat, thr in rows:
                if m != mode:
                    continue
                p50, p99 = _pct(lat, 50), _pct(lat, 99)
                added = f"{p50 - d50:>11.3f}{p99 - d99:>11.3f}" if thr else f"{'-':>11}{'-':>11}"
                tput = (
                    f"{thr[0]:>10.0f}{thr[1]:>8d}{thr[2]:>12.0f}{1e6 / thr[2]:>17.0f}"
                    if thr
                    else f"{'-':>10}{'-':>8}{'-':>12}{'-':>17}"
                )
                print(f"{name:<30}{p50:>9.3f}{p99:>9.3f}{added}{tput}")
    finally:
        for proc in procs:
            _stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
