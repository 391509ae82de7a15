"""Load test of ppd-server over fast fake workers: nothing lost, nothing duplicated, memory and the
session table bounded. Real HTTP between real processes (router, fake prefill, fake decode, this
load generator); everything bounded in count and time; every process ended by PID.

    python benchmarks/router_load.py [--sessions 1000] [--seconds 60] [--turns 4] [--tokens 8]
        [--token-interval-ms 250] [--conversations 100000] [--churn-concurrency 64]
        [--max-sessions 10000] [--json OUT]

Phases, one router process throughout:
A. churn: ``--conversations`` distinct conversations, one non-streamed turn each, over
   ``--churn-concurrency`` connections - far more conversations than the router's
   ``--max-sessions``, so its session table must evict (LRU) to stay bounded;
B. streams: ``--sessions`` concurrent streaming sessions for ``--seconds``, each a loop of
   multi-turn conversations (``--turns`` turns, the history growing), every answer ``--tokens``
   token events paced ``--token-interval-ms`` apart by the fake decode.

Every request carries a unique ``x-request-id``. Proven at the end, and printed:
* exactly once at the client: every id got one 200 whose SSE ends with ``[DONE]``, no error event,
  the right token count, its own id echoed back;
* exactly once at the workers (``instant_worker.py --count-ids``): every id reached the decode
  worker once, and the prefill worker once if its route was P->D, never otherwise; no unknown id;
* router RSS (/proc VmRSS, sampled each second): growth over phase B after its first
  ``--warmup-s`` seconds (the table already at its bound, every connection open: a leak shows
  here), and, for the record, from the start of phase B and from the idle start;
* and the router's own count (``ppd_requests_total``) equal to the requests sent;
* the session table size (``/admin/sessions``) never above ``--max-sessions``;
* router CPU seconds per request in each phase (/proc utime+stime), and the load average.
``--embedded 1P1D``: the same run against ``ppd-server --embedded 1P1D`` (real ppd-worker
processes, SmolLM2 on CPU) instead of the fakes - a sustained multi-turn run on the real stack;
the workers do not count ids, so exactly-once is checked at the client and by the router's count,
and a stream's token count is not fixed (the model may stop early). Size it to the machine, e.g.
``--embedded 1P1D --sessions 8 --seconds 60 --tokens 8 --conversations 200 --churn-concurrency 4
--max-sessions 50``.

Exit status 1 if any check fails (RSS growth >= 10% after the warm-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import bench_client as bc
import bench_procs as bp
from load_checks import PROBE, Tally, exactly_once, verdict


def _chat(messages: list[dict], stream: bool, max_tokens: int) -> bytes:
    body: dict = {"model": "fake-model", "messages": messages, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


async def _one(conn: bc.Conn, tally: Tally, rid: str, conv: str, body: bytes, stream: bool, tokens: int | None) -> str:
    """One turn; records the outcome; returns the assistant text ('' on failure). ``tokens``: the
    token events a stream must carry (None: a real model, which may stop early)."""
    tally.sent.append(rid)
    request = conn.request_bytes("/v1/chat/completions", body, {"x-request-id": rid, "X-PPD-Conversation-Id": conv})
    status, headers, raw = await conn.call(request, keep_body=True)
    if status != 200:
        tally.fail(rid, f"HTTP {status}: {raw[:200]!r}")
        return ""
    if headers.get("x-request-id") != rid:
        tally.fail(rid, f"answer echoes x-request-id {headers.get('x-request-id')!r}")
        return ""
    route = headers.get("x-ppd-route", "?")
    if not stream:
        text = json.loads(raw)["choices"][0]["message"]["content"]
    else:
        events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            tally.fail(rid, f"stream without [DONE]: {raw[-200:]!r}")
            return ""
        objs = [json.loads(e) for e in events[:-1]]
        if any("error" in o for o in objs):
            tally.fail(rid, f"error event: {events[-2][:200]}")
            return ""
        deltas = [c["delta"].get("content") or "" for o in objs for c in o.get("choices", [])]
        n_tokens = sum(1 for d in deltas if d)
        if tokens is not None and n_tokens != tokens:
            tally.fail(rid, f"{n_tokens} token events, expected {tokens}")
            return ""
        tally.tokens += n_tokens
        text = "".join(deltas) or "(nothing)"
    tally.answered[rid] += 1
    tally.routes[rid] = route
    return text


async def churn(url: str, tally: Tally, conversations: int, concurrency: int) -> None:
    """Phase A: ``conversations`` distinct single-turn conversations, non-streamed."""
    next_i = iter(range(conversations))

    async def loop() -> None:
        conn = await bc.connect(url)
        try:
            for i in next_i:
                body = _chat([{"role": "user", "content": f"hello {i}"}], False, 1)
                await _one(conn, tally, f"a-{i}", f"conv-a-{i}", body, False, 1)
        finally:
            conn.close()

    await asyncio.gather(*(loop() for _ in range(concurrency)))


async def streams(
    url: str, tally: Tally, sessions: int, seconds: float, turns: int, tokens: int, exact_tokens: bool
) -> int:
    """Phase B: ``sessions`` concurrent multi-turn streaming sessions for ``seconds``; returns the
    number of distinct conversations started."""
    stop_at = time.monotonic() + seconds
    started = 0

    async def session(s: int) -> None:
        nonlocal started
        conn = await bc.connect(url)
        n = k = 0
        try:
            while time.monotonic() < stop_at:
                conv, history = f"conv-b-{s}-{k}", []
                started += 1
                for _ in range(turns):
                    if time.monotonic() >= stop_at:
                        break
                    history.append({"role": "user", "content": f"turn {len(history) // 2 + 1} of {conv}"})
                    text = await _one(
                        conn,
                        tally,
                        f"b-{s}-{n}",
                        conv,
                        _chat(history, True, tokens),
                        True,
                        tokens if exact_tokens else None,
                    )
                    n += 1
                    if not text:
                        break
                    history.append({"role": "assistant", "content": text})
                k += 1
        finally:
            conn.close()

    # connections opened gradually (50 per 10 ms), as real clients arrive, not one SYN flood
    tasks = []
    for s in range(sessions):
        tasks.append(asyncio.create_task(session(s)))
        if s % 50 == 49:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 120)
    return started


async def sample(pid: int, admin: str, out: list[tuple[float, int, int]], stop: asyncio.Event) -> None:
    """Every second: (time, router VmRSS KiB, session table size)."""
    while not stop.is_set():
        try:
            table = (await asyncio.to_thread(bp.get_json, admin, 10.0))["count"]
        except OSError:
            table = -1
        out.append((time.monotonic(), bp.rss_kib(pid), table))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


def _router_counted(url: str) -> int:
    """The router's own count of routed requests (``ppd_requests_total``, all labels)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return round(sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("ppd_requests_total{")))


