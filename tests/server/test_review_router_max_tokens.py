"""``max_completion_tokens: null`` beside ``max_tokens`` must not hide ``max_tokens``: the cost
model is asked about the answer length the client set, not the 128 default."""

from __future__ import annotations

from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


async def test_a_null_max_completion_tokens_leaves_max_tokens_in_force():
    async with router_over([FakeWorker(role="prefill"), FakeWorker(role="decode")]) as (client, state):
        asked: list[int] = []
        begin = state.turns.begin

        def spy(hints, prompt_tokens, prompt_bytes, max_new_tokens):
            asked.append(max_new_tokens)
            return begin(hints, prompt_tokens, prompt_bytes, max_new_tokens)

        state.turns.begin = spy
        r = await client.post("/v1/chat/completions", json=chat_body(max_tokens=7, max_completion_tokens=None))
        assert r.status == 200 and asked == [7]
        r = await client.post("/v1/chat/completions", json=chat_body(max_tokens=7, max_completion_tokens=9))
        assert r.status == 200 and asked == [7, 9]
