"""ChatSession / AsyncChatSession against the in-process fake server: every test runs once
per twin (the ``driver`` fixture)."""

from __future__ import annotations

import json

import httpx2
import pytest
from session_driver import Driver
from fake_openai import FakeOpenAI

import ppd_sdk
from ppd_sdk import SLO, Weights


async def test_turns_carry_conversation_id_turn_and_hints(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(system="be brief", preset="interactive", slo=SLO(ttft_ms=500), conversation_id="conv-1")
    r1 = await driver.send(s, "hi")
    r2 = await driver.send(s, "again", slo={"tpot_ms": 40})
    assert (r1.turn, r2.turn, s.turn) == (1, 2, 2)
    first, second = fake.requests[-2], fake.requests[-1]
    assert first.headers["x-ppd-conversation-id"] == "conv-1"
    assert [first.headers["x-ppd-turn"], second.headers["x-ppd-turn"]] == ["1", "2"]
    assert first.headers["x-slo-ttft-ms"] == "500" and "x-slo-tpot-ms" not in first.headers
    assert second.headers["x-slo-tpot-ms"] == "40" and "x-slo-ttft-ms" not in second.headers
    body = fake.bodies[-2]
    assert body["prompt_cache_key"] == "conv-1"
    assert body["ppd"]["weights"] == {"ttft": 2.0, "tpot": 1.0}
    assert body["ppd"] == {"weights": {"ttft": 2.0, "tpot": 1.0}}  # each hint once: the SLO went as a header
    assert [m["role"] for m in fake.bodies[-1]["messages"]] == ["system", "user", "assistant", "user"]
    assert "x-ppd-parent-conversation-id" not in first.headers


async def test_reply_has_text_usage_cached_tokens_and_route(driver: Driver) -> None:
    s = driver.session(model="m")
    r1 = await driver.send(s, "hi")
    r2 = await driver.send(s, "again")
    assert r1.text == "answer 1" and r1.model == "m"
    assert r1.route is not None and r1.route.route == "pd" and r1.route.prefill == "http://p0"
    assert r2.route is not None and r2.route.route == "local" and r2.route.predicted["local"].score == 0.5
    assert r2.usage.cached_tokens and r2.usage.cached_tokens > 0 and r2.cached_tokens == r2.usage.cached_tokens
    assert r2.usage.total_tokens == r2.usage.prompt_tokens + 2
    assert r2.request_id == "req-2"
    assert s.messages[-1] == {"role": "assistant", "content": "answer 2"}


async def test_model_defaults_to_the_first_listed(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session()
    await driver.send(s, "hi")
    assert s.model == "fake-model" and fake.bodies[-1]["model"] == "fake-model"


async def test_stream_yields_deltas_and_final_reply(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m")
    await driver.send(s, "hi")
    deltas, reply = await driver.stream(s, "go on")
    assert deltas == ["answer", " 2"] and reply.text == "answer 2"
    assert reply.ttft_s is not None and reply.ttft_s >= 0
    assert reply.route is not None and reply.route.route == "local"
    assert reply.usage.cached_tokens and reply.usage.cached_tokens > 0
    assert fake.bodies[-1]["stream_options"] == {"include_usage": True}
    assert s.turn == 2 and s.messages[-1]["content"] == "answer 2"


async def test_plain_openai_server_has_no_route(driver: Driver, fake: FakeOpenAI) -> None:
    fake.routing = False
    s = driver.session(model="m")
    reply = await driver.send(s, "hi")
    _, streamed = await driver.stream(s, "more")
    assert reply.route is None and streamed.route is None
    assert reply.text == "answer 1" and s.turn == 2


async def test_route_from_headers_when_body_lacks_it(driver: Driver, fake: FakeOpenAI) -> None:
    fake.body_routing = False
    s = driver.session(model="m")
    r = await driver.send(s, "hi")
    assert r.route is not None and (r.route.route, r.route.decode, r.route.prefill, r.route.turn) == ("pd", "http://d0", "http://p0", 1)


async def test_transient_error_before_first_token_is_retried_once(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m")
    fake.failures = [503]
    assert (await driver.send(s, "hi")).text == "answer 1"
    fake.failures = [httpx2.ConnectError("refused")]
    _, reply = await driver.stream(s, "two")
    assert reply.text == "answer 2" and len(fake.bodies) == 4


async def test_failed_turn_leaves_history_unchanged(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m")
    await driver.send(s, "hi")
    before = (s.messages, s.turn)
    fake.failures = [502, 504]
    with pytest.raises(ppd_sdk.InternalServerError) as info:
        await driver.send(s, "boom")
    assert info.value.status_code == 504 and isinstance(info.value, ppd_sdk.PPDError)
    fake.failures = [429, 429]
    with pytest.raises(ppd_sdk.RateLimitError):
        await driver.stream(s, "boom")
    assert (s.messages, s.turn) == before
    assert (await driver.send(s, "ok")).turn == 2


async def test_bad_request_is_not_retried_and_names_the_param(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m")
    fake.failures = [400]
    with pytest.raises(ppd_sdk.BadRequestError) as info:
        await driver.send(s, "hi")
    assert info.value.param == "ppd.slo" and info.value.status_code == 400
    assert len(fake.bodies) == 1 and s.turn == 0 and s.messages == []


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx2.ConnectError("refused"), ppd_sdk.APIConnectionError),
        (httpx2.ReadTimeout("slow"), ppd_sdk.APITimeoutError),
        (404, ppd_sdk.NotFoundError),
        (401, ppd_sdk.AuthenticationError),
    ],
    ids=["connect", "timeout", "404", "401"],
)
async def test_errors_map_onto_one_hierarchy(driver: Driver, fake: FakeOpenAI, failure: object, error: type) -> None:
    s = driver.session(model="m", max_retries=0)
    fake.failures = [failure]
    with pytest.raises(error):
        await driver.send(s, "hi")


async def test_error_after_first_token_is_not_retried(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m")
    fake.error_after_first_chunk = True
    with pytest.raises(ppd_sdk.APIError):
        await driver.stream(s, "hi")
    assert len(fake.bodies) == 1 and s.turn == 0 and s.messages == []


TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream"])
async def test_tool_calls_pass_through(driver: Driver, fake: FakeOpenAI, streamed: bool) -> None:
    s = driver.session(model="m", tools=[TOOL])
    fake.tool_call = CALL
    reply = (await driver.stream(s, "add"))[1] if streamed else await driver.send(s, "add", tool_choice="auto")
    assert reply.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.parsed_arguments()) for c in reply.tool_calls] == [("call_1", "add", {"a": 1, "b": 2})]
    assert fake.bodies[-1]["tools"] == [TOOL]
    assert s.messages[-1]["tool_calls"][0]["function"]["arguments"] == '{"a": 1, "b": 2}'
    s.add_tool_result("call_1", "3")
    final = await driver.send(s)
    assert final.text == "answer 2"
    assert fake.bodies[-1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "3"}


async def test_send_without_content_needs_a_pending_message(driver: Driver) -> None:
    s = driver.session(model="m")
    with pytest.raises(ValueError):
        await driver.send(s)


async def test_fork_shares_history_and_sends_parent_once(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m", conversation_id="root")
    await driver.send(s, "hi")
    child = s.fork()
    assert child.conversation_id != "root" and child.parent_conversation_id == "root"
    assert child.messages == s.messages and child.turn == 1
    await driver.send(child, "branch")
    assert fake.requests[-1].headers["x-ppd-parent-conversation-id"] == "root"
    assert fake.requests[-1].headers["x-ppd-conversation-id"] == child.conversation_id
    assert "parent_conversation_id" not in fake.bodies[-1]["ppd"]  # each hint once: the header
    await driver.send(child, "again")
    assert "x-ppd-parent-conversation-id" not in fake.requests[-1].headers
    assert len(s.messages) == 2 and len(child.messages) == 6 and s.turn == 1


async def test_save_and_restore_continue_the_conversation(driver: Driver, fake: FakeOpenAI, tmp_path) -> None:
    s = driver.session(model="m", weights=Weights(ttft=3, tpot=1), slo=SLO(tpot_ms=50))
    await driver.send(s, "one")
    await driver.send(s, "two")
    path = tmp_path / "session.json"
    s.save(path)
    restored = driver.restore(path.read_text())
    assert (restored.conversation_id, restored.turn, restored.messages) == (s.conversation_id, 2, s.messages)
    assert restored.weights == Weights(ttft=3, tpot=1) and restored.slo == SLO(tpot_ms=50)
    reply = await driver.send(restored, "three")
    assert reply.turn == 3 and fake.requests[-1].headers["x-ppd-conversation-id"] == s.conversation_id
    assert json.loads(restored.to_json())["turn"] == 3
    other_model = driver.restore(restored.to_json(), model="m2")
    assert other_model.model == "m2" and other_model.turn == 3


def test_restore_rejects_unknown_state_version(fake: FakeOpenAI) -> None:
    with pytest.raises(ValueError, match="version"):
        ppd_sdk.ChatSession.from_json('{"version": 99, "conversation_id": "x"}', client=fake.client())


async def test_hint_validation(driver: Driver) -> None:
    with pytest.raises(ValueError, match="preset"):
        driver.session(model="m", preset="fastest")
    s = driver.session(model="m")
    with pytest.raises(ValueError):
        await driver.send(s, "hi", slo={"ttft_ms": -1})
    s.set_hints(preset="throughput", slo=SLO(ttft_ms=100))
    assert s.weights == Weights(ttft=1, tpot=2) and s.slo.ttft_ms == 100


async def test_send_ppd_body_off_keeps_only_standard_fields(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m", send_ppd_body=False, conversation_id="c")
    await driver.send(s, "hi", temperature=0, max_tokens=5, extra_body={"top_k": 1})
    body = fake.bodies[-1]
    assert "ppd" not in body and body["prompt_cache_key"] == "c"
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0, 5, 1)


async def test_timeouts_are_configurable_per_session_and_per_turn(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m", timeout=7.5)
    await driver.send(s, "hi")
    assert fake.requests[-1].headers["x-stainless-read-timeout"] == "7.5"
    await driver.send(s, "hi", timeout=2)
    assert fake.requests[-1].headers["x-stainless-read-timeout"] == "2"


async def test_session_owns_stream_and_messages(driver: Driver) -> None:
    s = driver.session(model="m")
    with pytest.raises(TypeError):
        await driver.send(s, "hi", stream=True)
    with pytest.raises(TypeError):
        await driver.send(s, "hi", messages=[])


def test_retry_waits_for_backoff_or_retry_after() -> None:
    from ppd_sdk._exceptions import retry_delay

    err = ppd_sdk.RateLimitError("slow down", status_code=429)
    assert retry_delay(err, 0.25) == 0.25
    err.retry_after_s = 2.0
    assert retry_delay(err, 0.25) == 2.0
    err.retry_after_s = 60.0
    assert retry_delay(err, 0.25) == 5.0


async def test_retry_after_header_is_read(driver: Driver, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def fake_async_sleep(s: float) -> None:
        waits.append(s)

    monkeypatch.setattr("time.sleep", waits.append)
    monkeypatch.setattr("asyncio.sleep", fake_async_sleep)
    s = driver.session(model="m", retry_backoff_s=0.5)
    fake.failures = [httpx2.Response(429, headers={"retry-after": "1.5"}, json={"error": {"message": "busy"}})]
    await driver.send(s, "hi")
    fake.failures = [503]
    await driver.send(s, "again")
    assert waits == [1.5, 0.5]


def test_route_survives_unexpected_prediction_fields() -> None:
    from ppd_sdk.wire import parse_route as route_from

    ppd = {"route": "local", "turn": 2, "predicted": {"local": {"ttft_ms": 1.0, "tpot_ms": 2.0, "new_field": 3}}}
    info = route_from(ppd, {}, 2)
    assert info is not None and info.route == "local" and info.predicted == {}
    assert route_from({"route": "teleport", "turn": 1}, {}, 1) is None


def test_a_callers_client_is_never_closed(fake: FakeOpenAI) -> None:
    client = fake.client()
    with ppd_sdk.ChatSession(model="m", client=client) as chat:
        chat.send("hi")
    assert not client.is_closed()
    owned = ppd_sdk.ChatSession(model="m", base_url="http://127.0.0.1:9")
    owned.close()
    assert owned._client.is_closed()


async def test_add_message_extends_the_history(driver: Driver, fake: FakeOpenAI) -> None:
    s = driver.session(model="m")
    s.add_message({"role": "user", "content": "context"})
    with pytest.raises(ValueError):
        s.add_message({"content": "no role"})
    await driver.send(s)
    assert fake.bodies[-1]["messages"] == [{"role": "user", "content": "context"}]
    assert s.turn == 1 and s.messages[-1]["role"] == "assistant"
