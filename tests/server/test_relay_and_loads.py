"""Pure pieces: SSE shaping across arbitrary chunk boundaries, usage extraction, load parsing."""

from __future__ import annotations

import json

import pytest

from ppd_server.fleet.loads import parse_prometheus, parse_v1_loads
from ppd_server.request_path.relay import SSEShaper, shape_json


def _sse(*objs) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objs)


STREAM = _sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}], "usage": None},
    {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}], "usage": None},
    {
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 6}},
    },
    b"[DONE]",
)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, len(STREAM)])
def test_sse_shaper_is_independent_of_chunk_boundaries(chunk_size):
    ticks = iter(range(100))
    shaper = SSEShaper(
        "chat", True, lambda u: {"route": "pd", "cached_tokens": u.cached_tokens}, clock=lambda: float(next(ticks))
    )
    out = b"".join(shaper.feed(STREAM[i : i + chunk_size]) for i in range(0, len(STREAM), chunk_size)) + shaper.flush()
    events = [e[6:] for e in out.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]" and shaper.saw_done
    final = json.loads(events[-2])
    assert final["ppd"] == {"route": "pd", "cached_tokens": 6}
    assert out.startswith(STREAM[: STREAM.index(b"\n\n") + 2]), "token events pass through byte-identical"
    u = shaper.usage
    assert (u.prompt_tokens, u.cached_tokens, u.completion_tokens) == (10, 6, 2)
    assert u.first_token_at == 0.0 and u.last_token_at == 1.0 and u.tpot_ms() == 1000.0


def test_sse_shaper_drops_usage_chunk_the_client_did_not_ask_for_and_passes_errors():
    shaper = SSEShaper("chat", False, lambda u: {"route": "pd"})
    out = shaper.feed(STREAM)
    assert b'"usage": {' not in out and out.endswith(b"data: [DONE]\n\n")
    err = SSEShaper("chat", True, lambda u: {})
    raw = _sse({"error": {"message": "boom", "type": "server_error", "code": 500}}, b"[DONE]")
    assert err.feed(raw) == raw and err.saw_error


def test_shape_json_adds_ppd_and_leaves_batches_alone():
    body, usage = shape_json(
        "generate",
        json.dumps(
            {
                "text": "x",
                "meta_info": {
                    "prompt_tokens": 5,
                    "cached_tokens": 3,
                    "completion_tokens": 1,
                    "kv_transfer_bytes": 4096,
                },
            }
        ).encode(),
        lambda u: {"route": "local", "cached_tokens": u.cached_tokens},
    )
    assert json.loads(body)["ppd"] == {"route": "local", "cached_tokens": 3} and usage.kv_transfer_bytes == 4096
    batch = json.dumps([{"text": "a"}, {"text": "b"}]).encode()
    assert shape_json("generate", batch, lambda u: {})[0] == batch


def test_v1_loads_parses_flat_and_sectioned_ranks_summed():
    payload = {
        "loads": [
            {
                "dp_rank": 0,
                "num_running_reqs": 3,
                "num_waiting_reqs": 1,
                "num_waiting_uncached_tokens": 100,
                "num_used_tokens": 500,
                "max_total_num_tokens": 4096,
                "running_context_tokens": 900,
                "disaggregation": {"decode_prealloc_queue_reqs": 2},
            },
            {"dp_rank": 1, "core": {"num_running_reqs": 1, "num_used_tokens": 50, "max_total_num_tokens": 4096}},
        ]
    }
    r = parse_v1_loads(payload)
    assert (
        r.running_reqs,
        r.waiting_reqs,
        r.waiting_tokens,
        r.used_tokens,
        r.running_context_tokens,
        r.max_total_tokens,
    ) == (4, 3, 100, 550, 900, 8192)
    with pytest.raises(ValueError):
        parse_v1_loads({"status": "ok"})


def test_prometheus_fallback_reads_sglang_gauges():
    text = (
        '# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{model_name="m"} 7.0\n'
        '# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name="m"} 2.0\n'
        '# TYPE sglang:num_used_tokens gauge\nsglang:num_used_tokens{model_name="m"} 1234.0\n'
    )
    r = parse_prometheus(text)
    assert (r.running_reqs, r.waiting_reqs, r.used_tokens) == (7, 2, 1234)
    with pytest.raises(ValueError):
        parse_prometheus("# nothing here\nother_metric 1.0\n")
