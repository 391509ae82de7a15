"""ppd_sdk against a real ``ppd-server`` (embedded 1P1D cluster, real SmolLM2) through the
shared ``ppd_router`` fixture: routes and cached tokens per turn, sync == async, forks and
save/restore keep hitting the cache. Run with ``-s`` to see the per-turn figures."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ppd_sdk import AsyncChatSession, ChatSession, Reply

pytestmark = pytest.mark.e2e

SYSTEM = "You are a helpful assistant. Answer briefly."
PROMPTS = [
    "What is the capital of Germany?",
    "What river flows through it?",
    "Name a famous building there.",
    "Summarize our chat in one sentence.",
]
GREEDY = {"temperature": 0, "max_tokens": 24}


def _report(label: str, replies: list[Reply]) -> None:
    for r in replies:
        info = r.route
        ttft = f"{r.ttft_s * 1000:.0f} ms" if r.ttft_s is not None else "-"
        print(
            f"{label} turn {r.turn}: route={info.route if info else None} decode={info.decode if info else None} "
            f"prefill={info.prefill if info else None} prompt={r.usage.prompt_tokens} cached={r.usage.cached_tokens} "
            f"ttft={ttft}"
        )


def _stream_turn(chat: ChatSession, prompt: str) -> Reply:
    with chat.stream(prompt, **GREEDY) as stream:
        for _ in stream:
            pass
    return stream.reply


def test_four_turn_session_reports_routes_and_cached_tokens(ppd_router: str) -> None:
    with ChatSession(base_url=ppd_router, system=SYSTEM, preset="interactive") as chat:
        replies = [_stream_turn(chat, p) if i % 2 == 0 else chat.send(p, **GREEDY) for i, p in enumerate(PROMPTS)]
    _report("4-turn", replies)
    first = replies[0]
    assert first.route is not None and first.route.route == "pd" and first.route.turn == 1
    assert first.route.decode and first.route.prefill
    for reply in replies[1:]:
        assert reply.route is not None and reply.route.route in ("local", "pd")
        assert reply.route.turn == reply.turn and reply.route.conversation_id in (None, chat.conversation_id)
        assert reply.usage.cached_tokens is not None and reply.usage.cached_tokens > 0
        assert reply.text
    assert [r.turn for r in replies] == [1, 2, 3, 4] and chat.turn == 4


async def test_sync_and_async_sessions_give_the_same_results(ppd_router: str) -> None:
    with ChatSession(base_url=ppd_router, system=SYSTEM) as sync_chat:
        sync_replies = [sync_chat.send(p, **GREEDY) for p in PROMPTS[:3]]
    async with AsyncChatSession(base_url=ppd_router, system=SYSTEM) as async_chat:
        async_replies = [await async_chat.send(p, **GREEDY) for p in PROMPTS[:3]]
    _report("sync", sync_replies)
    _report("async", async_replies)
    assert [r.text for r in sync_replies] == [r.text for r in async_replies]
    assert [r.usage.prompt_tokens for r in sync_replies] == [r.usage.prompt_tokens for r in async_replies]
    assert [r.route and r.route.route for r in sync_replies] == [r.route and r.route.route for r in async_replies]
    assert sync_chat.messages == async_chat.messages


def _unique_system() -> str:
    """A system prompt no other conversation shares, so cache hits can only come from this one."""
    return f"{SYSTEM} Session tag {uuid.uuid4().hex[:8]}."


def test_fork_shares_the_prefix(ppd_router: str) -> None:
    with ChatSession(base_url=ppd_router, system=_unique_system()) as chat:
        parent = [chat.send(p, **GREEDY) for p in PROMPTS[:2]]
        child = chat.fork()
        branch = child.send("What language do people speak there?", **GREEDY)
    _report("parent", parent)
    _report("fork", [branch])
    assert branch.route is not None and branch.route.decode == parent[-1].route.decode  # type: ignore[union-attr]
    # A fresh conversation could hit at most the common start of the system prompt; the fork
    # hits the parent's turns.
    assert branch.usage.cached_tokens is not None and branch.usage.cached_tokens > parent[0].usage.prompt_tokens
    assert child.conversation_id != chat.conversation_id and child.parent_conversation_id is None


def test_save_and_restore_continue_with_cache_hits(ppd_router: str, tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    with ChatSession(base_url=ppd_router, system=_unique_system()) as chat:
        before = [chat.send(p, **GREEDY) for p in PROMPTS[:2]]
        chat.save(path)
        conversation_id = chat.conversation_id
    # A new session object and a new HTTP client, as after a process restart.
    with ChatSession.load(path, base_url=ppd_router) as restored:
        after = restored.send(PROMPTS[2], **GREEDY)
    _report("saved", before)
    _report("restored", [after])
    assert restored.conversation_id == conversation_id and after.turn == 3
    assert after.route is not None and after.route.turn == 3
    assert after.usage.cached_tokens is not None and after.usage.cached_tokens > before[1].usage.prompt_tokens - 16