async def _wait_serving(url: str, timeout_s: float, proc) -> None:
    """Until a chat turn through the router answers 200 (an embedded cluster loads its model first)."""
    bp.wait_http(url + "/health", timeout_s, proc)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = await bc.connect(url)
            status, _, _ = await conn.call(
                conn.request_bytes(
                    "/v1/chat/completions",
                    _chat([{"role": "user", "content": "hi"}], False, 1),
                    {"x-request-id": f"{PROBE}{time.monotonic_ns()}"},
                )
            )
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{url} does not serve chat turns")
        await asyncio.sleep(1.0)


async def run(args: argparse.Namespace) -> dict:
    p_port, d_port, boot, r_port = bp.free_port(), bp.free_port(), bp.free_port(), bp.free_port()
    p_url, d_url, url = (f"http://127.0.0.1:{p}" for p in (p_port, d_port, r_port))
    procs = []
    bound = ["--max-sessions", str(args.max_sessions), "--max-queue-per-worker", "0"]  # not admission control
    try:
        if args.embedded:  # real ppd-worker processes (SmolLM2): no worker-side counts
            argv = [sys.executable, "-m", "ppd_server", "--embedded", args.embedded, "--model", args.model]
            argv += ["--host", "127.0.0.1", "--port", str(r_port), "--log-level", "warning", *bound]
            router = bp.start(argv, log=args.router_log)
            procs.append(router)
        else:
            tok = ["--tokens", str(args.tokens), "--token-interval-ms", str(args.token_interval_ms), "--count-ids"]
            procs.append(bp.start(bp.worker_argv("prefill", p_port, "--count-ids")))
            procs.append(bp.start(bp.worker_argv("decode", d_port, *tok)))
            bp.wait_http(p_url + "/health", 30, procs[0])
            bp.wait_http(d_url + "/health", 30, procs[1])
            router = bp.start(bp.ppd_argv(p_url, boot, d_url, r_port, *bound), log=args.router_log)
            procs.append(router)
        await _wait_serving(url, 600 if args.embedded else 120, router)
        warmup_count = _router_counted(url)
        pid = router.pid
        samples: list[tuple[float, int, int]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(pid, url + "/admin/sessions?limit=0", samples, stop))
        rss_idle = bp.rss_kib(pid)
        load = {"start": bp.loadavg()}
        tally = Tally()

        cpu0, t0 = bp.cpu_seconds(pid), time.monotonic()
        await churn(url, tally, args.conversations, args.churn_concurrency)
        cpu1, t1 = bp.cpu_seconds(pid), time.monotonic()
        n_a = len(tally.sent)
        load["after_churn"] = bp.loadavg()
        rss_b0 = bp.rss_kib(pid)
        conv_b = await streams(
            url, tally, args.sessions, args.seconds, args.turns, args.tokens, exact_tokens=not args.embedded
        )
        cpu2, t2 = bp.cpu_seconds(pid), time.monotonic()
        load["end"] = bp.loadavg()
        rss_end = bp.rss_kib(pid)
        stop.set()
        await sampler
        table_now = bp.get_json(url + "/admin/sessions?limit=0")["count"]
        router_counted = _router_counted(url) - warmup_count
        decode_ids = prefill_ids = None
        if not args.embedded:
            decode_ids = bp.get_json(d_url + "/_instant/ids", 60)["ids"]
            prefill_ids = bp.get_json(p_url + "/_instant/ids", 60)["ids"]
    finally:
        for proc in reversed(procs):  # the router first (it stops its embedded cluster)
            bp.stop(proc)
    n_b = len(tally.sent) - n_a
    # the leak check starts once every session's connections exist and served a few turns
    warm = [s for s in samples if s[0] >= t1 + args.warmup_s]
    rss_warm = warm[0][1] if warm else rss_b0
    rss_b_max = max([s[1] for s in warm] + [rss_end])
    return {
        "conditions": {
            "sessions": args.sessions,
            "seconds": args.seconds,
            "turns": args.turns,
            "tokens": args.tokens,
            "token_interval_ms": args.token_interval_ms,
            "conversations_churn": args.conversations,
            "churn_concurrency": args.churn_concurrency,
            "max_sessions": args.max_sessions,
            "workers": f"embedded {args.embedded} ({args.model})" if args.embedded else "instant_worker.py 1P1D",
            "load_average": load,
        },
        "exactly_once": {**exactly_once(tally, decode_ids, prefill_ids), "router_counted": router_counted},
        "failures": tally.failed,
        "failure_examples": tally.failures,
        "distinct_conversations": args.conversations + conv_b,
        "session_table": {
            "max_seen": max([s[2] for s in samples] + [table_now]),
            "at_end": table_now,
            "bound": args.max_sessions,
        },
        "rss_kib": {
            "idle": rss_idle,
            "phase_b_start": rss_b0,
            "phase_b_after_warmup": rss_warm,
            "phase_b_max_after_warmup": rss_b_max,
            "end": rss_end,
            "growth_after_warmup_pct": round(100.0 * (rss_b_max - rss_warm) / rss_warm, 2),
            "growth_over_phase_b_pct": round(100.0 * (rss_b_max - rss_b0) / rss_b0, 2),
            "growth_from_idle_pct": round(100.0 * (rss_b_max - rss_idle) / rss_idle, 2),
        },
        "phase_a": {
            "requests": n_a,
            "req_per_s": round(n_a / (t1 - t0), 1),
            "router_cpu_us_per_request": round((cpu1 - cpu0) / max(1, n_a) * 1e6, 1),
        },
        "phase_b": {
            "requests": n_b,
            "conversations": conv_b,
            "req_per_s": round(n_b / (t2 - t1), 1),
            "token_events_per_s": round(tally.tokens / (t2 - t1), 1),
            "router_cpu_us_per_request": round((cpu2 - cpu1) / max(1, n_b) * 1e6, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000, help="concurrent streaming sessions (default 1000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the streaming phase (default 60)")
    ap.add_argument("--turns", type=int, default=4, help="turns per conversation (default 4)")
    ap.add_argument("--tokens", type=int, default=8, help="token events per streamed answer (default 8)")
    ap.add_argument("--token-interval-ms", type=float, default=250.0, help="fake decode pace (default 250)")
    ap.add_argument("--conversations", type=int, default=100_000, help="distinct conversations in phase A")
    ap.add_argument("--churn-concurrency", type=int, default=64, help="connections in phase A (default 64)")
    ap.add_argument("--max-sessions", type=int, default=10_000, help="the router's session table bound")
    ap.add_argument(
        "--warmup-s", type=float, default=10.0, help="phase B seconds before the RSS baseline is taken (default 10)"
    )
    ap.add_argument(
        "--embedded", metavar="LAYOUT", help="real workers: ppd-server --embedded LAYOUT (e.g. 1P1D) instead of fakes"
    )
    ap.add_argument("--model", default="smollm2", help="the embedded cluster's model (default smollm2)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    ap.add_argument("--router-log", metavar="FILE", help="the router's stdout/stderr (default: discarded)")
    args = ap.parse_args(argv)
    if min(args.sessions, args.turns, args.tokens, args.churn_concurrency, args.max_sessions) < 1:
        ap.error("--sessions, --turns, --tokens, --churn-concurrency and --max-sessions must be >= 1")
    if args.seconds <= 0 or args.conversations < 0 or args.token_interval_ms < 0:
        ap.error("--seconds must be > 0, --conversations and --token-interval-ms >= 0")
    bp.raise_fd_limit(4 * args.sessions + 1024)
    result = bp.async_runner()(run(args))
    bad = verdict(result)
    result["failed_checks"] = bad
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print("\nrouter_load: " + ("PASS" if not bad else "FAIL: " + "; ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
