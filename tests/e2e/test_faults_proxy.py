"""Slow, hanging, garbling and crashing workers, with real processes: real SmolLM2 ``ppd-worker``
processes (1 prefill, 2 decode), each behind a fault-injecting proxy process (``tests/faultproxy.py``),
a real ``ppd-server`` over the proxies, the real SDK (``ChatSession`` with ``max_retries=0``, so every
failure the router lets through is counted as client-visible).

``test_fault_matrix``: for each fault (reset, garbage, hang before / after the headers, slow, on a
decode worker; delay, hang, reset, garbage on the prefill worker), a fresh router, then a few turns
while the fault is on, then the fault cleared: it prints one row per fault - turns served, client-
visible failures, the router's retries (before the first byte), requests the proxy faulted (the
circuit breaker keeps that low), the slowest turn, and how long after the fault was cleared the
worker was back in service. Rows feed the fault table of docs/operations.md.

``test_slow_decode_added_latency``: the healthy sessions' turn latency p50/p99 with and without one
slow decode worker, in the same run.

Bounded: short answers, a few turns per row; every process ended by PID.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from processes import Process, free_port, router_argv, worker_argv

from ppd_sdk import ChatSession

pytestmark = pytest.mark.e2e

PROXY = Path(__file__).resolve().parents[1] / "faultproxy.py"
FIRST_BYTE_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 10.0
BREAKER_COOLDOWN_S = 2.0
MAX_TOKENS = 12


def _proxy(tmp: Path, name: str, upstream: str) -> Process:
    port = free_port()
    argv = [sys.executable, str(PROXY), "--port", str(port), "--upstream", upstream]
    return Process(f"proxy-{name}", argv, port, tmp / f"proxy-{name}.log")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict[str, Process]]:
    """prefill, decode1, decode2 (real SmolLM2) and a proxy in front of each."""
    tmp = tmp_path_factory.mktemp("faultproxy")
    bootstrap = free_port()
    decode_args = (
        "--disaggregation-mode",
        "decode",
        "--disaggregation-decode-enable-radix-cache",
        "--disaggregation-decode-enable-conditional-agg",
    )
    with ExitStack() as stack:
        procs: dict[str, Process] = {}
        for name, args in (
            ("prefill", ("--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(bootstrap))),
            ("decode1", decode_args),
            ("decode2", decode_args),
        ):
            port = free_port()
            procs[name] = Process(name, worker_argv(port, "--model", "smollm2", *args), port, tmp / f"{name}.log")
            stack.callback(procs[name].stop)
        for p in list(procs.values()):
            p.wait_healthy(timeout=240)
        for name in ("prefill", "decode1", "decode2"):
            proxy = _proxy(tmp, name, procs[name].url)
            stack.callback(proxy.stop)
            proxy.wait_healthy(timeout=30)
            procs["p-" + name] = proxy
        procs["p-prefill"].bootstrap_port = bootstrap
        yield procs


def _router(c: dict[str, Process], *extra: str) -> Process:
    port = free_port()
    args = [
        "--policy", "ppd", "--load-interval", "0.3", "--max-retries", "2",
        "--first-byte-timeout", str(FIRST_BYTE_TIMEOUT_S), "--request-timeout", str(REQUEST_TIMEOUT_S),
        "--breaker-cooldown", str(BREAKER_COOLDOWN_S), "--breaker-max-cooldown", "8",
        "--prefill", c["p-prefill"].url, str(c["p-prefill"].bootstrap_port),
        "--decode", c["p-decode1"].url, "--decode", c["p-decode2"].url, *extra,
    ]  # fmt: skip
    router = Process("router", router_argv(port, *args), port)
    router.wait_healthy(timeout=60)
    return router


def _fault(proxy: Process, mode: str, **kw: float) -> dict:
    return httpx.post(proxy.url + "/_fault", json={"mode": mode, **kw}, timeout=5).json()


def _retries(router: Process) -> float:
    text = httpx.get(router.url + "/metrics", timeout=5).text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("ppd_retries_total"))


def _healthy(router: Process, url: str) -> bool:
    workers = httpx.get(router.url + "/admin/workers", timeout=5).json()["workers"]
    return any(w["url"] == url and w["healthy"] for w in workers)


def _turn(chat: ChatSession, text: str, stream: bool) -> tuple[float, str | None]:
    """One turn; (seconds, decode URL that served it)."""
    t0 = time.perf_counter()
    if stream:
        with chat.stream(text, max_tokens=MAX_TOKENS) as s:
            for _ in s:
                pass
        reply = s.reply
    else:
        reply = chat.send(text, max_tokens=MAX_TOKENS)
    return time.perf_counter() - t0, reply.route.decode if reply.route else None


FAULTS = [
    # (target, mode, params, streamed turns)
    ("decode1", "reset", {}, True),
    ("decode1", "garbage", {}, False),
    ("decode1", "hang_after_headers", {}, True),
    ("decode1", "hang", {}, True),
    ("decode1", "slow", {"delay_s": 0.25}, True),
    ("prefill", "delay", {"delay_s": 2.0}, True),
    ("prefill", "reset", {}, True),
    ("prefill", "garbage", {}, True),
    ("prefill", "hang", {}, True),
]


@pytest.mark.parametrize(
    ("target", "mode", "params", "stream"),
    FAULTS,
    ids=[f"{f[0]}-{f[1]}" for f in FAULTS],
)
def test_fault(cluster: dict[str, Process], target: str, mode: str, params: dict, stream: bool) -> None:
    proxy = cluster["p-" + target]
    with ExitStack() as stack:
        router = _router(cluster)
        stack.callback(router.stop)
        stack.callback(lambda: _fault(proxy, "pass"))
        warm = stack.enter_context(ChatSession(base_url=router.url + "/v1", max_retries=0, timeout=60))
        _turn(warm, "Say hi.", stream)  # the router has seen the fleet answer
        retries0 = _retries(router)
        before = _fault(proxy, mode, **params)  # the proxy's counters run on across tests
        failures, times, decodes, errors = 0, [], [], []
        for i in range(2):  # a fresh conversation (turn 1, P->D) and its second turn
            chat = stack.enter_context(ChatSession(base_url=router.url + "/v1", max_retries=0, timeout=60))
            for text in (f"Name a fruit, number {i}.", "And a colour."):
                try:
                    secs, dec = _turn(chat, text, stream)
                    times.append(secs)
                    decodes.append(dec)
                except Exception as e:  # client-visible
                    failures += 1
                    errors.append(f"{type(e).__name__}:{getattr(e, 'code', '')}")
        state = _fault(proxy, "pass")
        cleared = time.monotonic()
        back = None
        while time.monotonic() - cleared < 20:
            if _healthy(router, proxy.url):
                back = time.monotonic() - cleared
                break
            time.sleep(0.1)
        retries = _retries(router) - retries0
        faulted = state["faulted"] - before["faulted"]
        print(
            f"\nfault {target}:{mode}{params or ''} stream={stream}: turns ok={len(times)} of 4, "
            f"client-visible failures={failures} {errors}, router retries={retries:.0f}, "
            f"requests faulted at the proxy={faulted} of {state['requests'] - before['requests']}, "
            f"slowest turn={max(times or [0]):.2f}s median={statistics.median(times or [0]):.2f}s, "
            f"decode workers used={len({d for d in decodes if d})}, back in service "
            f"{f'{back:.2f}s' if back is not None else 'not within 20s'} after the fault cleared"
        )
        assert back is not None, f"{target} never came back after {mode}"
        assert failures == 0, errors


def _phase(chats: list[ChatSession], turns: int, label: str) -> list[tuple[float, str | None, str]]:
    """Every session sends ``turns`` streamed turns, all sessions concurrently: (seconds, decode, conversation)."""
    out: list[tuple[float, str | None, str]] = []
    lock = threading.Lock()

    def run(i: int, chat: ChatSession) -> None:
        for t in range(turns):
            secs, dec = _turn(chat, f"Session {i}, {label} {t}: name a city.", True)
            with lock:
                out.append((secs, dec, chat.conversation_id))

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(chats)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


def test_slow_decode_added_latency(cluster: dict[str, Process]) -> None:
    """Sessions are placed on both decode workers by their first turn (concurrent, so the policy
    spreads them by load), then keep their worker (D-local turns). Phase A: 2 more turns each, no
    fault; phase B: 2 more turns each while decode1 relays every chunk 0.5 s late. The figure: the
    turn latency of the sessions on the healthy decode2, A vs B (same sessions, same run)."""
    slow_url, healthy_url = cluster["p-decode1"].url, cluster["p-decode2"].url
    with ExitStack() as stack:
        router = _router(cluster)
        stack.callback(router.stop)
        chats = [stack.enter_context(ChatSession(base_url=router.url + "/v1", max_retries=0, timeout=120))]
        _phase(chats, 1, "warm")
        chats = [
            stack.enter_context(ChatSession(base_url=router.url + "/v1", max_retries=0, timeout=120)) for _ in range(6)
        ]
        placed = _phase(chats, 1, "turn one")
        homes = {cid: dec for _, dec, cid in placed}
        on = {u: sum(1 for h in homes.values() if h == u) for u in (slow_url, healthy_url)}
        base = _phase(chats, 2, "phase A")
        stack.callback(lambda: _fault(cluster["p-decode1"], "pass"))
        _fault(cluster["p-decode1"], "slow", delay_s=0.5)
        slow = _phase(chats, 2, "phase B")
        _fault(cluster["p-decode1"], "pass")
    healthy_a = [t for t, d, _ in base if d == healthy_url]
    healthy_b = [t for t, d, _ in slow if d == healthy_url]
    slow_a = [t for t, d, _ in base if d == slow_url]
    slow_b = [t for t, d, _ in slow if d == slow_url]
    print(
        f"\nslow decode: decode1 relays every chunk 0.5 s late (the worker itself is fine), 6 concurrent "
        f"streaming sessions ({on[slow_url]} on decode1, {on[healthy_url]} on decode2 after turn 1), "
        f"2 turns each per phase, {MAX_TOKENS} tokens:\n"
        f"  sessions on healthy decode2: without the slow worker n={len(healthy_a)} p50={_pct(healthy_a, 0.5):.2f}s "
        f"p99={_pct(healthy_a, 0.99):.2f}s; with it n={len(healthy_b)} p50={_pct(healthy_b, 0.5):.2f}s "
        f"p99={_pct(healthy_b, 0.99):.2f}s\n"
        f"  sessions on slow decode1:    without n={len(slow_a)} p50={_pct(slow_a, 0.5):.2f}s; "
        f"with n={len(slow_b)} p50={_pct(slow_b, 0.5):.2f}s p99={_pct(slow_b, 0.99):.2f}s\n"
        f"  turn one: {[round(t, 2) for t, _, _ in placed]} s"
    )
    assert len(base) == len(slow) == 12
    assert healthy_a and healthy_b, f"no session on the healthy decode worker: {on}"
