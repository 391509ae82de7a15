"""The full worker in-process on the synthetic model: SGLang native API, OpenAI API, info,
load and metrics endpoints, validation errors."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import serve_worker, sse_chunks

GREEDY = {"temperature": 0, "max_new_tokens": 8}


async def test_generate_text_and_input_ids_agree(unified):
    client, worker = unified
    r1 = await client.post("/generate", json={"text": "hello there", "sampling_params": GREEDY})
    assert r1.status == 200
    body = await r1.json()
    assert len(body["output_ids"]) == 8
    meta = body["meta_info"]
    assert meta["finish_reason"] == {"type": "length", "length": 8}
    assert meta["prompt_tokens"] == len(worker.tokenizer.encode("hello there"))
    assert meta["completion_tokens"] == 8 and "cached_tokens" in meta and "e2e_latency" in meta
    r2 = await client.post(
        "/generate",
        json={"input_ids": worker.tokenizer.encode("hello there"), "sampling_params": GREEDY, "rid": "mine"},
    )
    body2 = await r2.json()
    assert body2["output_ids"] == body["output_ids"] and body2["meta_info"]["id"] == "mine"


async def test_generate_stream_is_cumulative_and_ends_with_done(unified):
    client, _ = unified
    r = await client.post("/generate", json={"text": "stream me", "sampling_params": GREEDY, "stream": True})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    chunks = await sse_chunks(r)
    assert chunks[-1] == "[DONE]"
    data = chunks[:-1]
    assert [len(c["output_ids"]) for c in data] == list(range(1, 9))
    assert all(c["meta_info"]["prompt_tokens"] > 0 for c in data)
    assert data[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert all(c["meta_info"]["finish_reason"] is None for c in data[:-1])


async def test_second_turn_reports_cached_tokens(unified):
    client, _ = unified
    prompt = "a fairly long first prompt about caches " * 3
    first = await (await client.post("/generate", json={"text": prompt, "sampling_params": GREEDY})).json()
    ids = first["meta_info"]["prompt_tokens"]
    again = await (await client.post("/generate", json={"text": prompt + "and more", "sampling_params": GREEDY})).json()
    assert again["meta_info"]["cached_tokens"] >= ids - 8 - 1 > 0


async def test_router_injected_and_unknown_top_level_keys_are_ignored(unified):
    client, _ = unified
    body = {
        "text": "Hello world",
        "model": None,
        "sampling_params": {"temperature": 0.0, "max_new_tokens": 3},
        "return_text_in_logprobs": False,
        "stream": False,
        "log_metrics": True,
        "return_hidden_states": False,
        "background": False,
        "no_logs": False,
        "return_bytes": False,
        "return_entropy": False,
        "rid": "my-rid-1",
        "custom_field_xyz": 5,
        "lora_path": "",
        "logprob_start_len": -1,
    }
    r = await client.post("/generate", json=body)
    assert r.status == 200 and (await r.json())["meta_info"]["id"] == "my-rid-1"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"text": "x", "sampling_params": {"nope": 1}}, "sampling_params"),
        ({"text": "x", "sampling_params": {"temperature": -2}}, "temperature"),
        ({"sampling_params": {}}, "text"),
        ({"text": ["a", "b"]}, "text"),
        ({"input_ids": [[1, 2], [3]]}, "input_ids"),
        ({"input_ids": [1, 10**9]}, "input_ids"),
        ({"input_ids": list(range(1, 200)) * 30}, "input_ids"),
        ({"text": "x", "bootstrap_host": "h", "bootstrap_room": "r"}, "bootstrap_room"),
        ({"text": "x", "return_logprob": True}, "return_logprob"),
    ],
    ids=[
        "unknown-sampling-key",
        "bad-temperature",
        "no-prompt",
        "text-batch",
        "ids-batch",
        "id-out-of-vocab",
        "over-capacity",
        "bad-room",
        "logprob",
    ],
)
async def test_bad_generate_requests_are_400_with_openai_error_body(unified, body, param):
    client, _ = unified
    r = await client.post("/generate", json=body)
    assert r.status == 400
    error = (await r.json())["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


async def test_malformed_json_is_400(unified):
    client, _ = unified
    for path in ("/generate", "/v1/chat/completions", "/v1/completions"):
        r = await client.post(path, data=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status == 400 and "JSON" in (await r.json())["error"]["message"]


async def test_chat_completion_shape_and_usage(unified):
    client, worker = unified
    body = {"model": "whatever", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status == 200
    data = await r.json()
    assert data["object"] == "chat.completion" and data["model"] == worker.served_model_name
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("length", "stop")
    usage = data["usage"]
    assert (
        usage["completion_tokens"] <= 5 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )
    assert "cached_tokens" in usage["prompt_tokens_details"]
    r2 = await client.post("/v1/chat/completions", json={**body, "max_tokens": None, "max_completion_tokens": 3})
    assert (await r2.json())["usage"]["completion_tokens"] <= 3


async def test_chat_stream_with_usage_chunk(unified):
    client, _ = unified
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await client.post("/v1/chat/completions", json=body)
    chunks = await sse_chunks(r)
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0
    deltas = [c["choices"][0] for c in chunks[:-2]]
    assert deltas[0]["delta"]["role"] == "assistant"
    assert deltas[-1]["finish_reason"] in ("length", "stop")
    streamed = "".join(d["delta"].get("content", "") for d in deltas)
    plain = await (await client.post("/v1/chat/completions", json={**body, "stream": False})).json()
    assert streamed == plain["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "bad"}]}, "tools"),
        ({"messages": [{"role": "user", "content": "x"}], "top_k": 0}, "top_k"),
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
    ],
    ids=["n2", "empty", "bad-role", "bad-tools", "bad-top-k", "logprobs"],
)
async def test_bad_chat_requests_are_400(unified, body, param):
    client, _ = unified
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status == 400 and (await r.json())["error"]["param"] == param


async def test_chat_with_tools_renders_and_answers(unified):
    client, _ = unified
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [
        {"role": "user", "content": "Weather in Berlin?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Berlin"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    r = await client.post(
        "/v1/chat/completions", json={"messages": messages, "tools": tools, "max_tokens": 4, "temperature": 0}
    )
    assert r.status == 200 and (await r.json())["choices"][0]["finish_reason"] in ("length", "stop", "tool_calls")


async def test_completions_plain_stream_and_echo(unified):
    client, _ = unified
    body = {"prompt": "Once upon", "max_tokens": 5, "temperature": 0}
    data = await (await client.post("/v1/completions", json=body)).json()
    assert data["object"] == "text_completion" and data["usage"]["completion_tokens"] == 5
    chunks = await sse_chunks(
        await client.post("/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    )
    assert "".join(c["choices"][0]["text"] for c in chunks[:-2]) == data["choices"][0]["text"]
    assert chunks[-2]["usage"]["completion_tokens"] == 5
    echoed = await (await client.post("/v1/completions", json={**body, "echo": True})).json()
    assert echoed["choices"][0]["text"] == "Once upon" + data["choices"][0]["text"]


async def test_stop_string_trims_output(unified):
    client, _ = unified
    free = await (
        await client.post(
            "/generate", json={"text": "abc", "sampling_params": {"temperature": 0, "max_new_tokens": 12}}
        )
    ).json()
    text = free["text"]
    if len(text) < 3:
        pytest.skip("synthetic output too short to pick a stop string")
    stop = text[2:4]
    stopped = await (
        await client.post(
            "/generate",
            json={"text": "abc", "sampling_params": {"temperature": 0, "max_new_tokens": 12, "stop": [stop]}},
        )
    ).json()
    assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    assert stopped["text"] == text[: text.find(stop)]


async def test_info_and_health_endpoints(unified):
    client, worker = unified
    assert (await client.get("/health")).status == 200
    assert (await client.get("/health_generate")).status == 200
    for path in ("/server_info", "/get_server_info"):
        info = await (await client.get(path)).json()
        for key in (
            "disaggregation_mode",
            "disaggregation_bootstrap_port",
            "disaggregation_decode_enable_radix_cache",
            "disaggregation_decode_enable_conditional_agg",
            "page_size",
            "max_total_num_tokens",
            "model_path",
            "served_model_name",
            "kv_bytes_per_token",
            "dtype",
        ):
            assert key in info, key
        assert info["disaggregation_mode"] == "null" and info["page_size"] == 8
    for path in ("/model_info", "/get_model_info"):
        assert (await (await client.get(path)).json())["is_generation"] is True
    models = await (await client.get("/v1/models")).json()
    assert models["data"][0]["owned_by"] == "sglang"


async def test_loads_get_load_and_metrics(unified):
    client, _ = unified
    await client.post("/generate", json={"text": "count me", "sampling_params": GREEDY})
    loads = await (await client.get("/v1/loads?include=core,disagg,queues,memory")).json()
    load = loads["loads"][0]
    for key in (
        "num_running_reqs",
        "num_waiting_reqs",
        "token_usage",
        "cache_hit_rate",
        "running_context_tokens",
        "disaggregation",
        "queues",
        "memory",
    ):
        assert key in load, key
    assert load["memory"]["weight_gb"] > 0 and load["memory"]["token_capacity"] == 4096
    core_only = (await (await client.get("/v1/loads?include=core")).json())["loads"][0]
    assert "memory" not in core_only and "num_running_reqs" in core_only
    legacy = await (await client.get("/get_load")).json()
    assert isinstance(legacy, list) and "num_tokens" in legacy[0]
    text = await (await client.get("/metrics")).text()
    for name in (
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:cache_hit_rate",
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
        "sglang:cached_tokens_total",
        "sglang:kv_transfer_total_mb",
        "sglang:time_to_first_token_seconds",
        "sglang:e2e_request_latency_seconds",
        "sglang:inter_token_latency_seconds",
    ):
        assert name in text, name


async def test_flush_cache_then_no_hit(unified):
    client, _ = unified
    prompt = "flush me please, this prompt spans a few pages of tokens"
    await client.post("/generate", json={"text": prompt, "sampling_params": GREEDY})
    assert (await client.post("/flush_cache")).status == 200
    again = await (await client.post("/generate", json={"text": prompt, "sampling_params": GREEDY})).json()
    assert again["meta_info"]["cached_tokens"] == 0


async def test_client_disconnect_aborts_the_stream(unified):
    client, worker = unified
    r = await client.post(
        "/generate",
        json={"text": "never ending", "stream": True, "sampling_params": {"max_new_tokens": 3000, "ignore_eos": True}},
    )
    await r.content.readline()
    r.close()
    for _ in range(200):  # bounded wait for the engine to see the abort
        if worker.scheduler.num_running == 0:
            break
        await asyncio.sleep(0.05)
    assert worker.scheduler.num_running == 0


async def test_decode_worker_rejects_requests_it_cannot_serve():
    async with serve_worker(disaggregation_mode="decode") as (client, _):
        r = await client.post("/generate", json={"text": "x"})
        assert r.status == 400 and (await r.json())["error"]["param"] == "bootstrap_room"
        r = await client.post("/generate", json={"text": "x", "do_local_prefill": True})
        assert r.status == 400 and (await r.json())["error"]["param"] == "do_local_prefill"
        r = await client.post(
            "/generate",
            json={
                "text": "x",
                "bootstrap_host": "2.2.2.2",
                "bootstrap_port": 1,
                "bootstrap_room": 5,
                "sampling_params": GREEDY,
            },
        )
        assert r.status == 200 and len((await r.json())["output_ids"]) == 8


async def test_concurrent_requests_match_their_solo_outputs(unified):
    """Continuous batching (ragged decode rows mixed with prefill chunks over shared cache
    pages) must not change what any request computes."""
    client, _ = unified
    prompts = [f"request number {i} " * (1 + 7 * (i % 4)) for i in range(10)]
    params = {"temperature": 0, "max_new_tokens": 12}

    async def run(text):
        return (await (await client.post("/generate", json={"text": text, "sampling_params": params})).json())[
            "output_ids"
        ]

    solo = [await run(p) for p in prompts]
    assert (await client.post("/flush_cache")).status == 200
    together = await asyncio.gather(*(run(p) for p in prompts))
    assert together == solo


async def test_abort_request_by_rid_ends_the_request_with_abort(unified):
    client, worker = unified
    body = {"text": "abort me", "rid": "to-abort", "sampling_params": {"max_new_tokens": 3000, "ignore_eos": True}}
    task = asyncio.ensure_future(client.post("/generate", json=body))
    for _ in range(200):  # bounded wait until the request is running
        if worker.scheduler.num_running:
            break
        await asyncio.sleep(0.02)
    r = await client.post("/abort_request", json={"rid": "to-abort"})
    assert (await r.json())["aborted"] == 1
    result = await (await task).json()
    assert result["meta_info"]["finish_reason"]["type"] == "abort"
    assert (await client.post("/abort_request", json={})).status == 400


async def test_survives_an_http2_preface(unified):
    """sglang-router first probes gRPC (HTTP/2) on the HTTP port; the worker must keep serving."""
    client, _ = unified
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    await writer.drain()
    await asyncio.wait_for(reader.read(1024), 5)
    writer.close()
    assert (await client.get("/health")).status == 200
