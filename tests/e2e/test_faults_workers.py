"""Worker faults with real processes: real SmolLM2 ``ppd-worker`` processes (prefill and decode),
a real ``ppd-server`` over them, the real SDK (``ChatSession`` over the ``openai`` client).
Workers are SIGKILLed by PID; every process is ended by PID at the end. Bounded: a few short
sessions, small ``max_tokens``; each test prints its figures (the fault table of
docs/operations.md).

* decode SIGKILLed while sessions stream on it: a stream cut after tokens ends with an SSE error
  event + ``[DONE]`` (never a truncated body or a hang); the next turn of every affected session
  goes P->D to the healthy decode with no client-visible failure and a consistent history; the
  restarted worker is probed back in (no router restart).
* prefill SIGKILLed: turn 2+ flows D-local, and so does turn 1 (full prefill on a decode worker
  that can prefill); with the decode worker dead too no path is left: 503 with ``Retry-After``;
  the restarted workers are probed back in and P->D resumes (no router restart).
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from processes import Process, free_port, router_argv, worker_argv

from ppd_sdk import ChatSession

pytestmark = pytest.mark.e2e

SYSTEM = "You are terse."
MAX_TOKENS = 24


def _worker(tmp: Path, name: str, port: int, *args: str) -> Process:
    return Process(
        name, worker_argv(port, "--model", "smollm2", *args), port, tmp / f"{name}-{time.monotonic_ns()}.log"
    )


def _prefill(tmp: Path, port: int, bootstrap: int) -> Process:
    return _worker(
        tmp, "prefill", port, "--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(bootstrap)
    )


def _decode(tmp: Path, name: str, port: int) -> Process:
    return _worker(
        tmp,
        name,
        port,
        "--disaggregation-mode",
        "decode",
        "--disaggregation-decode-enable-radix-cache",
        "--disaggregation-decode-enable-conditional-agg",
    )


def _router(prefill: Process, bootstrap: int, decodes: list[Process]) -> Process:
    port = free_port()
    args = ["--policy", "ppd", "--load-interval", "0.3", "--prefill", prefill.url, str(bootstrap)]
    for d in decodes:
        args += ["--decode", d.url]
    router = Process("router", router_argv(port, *args), port)
    router.wait_healthy(timeout=120)
    return router


def _healthy(router: Process, url: str) -> bool:
    workers = httpx.get(router.url + "/admin/workers", timeout=5).json()["workers"]
    return any(w["url"] == url and w["healthy"] for w in workers)


def _wait(cond, timeout_s: float) -> float | None:
    """Seconds until ``cond()`` held, or None after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def _history_is_consistent(chat: ChatSession, turns: int) -> None:
    roles = [m["role"] if isinstance(m, dict) else m.role for m in chat.messages]
    assert roles == ["system"] + ["user", "assistant"] * turns, roles


def test_decode_sigkilled_mid_conversation(tmp_path: Path) -> None:
    bootstrap = free_port()
    with ExitStack() as stack:
        prefill = _prefill(tmp_path, free_port(), bootstrap)
        d1, d2 = _decode(tmp_path, "decode1", free_port()), _decode(tmp_path, "decode2", free_port())
        for p in (prefill, d1, d2):
            stack.callback(p.stop)
        for p in (prefill, d1, d2):
            p.wait_healthy(timeout=180)
        router = _router(prefill, bootstrap, [d1, d2])
        stack.callback(router.stop)

        chats = [
            stack.enter_context(ChatSession(base_url=router.url + "/v1", system=SYSTEM, timeout=120)) for _ in range(4)
        ]
        for i, chat in enumerate(chats):
            chat.send(f"Name a colour, number {i}.", max_tokens=8)
        sessions = httpx.get(router.url + "/admin/sessions", params={"limit": 100}, timeout=5).json()
        by_conv = {s["conversation_id"]: s["decode_url"] for s in sessions["sessions"]}
        victim = d1 if sum(by_conv.get(c.conversation_id) == d1.url for c in chats) >= 2 else d2
        affected = [c for c in chats if by_conv.get(c.conversation_id) == victim.url]
        assert affected, by_conv

        # Turn 2 streams on every session; the victim is SIGKILLed once a token arrived.
        outcome: dict[str, str] = {}
        first_token = threading.Event()

        def stream_turn(chat: ChatSession) -> None:
            try:
                with chat.stream("Count from one to twenty in words.", max_tokens=MAX_TOKENS) as s:
                    for _ in s:
                        first_token.set()
                outcome[chat.conversation_id] = "ok"
            except Exception as e:  # the SDK's error for a stream cut after tokens
                outcome[chat.conversation_id] = f"error:{type(e).__name__}:{getattr(e, 'code', None)}"

        threads = [threading.Thread(target=stream_turn, args=(c,)) for c in chats]
        for t in threads:
            t.start()
        assert first_token.wait(120)
        victim.popen.kill()  # SIGKILL by PID
        killed_at = time.monotonic()
        for t in threads:
            t.join(180)
        assert not any(t.is_alive() for t in threads), "a stream hung after its worker died"
        metrics = httpx.get(router.url + "/metrics", timeout=5).text
        retried = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("ppd_retries_total"))
        cut = [c for c in affected if outcome[c.conversation_id] != "ok"]
        for c in cut:  # a stream cut after tokens: a clean, typed error; the turn is not committed
            assert outcome[c.conversation_id].startswith("error:"), outcome
            _history_is_consistent(c, 1)

        # The next turn of every session (the affected ones included): no client-visible failure.
        failures, routes = 0, []
        first_ok: float | None = None
        for c in chats:
            done = 2 if outcome[c.conversation_id] == "ok" else 1
            reply = c.send("Now say goodbye.", max_tokens=8)
            first_ok = first_ok or time.monotonic() - killed_at
            routes.append((reply.route.route, reply.route.decode))
            assert reply.route.decode != victim.url
            _history_is_consistent(c, done + 1)
        assert failures == 0

        # The worker comes back on its port: probed back in without a router restart.
        port = int(victim.url.rsplit(":", 1)[1])
        back = _decode(tmp_path, "decode-restarted", port)
        stack.callback(back.stop)
        back.wait_healthy(timeout=180)
        rejoin_s = _wait(lambda: _healthy(router, victim.url), 30)
        assert rejoin_s is not None
        print(
            f"\nfault decode-SIGKILL: sessions={len(chats)} on-victim={len(affected)} "
            f"streams-cut-after-tokens={len(cut)} (SSE error+[DONE], typed SDK error) "
            f"router retries before the first byte={retried:.0f} "
            f"next-turn failures={failures} first next-turn ok {first_ok:.2f}s after kill, "
            f"routes after={routes}, restarted worker healthy {rejoin_s:.2f}s after its /health"
        )


