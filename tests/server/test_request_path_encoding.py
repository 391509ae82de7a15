"""The request path's cheap encodings give the same JSON objects as the plain ones they replace:
the body sent to the workers (the client's bytes plus appended fields, worker_body.py), the
``ppd`` field (orjson unless a figure is not finite, relay.info_json), and the token counter's
unrolled RLS update (token_count.py)."""

from __future__ import annotations

import json
import math
import random

import pytest

from ppd_sdk import wire
from ppd_server.request_path.relay import SSEShaper, info_json
from ppd_server.request_path.token_count import _TwoParameterRLS
from ppd_server.request_path.worker_body import worker_body
from ppd_server.routing.rls import RecursiveLeastSquares

EXTRA = {"bootstrap_host": "127.0.0.1", "bootstrap_port": 8998, "bootstrap_room": 2**62 + 5}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"m","messages":[{"role":"user","content":"h\\u00e9\\ud83d\\ude00 \xc3\xa9"}],"max_tokens":3}',
        b'  {"a":1,"a":2, "n": 123456789012345678901234567890, "f": 1e400}\n',  # duplicates, big int, inf
        b'{"x": NaN, "s": "\\ud800"}',  # what json.loads accepts and re-serialises as written
    ],
)
def test_appended_fields_parse_to_the_same_object_as_re_serialising(raw):
    body = json.loads(raw)
    spliced = worker_body(body, raw, EXTRA)
    assert spliced.startswith(raw.rstrip()[:-1])  # the client's bytes were kept
    assert repr(json.loads(spliced)) == repr(dict(body, **EXTRA))  # repr: NaN != NaN
    assert worker_body(body, raw) is raw  # nothing to add: the client's bytes as they are


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",  # empty object: no member to follow
        '{"a": 1}'.encode("utf-16"),  # json.loads takes UTF-16; it is re-serialised as UTF-8
        b'\xef\xbb\xbf{"a": 1}',  # a UTF-8 BOM
        b'{"bootstrap_room": 1, "a": 2}',  # a field the dispatcher sets: replaced, not duplicated
    ],
)
def test_bodies_that_cannot_take_appended_fields_are_re_serialised(raw):
    body = json.loads(raw)
    assert worker_body(body, raw, EXTRA) == json.dumps(dict(body, **EXTRA)).encode()
    assert worker_body(body, None, EXTRA) == json.dumps(dict(body, **EXTRA)).encode()


def _info(ttft: float, score: float | None = 0.5, conv: str | None = "c\u00e9") -> dict:
    return wire.route_body("pd", 2, conv, "ppd", "http://d", "http://p", 7, "why", [("pd", ttft, 20.0, score)])


@pytest.mark.parametrize("ttft", [12.3456, 1e9, 0.0, math.inf, math.nan])
def test_the_ppd_field_is_the_same_object_as_json_dumps_gives(ttft):
    info = _info(ttft)
    assert repr(json.loads(info_json(info))) == repr(json.loads(json.dumps(info)))
    if not math.isfinite(ttft):  # never null for a non-finite figure: the stdlib's spelling
        assert info_json(info) == json.dumps(info).encode()


def test_the_ppd_field_falls_back_for_what_orjson_refuses():
    info = _info(1.0, conv="\ud800")  # a lone surrogate (json.loads accepts it in a body)
    assert info_json(info) == json.dumps(info).encode()


def test_a_usage_event_gets_ppd_spliced_in_and_stays_one_data_line():
    payload = b'{"id": "c", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1}}'
    shaper = SSEShaper("chat", True, lambda usage: _info(1.5))
    out = shaper.feed(b"data: " + payload + b"\n\n")
    assert out.startswith(b"data: {") and out.endswith(b"}\n\n") and out.count(b"\n") == 2
    obj = json.loads(out[6:])
    assert obj["usage"]["prompt_tokens"] == 9 and obj["ppd"] == json.loads(json.dumps(_info(1.5)))
    # a multi-line data event is re-serialised into one line
    shaper = SSEShaper("chat", True, lambda usage: _info(1.5))
    out = shaper.feed(b'data: {"choices": [],\ndata: "usage": {"prompt_tokens": 4}}\n\n')
    assert out.count(b"\n") == 2 and json.loads(out[6:])["usage"] == {"prompt_tokens": 4}


def test_the_unrolled_rls_update_is_the_generic_one():
    rng = random.Random(7)
    a = RecursiveLeastSquares([0.0, 250.0], [64.0, 250.0], noise_std=4.0, lam=0.995)
    b = _TwoParameterRLS([0.0, 250.0], [64.0, 250.0], noise_std=4.0, lam=0.995)
    for _ in range(500):  # mostly small requests, a few huge ones (the variance caps engage)
        x = (1.0, rng.uniform(0, 20) if rng.random() < 0.9 else rng.uniform(0, 1e4))
        y, w = rng.uniform(0, 5000), rng.choice([1.0, 0.5, 2.0, 0.0])
        assert a.update(x, y, w) == b.update(x, y, w)
        assert a.theta == b.theta and a._p == b._p and a.samples == b.samples


def test_the_dispatchers_pre_encoded_bootstrap_members_are_json_dumps_own():
    from ppd_server.request_path.worker_body import members_prefix

    for host, port in (("127.0.0.1", 8998), ('h\u00e9"x', None)):
        extra = {"bootstrap_host": host, "bootstrap_port": port, "bootstrap_room": 2**63 - 1}
        members = members_prefix({"bootstrap_host": host, "bootstrap_port": port}) + b'bootstrap_room": %d' % (
            2**63 - 1
        )
        assert members == json.dumps(extra).encode()[1:-1]
        assert worker_body({"a": 1}, b'{"a":1}', extra, members) == b'{"a":1, ' + members + b"}"
