"""N ``ppd-server`` replicas behind real nginx (Debian package), hashing on
``X-PPD-Conversation-Id`` with the shipped config (docs/nginx/ppd-router.conf, only its addresses
and port rewritten for loopback). Real ``ppd-worker`` processes (synthetic model: fast to load)
shared by both replicas; the real SDK.

* affinity: every turn of a conversation reaches the same replica (each conversation is in
  exactly one replica's session table, with all its turns);
* failover: a replica SIGKILLed between turns loses no turn: nginx skips the refused replica,
  the other one serves the next turn P->D and rebuilds the conversation's placement.

Skipped when no ``nginx`` binary is installed (``apt-get install nginx``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from processes import Process, free_port, pd_pair, router_argv

from ppd_sdk import ChatSession

pytestmark = pytest.mark.e2e
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CONF = Path(__file__).resolve().parents[2] / "docs" / "nginx" / "ppd-router.conf"
SESSIONS, TURNS_BEFORE_KILL = 8, 2

MAIN = """
user root;
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format ppd '$http_x_ppd_conversation_id $upstream_addr $upstream_status $status';
    access_log {tmp}/access.log ppd;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/ppd-router.conf;
}}
"""


def _start_nginx(tmp: Path, replicas: list[str], port: int) -> subprocess.Popen:
    text = CONF.read_text()
    text = text.replace("127.0.0.1:30001", replicas[0]).replace("127.0.0.1:30002", replicas[1])
    text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    (tmp / "ppd-router.conf").write_text(text)
    (tmp / "nginx.conf").write_text(MAIN.format(tmp=tmp))
    check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _tables(replicas: list[Process]) -> dict[str, dict[str, int]]:
    """replica url -> {conversation id: turns it saw}."""
    out = {}
    for r in replicas:
        if r.popen.poll() is None:
            body = httpx.get(r.url + "/admin/sessions", params={"limit": 1000}, timeout=5).json()
            out[r.url] = {s["conversation_id"]: s["turns"] for s in body["sessions"]}
    return out


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")
def test_replicas_behind_nginx_keep_affinity_and_survive_a_replica_loss(tmp_path: Path) -> None:
    with ExitStack() as stack:
        prefill, decode = stack.enter_context(pd_pair(tmp_path, "--model", "synthetic"))
        replicas = []
        for _ in range(2):
            port = free_port()
            r = Process(
                f"replica{len(replicas)}",
                router_argv(
                    port,
                    "--load-interval",
                    "0.3",
                    "--prefill",
                    prefill.url,
                    str(prefill.bootstrap_port),
                    "--decode",
                    decode.url,
                ),
                port,
                tmp_path / f"replica{len(replicas)}.log",
            )
            stack.callback(r.stop)
            replicas.append(r)
        for r in replicas:
            r.wait_healthy(timeout=120)
        front_port = free_port()
        nginx = _start_nginx(tmp_path, [r.url.removeprefix("http://") for r in replicas], front_port)

        def stop_nginx() -> None:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()

        stack.callback(stop_nginx)
        front = f"http://127.0.0.1:{front_port}"
        for _ in range(100):
            try:
                httpx.get(front + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        chats = [
            stack.enter_context(ChatSession(base_url=front + "/v1", model="default", timeout=60))
            for _ in range(SESSIONS)
        ]
        for turn in range(TURNS_BEFORE_KILL):
            for i, chat in enumerate(chats):
                chat.send(f"turn {turn} of {i}", max_tokens=4)

        tables = _tables(replicas)
        homes = {}
        for chat in chats:
            holders = [url for url, t in tables.items() if chat.conversation_id in t]
            assert len(holders) == 1, (chat.conversation_id, tables)  # affinity: one replica per conversation
            assert tables[holders[0]][chat.conversation_id] == TURNS_BEFORE_KILL  # ... for all its turns
            homes[chat.conversation_id] = holders[0]
        spread = {url: sum(1 for h in homes.values() if h == url) for url in tables}
        assert all(spread.values()), spread  # both replicas serve

        victim = max(replicas, key=lambda r: spread[r.url])
        moved = [c for c in chats if homes[c.conversation_id] == victim.url]
        victim.popen.kill()  # SIGKILL by PID, between turns
        victim.popen.wait(10)

        failures, routes = 0, []
        for chat in chats:
            try:
                routes.append(chat.send("after the loss", max_tokens=4).route.route)
            except Exception as e:  # counted, then failed below with the figure
                failures += 1
                routes.append(f"error:{type(e).__name__}")
        assert failures == 0, routes
        survivor = next(r for r in replicas if r is not victim)
        after = _tables([survivor])[survivor.url]
        for chat in moved:  # rebuilt on the survivor from the history the request carries
            assert chat.conversation_id in after and chat.turn == TURNS_BEFORE_KILL + 1
        log = (tmp_path / "access.log").read_text().splitlines()
        nginx_retries = sum(1 for line in log if re.search(r", ", line))  # "addrA, addrB" = next upstream
        print(
            f"\nreplicas behind nginx: {SESSIONS} conversations x {TURNS_BEFORE_KILL} turns, split "
            f"{sorted(spread.values())}, "
            f"affinity kept 100%; replica SIGKILLed with {len(moved)} conversations: next turn failures={failures}, "
            f"nginx next-upstream retries={nginx_retries}, routes after={routes}"
        )
