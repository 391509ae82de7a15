"""The router's exact token count equals what a real SmolLM2 ppd-worker reports as
prompt_tokens for the same chat (same tokenizer, same chat template), tools included."""

from __future__ import annotations

import httpx
import pytest

# tests/ is on sys.path (rootdir conftest): the shared launcher ends its process by PID.
from processes import worker_process

from ppd_server.request_path.token_count import TokenCounter

pytestmark = pytest.mark.e2e

CHATS = [
    [{"role": "user", "content": "What is the capital of Germany?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "And one above 100? Ünïcödé too: 東京"},
    ],
]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def smollm2_worker(tmp_path_factory):
    with worker_process(tmp_path_factory.mktemp("smollm2_worker"), "smollm2", "--model", "smollm2") as proc:
        yield proc.url


@pytest.mark.parametrize("tools", [None, [TOOL]], ids=["plain", "tools"])
@pytest.mark.parametrize("chat", CHATS, ids=["one-turn", "multi-turn"])
def test_exact_count_matches_the_workers_prompt_tokens(smollm2_worker, chat, tools):
    model_path = httpx.get(smollm2_worker + "/server_info", timeout=10).json()["model_path"]
    counter = TokenCounter.from_source(model_path)
    assert counter.exact
    body = {"model": "default", "messages": chat, "max_tokens": 1, "temperature": 0}
    if tools:
        body["tools"] = tools
    r = httpx.post(smollm2_worker + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert counter.count_chat(chat, tools=tools) == r.json()["usage"]["prompt_tokens"]


def test_learned_ratio_gets_close_to_the_worker(smollm2_worker):
    learned = TokenCounter()
    reported = []
    for chat in CHATS:
        r = httpx.post(
            smollm2_worker + "/v1/chat/completions",
            json={"model": "default", "messages": chat, "max_tokens": 1},
            timeout=120,
        )
        reported.append(r.json()["usage"]["prompt_tokens"])
        learned.observe(TokenCounter.chat_bytes(chat), reported[-1])
    # after two observations the estimate is within a third of the truth for either chat
    for chat, want in zip(CHATS, reported):
        assert learned.count_chat(chat) == pytest.approx(want, rel=0.35)
