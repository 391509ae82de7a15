"""TokenCounter: exact counts from the model's tokenizer and chat template vs the learned
bytes-per-token estimate."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from ppd_kernels.tokenizer import load_tokenizer
from ppd_server.request_path.token_count import DEFAULT_BYTES_PER_TOKEN, TokenCounter

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of Germany?"},
    {"role": "assistant", "content": "Berlin."},
    {"role": "user", "content": [{"type": "text", "text": "And of "}, {"type": "text", "text": "France?"}]},
]


@pytest.fixture(scope="module")
def synthetic_tokenizer():
    return load_tokenizer("synthetic")


def test_exact_counts_match_the_rendered_chat_template(synthetic_tokenizer):
    tc = TokenCounter.from_source("synthetic")
    assert tc.exact
    flat = [dict(m, content=m["content"] if isinstance(m["content"], str) else "And of France?") for m in CHAT]
    want = len(synthetic_tokenizer.encode(synthetic_tokenizer.apply_chat_template(flat, add_generation_prompt=True)))
    assert tc.count_chat(CHAT) == want
    assert tc.count_text("hello world") == len(synthetic_tokenizer.encode("hello world"))


def test_exact_counter_ignores_observations():
    tc = TokenCounter.from_source("synthetic")
    before = tc.count_text("x" * 100)
    tc.observe(1000, 10)
    assert tc.count_text("x" * 100) == before and tc.observations == 0


def test_the_router_brain_does_not_import_torch():
    code = (
        "import sys; from ppd_server.request_path.token_count import TokenCounter; "
        "TokenCounter.from_source('synthetic').count_text('x');"
        "import ppd_server.sessions, ppd_server.profiling, ppd_server.routing.policies, ppd_server.routing.cost_model;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_tools_add_tokens():
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    for tc in (TokenCounter.from_source("synthetic"), TokenCounter()):
        assert tc.count_chat(CHAT, tools=[tool]) > tc.count_chat(CHAT)


@pytest.mark.parametrize("source", ["/no/such/model.gguf", "synthetic:x"])
def test_unloadable_source_names_itself(source):
    with pytest.raises(ValueError, match="cannot load tokenizer"):
        TokenCounter.from_source(source)


def test_learned_ratio_starts_at_the_default_and_converges():
    tc = TokenCounter.from_source(None)
    assert not tc.exact
    assert tc.count_text("a" * 400) == round(400 / DEFAULT_BYTES_PER_TOKEN)
    rng = random.Random(0)
    for _ in range(60):  # a 2.5 bytes/token language under a template adding 30 tokens per chat
        n = rng.randrange(100, 5000)
        tc.observe(prompt_bytes=n, reported_prompt_tokens=round(30 + n / 2.5))
    assert tc.bytes_per_token == pytest.approx(2.5, rel=0.01)
    assert tc.chat_overhead_tokens == pytest.approx(30, abs=1)
    assert tc.count_text("a" * 400) == pytest.approx(160, abs=2)  # plain text: no template
    assert tc.count_chat(CHAT) == round(30 + TokenCounter.chat_bytes(CHAT) / 2.5)


def test_absurd_reports_are_ignored_and_the_ratio_stays_bounded():
    tc = TokenCounter()
    for bad in ((0, 10), (100, 0), (10**6, 1), (10, 1000)):
        tc.observe(*bad)
    assert tc.observations == 0 and tc.bytes_per_token == DEFAULT_BYTES_PER_TOKEN
    for _ in range(200):
        tc.observe(3000, 100)  # 30 bytes/token: sane to learn from, beyond what the estimate uses
    assert tc.bytes_per_token == 16.0


def test_estimate_is_close_to_the_real_tokenizer_after_learning(synthetic_tokenizer):
    exact, learned = TokenCounter(synthetic_tokenizer), TokenCounter()
    convo = [{"role": "user", "content": f"message number {i} about routing prefill and decode"} for i in range(8)]
    for i in range(1, 8):
        learned.observe(TokenCounter.chat_bytes(convo[:i]), exact.count_chat(convo[:i]))
    assert learned.count_chat(convo) == pytest.approx(exact.count_chat(convo), rel=0.15)


def test_chat_bytes_counts_text_parts_and_tool_calls():
    plain = TokenCounter.chat_bytes([{"role": "user", "content": "abc"}])
    parts = TokenCounter.chat_bytes(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "abc"}, {"type": "image_url", "image_url": {"url": "x"}}],
            }
        ]
    )
    assert plain == parts
    call = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        }
    ]
    assert TokenCounter.chat_bytes(call) > TokenCounter.chat_bytes([{"role": "assistant", "content": None}])


def test_bad_ratio_rejected():
    with pytest.raises(ValueError):
        TokenCounter(bytes_per_token=0.1)
