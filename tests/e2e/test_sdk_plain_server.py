"""The same app code against a plain OpenAI-compatible server (one unified ``ppd-worker``
with the real SmolLM2, no router): routing info is absent and nothing breaks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import free_port, started, worker_argv

from ppd_sdk import AsyncChatSession, ChatSession

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).parent.parent.parent / "examples"
GREEDY = {"temperature": 0, "max_tokens": 16}


@pytest.fixture(scope="module")
def plain_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("plain") / "worker.log"
    with started("ppd-worker", worker_argv(port, "--model", "smollm2"), port, log) as worker:
        yield worker.url


def test_session_works_without_routing_info(plain_worker: str) -> None:
    with ChatSession(base_url=plain_worker, system="Be brief.") as chat:
        first = chat.send("What is the capital of Germany?", **GREEDY)
        with chat.stream("And of France?", **GREEDY) as stream:
            text = "".join(stream)
        second = stream.reply
        fork = chat.fork()
        forked = fork.send("And of Italy?", **GREEDY)
    assert first.route is None and second.route is None and forked.route is None
    assert first.text and text == second.text and second.ttft_s is not None
    # The worker still reports its prefix-cache hits, so the SDK shows them.
    assert second.usage.cached_tokens and second.usage.cached_tokens > 0
    assert forked.usage.cached_tokens and forked.usage.cached_tokens > 0
    assert chat.turn == 2 and fork.turn == 3


async def test_async_session_works_without_routing_info(plain_worker: str) -> None:
    async with AsyncChatSession(base_url=plain_worker) as chat:
        reply = await chat.send("Say hello.", **GREEDY)
    assert reply.route is None and reply.text


def test_chat_ppd_works_without_routing_info(plain_worker: str) -> None:
    from langchain_ppd import ChatPPD

    llm = ChatPPD(base_url=plain_worker, temperature=0, max_tokens=16)
    msg = llm.invoke("Say hello.", config={"metadata": {"thread_id": "plain-1"}})
    chunks = list(llm.stream("Say hello again.", config={"metadata": {"thread_id": "plain-1"}}))
    assert msg.content and "ppd" not in msg.response_metadata
    assert chunks[-1].usage_metadata is not None or any(c.usage_metadata for c in chunks)


@pytest.mark.parametrize(
    "script", ["three_turn_session.py", "async_sessions.py", "route_report.py", "langgraph_agent.py"]
)
def test_examples_run_unchanged(plain_worker: str, script: str) -> None:
    env = {**os.environ, "PPD_BASE_URL": plain_worker}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