def test_prefill_sigkilled_then_restarted(tmp_path: Path) -> None:
    bootstrap = free_port()
    with ExitStack() as stack:
        prefill_port = free_port()
        prefill, decode = _prefill(tmp_path, prefill_port, bootstrap), _decode(tmp_path, "decode", free_port())
        for p in (prefill, decode):
            stack.callback(p.stop)
        for p in (prefill, decode):
            p.wait_healthy(timeout=180)
        router = _router(prefill, bootstrap, [decode])
        stack.callback(router.stop)

        chats = [
            stack.enter_context(ChatSession(base_url=router.url + "/v1", system=SYSTEM, timeout=120)) for _ in range(3)
        ]
        for chat in chats:
            chat.send("Say hello.", max_tokens=8)

        prefill.popen.kill()
        killed_at = time.monotonic()
        # Turn 2+ keeps flowing, D-local (the only path left).
        routes = [chat.send("And again, shorter.", max_tokens=8).route.route for chat in chats]
        assert routes == ["local"] * len(chats), routes
        # Turn 1 without a prefill worker: the decode worker can prefill, so it serves it whole
        # (degraded, never refused while a path exists).
        assert _wait(lambda: not _healthy(router, prefill.url), 10) is not None
        lone = stack.enter_context(ChatSession(base_url=router.url + "/v1", system=SYSTEM, timeout=120))
        assert lone.send("Say hi.", max_tokens=4).route.route == "local"
        # No path at all (the decode worker dies too): 503 + Retry-After, OpenAI-shaped.
        decode_port = int(decode.url.rsplit(":", 1)[1])
        decode.popen.kill()
        assert _wait(lambda: not _healthy(router, decode.url), 10) is not None
        r = httpx.post(
            router.url + "/v1/chat/completions",
            timeout=60,
            json={"model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["message"]

        # Both come back (same ports): P->D again, no router restart.
        back_p, back_d = _prefill(tmp_path, prefill_port, bootstrap), _decode(tmp_path, "decode-back", decode_port)
        for p in (back_p, back_d):
            stack.callback(p.stop)
        for p in (back_p, back_d):
            p.wait_healthy(timeout=180)
        rejoin_s = _wait(lambda: _healthy(router, prefill.url) and _healthy(router, decode.url), 30)
        assert rejoin_s is not None
        fresh = stack.enter_context(ChatSession(base_url=router.url + "/v1", system=SYSTEM, timeout=120))
        assert fresh.send("Say hi.", max_tokens=4).route.route == "pd"
        # A session whose decode worker restarted (its KV is gone) carries on: history re-prefilled.
        again = chats[0].send("One more word.", max_tokens=4)
        _history_is_consistent(chats[0], 3)
        print(
            f"\nfault prefill-SIGKILL: turn-2 sessions={len(chats)} served local, failures=0; turn 1 served "
            f"local (full prefill on decode); with decode also down: 503 Retry-After={r.headers['Retry-After']}; "
            f"restarted workers healthy {rejoin_s:.2f}s after their /health; session after restart: "
            f"route {again.route.route}; {time.monotonic() - killed_at:.1f}s from kill to recovery"
        )
