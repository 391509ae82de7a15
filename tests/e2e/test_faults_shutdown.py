"""SIGTERM drains: the router stops accepting connections at once, lets every stream in flight
finish (up to ``drain_timeout_s``), then exits 0. A real ``ppd_server.http.serve.serve`` in a
subprocess over a slow fake worker (in that same process); SIGTERM by PID mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from processes import free_port

pytestmark = pytest.mark.e2e
TESTS_SERVER = Path(__file__).resolve().parents[1] / "server"

ROUTER = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[2])
    from aiohttp import web
    from fake_sglang import FakeWorker
    from ppd_server.config import RouterConfig
    from ppd_server.http.app import create_app
    from ppd_server.http.serve import serve

    class SlowWorker(FakeWorker):
        async def _serve(self, request):  # 20 chunks, 0.1 s apart
            await request.json()
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(20):
                chunk = {"id": "c", "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\\n\\n")
                await asyncio.sleep(0.1)
            await resp.write(b"data: [DONE]\\n\\n")
            return resp

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    w = SlowWorker(role="unified")
    loop.run_until_complete(w.start())
    app = create_app(RouterConfig(worker=(w.url,), load_interval_s=3600.0).validate())
    print("READY", flush=True)
    serve(app, "127.0.0.1", int(sys.argv[1]), loop, drain_timeout_s=20.0, max_header_bytes=32768)
    print("EXITED-CLEANLY", flush=True)
""")


def test_sigterm_drains_in_flight_streams_before_exit(tmp_path: Path) -> None:
    port = free_port()
    log = open(tmp_path / "router.log", "wb")  # noqa: SIM115 - closed in the finally below, once the router has exited
    proc = subprocess.Popen(
        [sys.executable, "-c", ROUTER, str(port), str(TESTS_SERVER)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"model": "m", "stream": True, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        events: list[str] = []
        with httpx.Client(timeout=30) as client, client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for line in lines:  # the stream is running
                if line.startswith("data: "):
                    events.append(line[6:])
                    break
            proc.send_signal(signal.SIGTERM)
            sigterm_at = time.monotonic()
            time.sleep(0.3)
            with pytest.raises(httpx.ConnectError):  # no new connections once draining
                httpx.get(url + "/health", timeout=2)
            events += [line[6:] for line in lines if line.startswith("data: ")]
        drained_s = time.monotonic() - sigterm_at
        assert events[-1] == "[DONE]" and not any('"error"' in e for e in events)
        assert sum(1 for e in events if '"t' in e) == 20  # every token of the in-flight stream
        assert proc.wait(timeout=30) == 0
        assert "EXITED-CLEANLY" in (tmp_path / "router.log").read_text()
        print(
            f"\nSIGTERM drain: in-flight stream finished whole ({len(events) - 1} events) {drained_s:.2f}s "
            f"after SIGTERM; new connections refused; exit code 0"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
