"""ppd-server end to end: real SmolLM2 in real prefill/decode worker processes, the real openai
client, real KV transfer. Turn 1 goes P->D; later turns go D-local under ``ppd`` while the decode
worker is idle, P->D under ``pd``; the decode worker reports the earlier turns as cached."""

from __future__ import annotations

import openai
import pytest
from processes import http_json, router_policy

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of Germany?"


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _model(base_url: str) -> str:
    return _client(base_url).models.list().data[0].id


def _turn(client: openai.OpenAI, model: str, conv: str, messages: list[dict], stream: bool) -> tuple[dict, dict, str]:
    """One turn; returns (response headers, the ppd field, the answer text)."""
    # 48-token answers (ignore_eos): like real agent turns, each answer is KV the decode worker
    # generated and holds while a prefill worker would have to recompute it. With 5-token answers
    # the two routes cost nearly the same on this tiny model and timing noise decides.
    kw = dict(
        model=model,
        messages=messages,
        max_tokens=48,
        temperature=0,
        extra_body={"ignore_eos": True},
        extra_headers={"X-PPD-Conversation-Id": conv},
    )
    if stream:
        with client.chat.completions.with_streaming_response.create(
            stream=True, stream_options={"include_usage": True}, **kw
        ) as raw:
            headers = dict(raw.headers)
            text, last = "", None
            for chunk in raw.parse():
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                last = chunk
        assert last is not None and last.usage is not None and not last.choices
        ppd = last.model_extra["ppd"]
        assert ppd["cached_tokens"] == last.usage.prompt_tokens_details.cached_tokens
        return headers, ppd, text
    raw = client.chat.completions.with_raw_response.create(**kw)
    completion = raw.parse()
    ppd = completion.model_extra["ppd"]
    assert ppd["cached_tokens"] == completion.usage.prompt_tokens_details.cached_tokens
    return dict(raw.headers), ppd, completion.choices[0].message.content or ""


def _conversation(base_url: str, conv: str, stream_turns: set[int], turns: int = 4) -> list[tuple[dict, dict, str]]:
    client, model = _client(base_url), _model(base_url)
    messages = [{"role": "user", "content": QUESTION}]
    out = []
    for turn in range(1, turns + 1):
        headers, ppd, text = _turn(client, model, conv, messages, stream=turn in stream_turns)
        assert headers["x-ppd-route"] == ppd["route"] and headers["x-ppd-turn"] == str(turn) == str(ppd["turn"])
        assert headers["x-ppd-decode"] == ppd["decode"]
        out.append((headers, ppd, text))
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"Say it again ({turn})."}]
    return out


def test_four_turns_under_ppd_go_pd_then_local_with_cached_tokens(ppd_router):
    turns = _conversation(ppd_router, "e2e-ppd", stream_turns={2, 4})
    routes = [ppd["route"] for _, ppd, _ in turns]
    assert routes == ["pd", "local", "local", "local"], [ppd["reason"] for _, ppd, _ in turns]
    first, second = turns[0][1], turns[1][1]
    assert first["prefill"] and turns[0][0]["x-ppd-prefill"] == first["prefill"]
    assert "berlin" in turns[0][2].lower()
    assert second["cached_tokens"] > 0, "turn 2 found turn 1's prompt+answer in the decode worker's cache"
    assert second["decode"] == first["decode"], "turn 2 stays on the decode worker holding the KV"
    assert set(second["predicted"]) == {"local", "pd"} and second["reason"].startswith("local: S=")


def test_four_turns_under_pd_policy_all_go_pd_and_still_hit_the_decode_cache(ppd_router):
    with router_policy(ppd_router, "pd"):
        turns = _conversation(ppd_router, "e2e-pd", stream_turns={1, 3})
    assert [ppd["route"] for _, ppd, _ in turns] == ["pd"] * 4
    assert all(ppd["policy"] == "pd" and ppd["prefill"] for _, ppd, _ in turns)
    assert turns[1][1]["cached_tokens"] > 0


def test_streaming_and_non_streaming_give_the_same_greedy_answer(ppd_router):
    client, model = _client(ppd_router), _model(ppd_router)
    messages = [{"role": "user", "content": QUESTION}]
    _, ppd_a, text_a = _turn(client, model, "e2e-s1", messages, stream=False)
    _, ppd_b, text_b = _turn(client, model, "e2e-s2", messages, stream=True)
    assert text_a == text_b and ppd_a["route"] == ppd_b["route"] == "pd"


def test_bad_requests_against_the_real_cluster_are_openai_errors(ppd_router):
    client = _client(ppd_router)
    # One model served: any name selects it, as in SGLang ("default" is what SGLang's docs send).
    reply = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=_model(ppd_router),
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-SLO-TPOT-Ms": "-1"},
        )
    assert e.value.body["param"] == "X-SLO-TPOT-Ms"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=_model(ppd_router), messages=[{"role": "user", "content": "word " * 200_000}], max_tokens=1
        )
    assert e.value.status_code == 400
    status, workers = http_json("GET", f"{ppd_router}/admin/workers")
    assert status == 200 and all(w["healthy"] for w in workers["workers"])
