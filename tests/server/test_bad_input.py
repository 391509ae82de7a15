"""Bad input -> 4xx with an OpenAI-style error body naming the problem; never 500, never a hang."""

from __future__ import annotations

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_sdk import wire
from ppd_server.request_path.token_count import TokenCounter


class WordTokenizer:
    """One token per whitespace-separated word: an exact counter for the capacity check."""

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True) -> str:
        return " ".join(str(m.get("content", "")) for m in messages)


CASES = [
    # (id, path, raw body or json, headers, status, param, code)
    ("malformed-json", "/v1/chat/completions", b"{not json", {}, 400, None, "invalid_json"),
    ("json-not-object", "/v1/chat/completions", b"[1, 2]", {}, 400, None, "invalid_json"),
    ("missing-messages", "/v1/chat/completions", {"model": "fake-model"}, {}, 400, "messages", None),
    ("empty-messages", "/v1/chat/completions", {"model": "fake-model", "messages": []}, {}, 400, "messages", None),
    (
        "messages-not-objects",
        "/v1/chat/completions",
        {"model": "fake-model", "messages": ["hi"]},
        {},
        400,
        "messages",
        None,
    ),
    ("bad-max-tokens", "/v1/chat/completions", chat_body(max_tokens=-3), {}, 400, "max_tokens", None),
    ("missing-prompt", "/v1/completions", {"model": "fake-model"}, {}, 400, "prompt", None),
    ("generate-no-input", "/generate", {"sampling_params": {}}, {}, 400, "text", None),
    (
        "slo-header-not-a-number",
        "/v1/chat/completions",
        chat_body(),
        {"X-SLO-TTFT-Ms": "fast"},
        400,
        "X-SLO-TTFT-Ms",
        "invalid_ppd_hints",
    ),
    (
        "slo-negative",
        "/v1/chat/completions",
        chat_body(ppd={"slo": {"tpot_ms": -5}}),
        {},
        400,
        "ppd.slo",
        "invalid_ppd_hints",
    ),
    (
        "ppd-unknown-field",
        "/v1/chat/completions",
        chat_body(ppd={"colour": "red"}),
        {},
        400,
        "ppd.colour",
        "invalid_ppd_hints",
    ),
    (
        "bad-turn-header",
        "/v1/chat/completions",
        chat_body(),
        {"X-PPD-Turn": "zero"},
        400,
        "X-PPD-Turn",
        "invalid_ppd_hints",
    ),
    (
        "prompt-beyond-capacity",
        "/v1/chat/completions",
        chat_body("word " * 80),
        {},
        400,
        "messages",
        "context_length_exceeded",
    ),
]


@pytest.fixture
async def small_cluster():
    p = FakeWorker(role="prefill", max_total_num_tokens=64)
    d = FakeWorker(role="decode", max_total_num_tokens=64)
    async with router_over([p, d], tokens=TokenCounter(WordTokenizer())) as (client, state):
        yield client, p, d


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_4xx_openai_error(small_cluster, case):
    client, p, d = small_cluster
    _, path, body, headers, status, param, code = case
    kw = (
        {"data": body, "headers": {"Content-Type": "application/json", **headers}}
        if isinstance(body, bytes)
        else {"json": body, "headers": headers}
    )
    r = await client.post(path, **kw)
    assert r.status == status, await r.text()
    err = (await r.json())["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] in ("invalid_request_error", "not_found_error")
    assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    assert not p.seen and not d.seen, "a bad request never reaches a worker"


async def test_api_key_guards_openai_endpoints_but_not_health():
    u = FakeWorker(role="unified")
    async with router_over([u], api_key="sk-secret") as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_api_key"
        r = await client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer wrong"})
        assert r.status == 401 and "sk-secret" not in await r.text()
        r = await client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer sk-secret"})
        assert r.status == 200
        assert "authorization" not in {k.lower() for k in u.seen[0].headers}, "the router's key is not forwarded"
        assert (await client.get("/health")).status == 200
        assert (await client.get("/v1/models")).status == 401


async def test_unknown_paths_and_methods_are_openai_style(small_cluster):
    client, p, d = small_cluster
    r = await client.post("/v1/embeddings", json={})
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    r = await client.get("/v1/chat/completions")
    assert r.status == 405 and set((await r.json())["error"]) == {"message", "type", "param", "code"}


async def test_an_estimated_prompt_far_beyond_capacity_is_refused_without_touching_workers():
    p = FakeWorker(role="prefill", max_total_num_tokens=100)
    d = FakeWorker(role="decode", max_total_num_tokens=100)
    async with router_over([p, d]) as (client, state):  # no tokenizer: learned bytes/token
        assert not state.turns.tokens.exact
        r = await client.post("/v1/chat/completions", json=chat_body("word " * 2000))
        assert r.status == 400 and (await r.json())["error"]["code"] == "context_length_exceeded"
        r = await client.post("/v1/completions", json={"model": "fake-model", "prompt": "x " * 20})
        assert r.status == 200, "a borderline estimate is left to the worker"
        assert not any(s.path == "/v1/chat/completions" for s in p.seen + d.seen)


# ------------------------------------------------------------------------------------------------
# A ``model`` field that is not a string (list, object) is a 400 naming ``model``, not a 500.


@pytest.mark.parametrize("model", [["fake-model"], {"name": "fake-model"}, 5])
async def test_a_model_that_is_not_a_string_is_a_400(model):
    async with router_over([FakeWorker(role="prefill"), FakeWorker(role="decode")]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(model=model))
        assert r.status == 400
        err = (await r.json())["error"]
        assert err["param"] == "model" and err["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------------------------
# A conversation that names itself as its own parent is a 400 naming the parent field, not a
# 500 (SessionTable.start_fork raised ValueError out of the request handler).


@pytest.mark.parametrize("via", ["headers", "body"])
async def test_a_self_fork_is_a_400(via):
    async with router_over([FakeWorker(role="prefill"), FakeWorker(role="decode")]) as (client, state):
        if via == "headers":
            kw = {
                "json": chat_body(),
                "headers": {wire.HEADER_CONVERSATION_ID: "a", wire.HEADER_PARENT_CONVERSATION_ID: "a"},
            }
            param = wire.HEADER_PARENT_CONVERSATION_ID
        else:
            kw = {"json": chat_body(ppd={"conversation_id": "a", "parent_conversation_id": "a"})}
            param = "ppd.parent_conversation_id"
        r = await client.post("/v1/chat/completions", **kw)
        assert r.status == 400
        err = (await r.json())["error"]
        assert err["param"] == param and err["code"] == "invalid_ppd_hints"


# ------------------------------------------------------------------------------------------------
# ``max_completion_tokens: null`` beside ``max_tokens`` must not hide ``max_tokens``: the cost
# model is asked about the answer length the client set, not the 128 default.


async def test_a_null_max_completion_tokens_leaves_max_tokens_in_force():
    async with router_over([FakeWorker(role="prefill"), FakeWorker(role="decode")]) as (client, state):
        asked: list[int] = []
        begin = state.turns.begin

        def spy(hints, prompt_tokens, prompt_bytes, max_new_tokens, *rest):
            asked.append(max_new_tokens)
            return begin(hints, prompt_tokens, prompt_bytes, max_new_tokens, *rest)

        state.turns.begin = spy
        r = await client.post("/v1/chat/completions", json=chat_body(max_tokens=7, max_completion_tokens=None))
        assert r.status == 200 and asked == [7]
        r = await client.post("/v1/chat/completions", json=chat_body(max_tokens=7, max_completion_tokens=9))
        assert r.status == 200 and asked == [7, 9]
