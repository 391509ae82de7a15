"""Property-based tests (hypothesis) of the wire contract, the routing policies and the front door.

* ``wire.parse_hints`` on any headers and any JSON body returns ``Hints`` or raises ``WireError``
  - never anything else (its documented contract); hints the SDK writes parse back unchanged.
* every registered policy's ``decide`` on any fleet snapshot, session and request returns a
  Decision naming healthy workers of the right role, or raises ``NoWorkerAvailable`` (the router's
  503) - nothing else.
* the front door over fake workers answers any JSON body or hint header with a status < 500 and,
  for every 4xx, an OpenAI error body.

Example counts are bounded (``max_examples``) so the file runs in seconds; the counts are printed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import threading
from typing import Any

import pytest

from ppd_sdk import wire
from ppd_server.routing.policies import make_policy
from ppd_server.routing.types import (
    ClusterView,
    CostCoefficients,
    NoWorkerAvailable,
    RequestView,
    SessionView,
    WorkerView,
)

hypothesis = pytest.importorskip("hypothesis")
# after the importorskip on purpose: without hypothesis the module is skipped, not an import error
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HEADER_NAMES = [
    wire.HEADER_CONVERSATION_ID,
    wire.HEADER_PARENT_CONVERSATION_ID,
    wire.HEADER_TURN,
    wire.HEADER_SLO_TTFT_MS,
    wire.HEADER_SLO_TPOT_MS,
]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
ppd_keys = st.sampled_from(
    [
        "conversation_id",
        "parent_conversation_id",
        "turn",
        "weights",
        "slo",
        "preset",
        "ttft",
        "tpot",
        "ttft_ms",
        "tpot_ms",
        "other",
    ]
)
ppd_objects = st.recursive(
    json_scalars,
    lambda inner: st.dictionaries(ppd_keys, inner, max_size=5) | st.lists(inner, max_size=3),
    max_leaves=10,
)
header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\x7f"), max_size=30
) | st.sampled_from(["1", "0", "-1", "nan", "inf", "1e400", "²", "٣", " 7 ", ""])
headers_strategy = st.dictionaries(st.sampled_from(HEADER_NAMES), header_text, max_size=5)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "ppd": ppd_objects,
        "prompt_cache_key": json_values,
        "model": json_values,
        "stream": json_values,
        "max_tokens": json_values,
        "messages": json_values,
    },
)

COUNTS: dict[str, int] = {}


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=headers_strategy, body=bodies)
def test_parse_hints_returns_hints_or_raises_wire_error_only(headers, body):
    _count("parse_hints")
    try:
        hints = wire.parse_hints(headers, body)
    except wire.WireError as e:
        assert isinstance(e.message, str) and e.message
        return
    for v in (hints.slo.ttft_ms, hints.slo.tpot_ms):
        assert v is None or (math.isfinite(v) and v > 0)
    assert 0 <= hints.weights.ttft <= 1000 and 0 <= hints.weights.tpot <= 1000
    assert hints.turn is None or hints.turn >= 1


ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=wire.MAX_CONVERSATION_ID_LEN)
positive_ms = st.floats(min_value=0.001, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    conv=st.none() | ids,
    parent=st.none() | ids,
    turn=st.none() | st.integers(1, 10**6),
    ttft=st.none() | positive_ms,
    tpot=st.none() | positive_ms,
    w=st.tuples(st.floats(0, 1000), st.floats(0, 1000)),
)
def test_hints_the_sdk_writes_parse_back_unchanged(conv, parent, turn, ttft, tpot, w):
    _count("round_trip")
    if parent is not None and parent == conv:
        parent = None  # a conversation cannot be its own parent (a WireError by contract)
    hints = wire.Hints(
        conversation_id=conv,
        parent_conversation_id=parent,
        turn=turn,
        weights=wire.Weights(ttft=w[0], tpot=w[1]),
        slo=wire.SLO(ttft_ms=ttft, tpot_ms=tpot),
    )
    headers, body = hints.apply({}, {})
    assert wire.parse_hints(headers, body) == hints


# --- the policies --------------------------------------------------------------------------

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
coefficients = st.builds(
    CostCoefficients,
    prefill_base_ms=finite,
    prefill_per_token_ms=finite,
    decode_base_ms=finite,
    decode_per_seq_ms=finite,
    decode_per_kctx_ms=finite,
)
counts = st.integers(0, 10**6)


@st.composite
def fleets(draw: Any) -> ClusterView:
    workers = []
    for i in range(draw(st.integers(0, 5))):
        role = draw(st.sampled_from(["prefill", "decode", "unified"]))
        workers.append(
            WorkerView(
                url=f"http://w{i}",
                role=role,
                healthy=draw(st.booleans()),
                can_local_prefill=role == "decode" and draw(st.booleans()),
                decode_radix_cache=draw(st.booleans()),
                bootstrap_port=8998 if role == "prefill" else None,
                max_total_tokens=draw(counts),
                kv_bytes_per_token=draw(counts),
                running_reqs=draw(counts),
                waiting_reqs=draw(counts),
                waiting_tokens=draw(counts),
                used_tokens=draw(counts),
                running_context_tokens=draw(counts),
                inflight=draw(counts),
                chunked_prefill_size=draw(counts),
                coefficients=draw(coefficients),
            )
        )
    return ClusterView(
        workers=tuple(workers), link_gbps=draw(st.floats(0.001, 1e4)), link_backlog_bytes=draw(st.integers(0, 10**12))
    )


requests_ = st.builds(
    RequestView,
    conversation_id=st.none() | st.just("c1"),
    turn=st.integers(1, 10**4),
    prompt_tokens=st.integers(0, 10**7),
    max_new_tokens=st.integers(1, 2**31 - 1),
    weights=st.builds(wire.Weights, ttft=st.floats(0, 1000), tpot=st.floats(0, 1000)),
    slo=st.builds(wire.SLO, ttft_ms=st.none() | positive_ms, tpot_ms=st.none() | positive_ms),
)
sessions = st.none() | st.builds(
    SessionView,
    conversation_id=st.just("c1"),
    decode_url=st.none() | st.sampled_from([f"http://w{i}" for i in range(6)]),
    prefill_url=st.none() | st.sampled_from([f"http://w{i}" for i in range(6)]),
    cached_tokens_decode=counts,
    cached_tokens_prefill=counts,
    turns=st.integers(0, 10**4),
)
POLICIES = ["ppd", "pd", "local", "replica", "ratio:0.5", "threshold:256"]


@pytest.mark.parametrize("spec", POLICIES)
def test_policies_decide_or_raise_no_worker_available_only(spec):
    policy = make_policy(spec)

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=requests_, cluster=fleets(), session=sessions)
    def check(request, cluster, session):
        _count(f"policy:{spec}")
        try:
            d = policy.decide(request, cluster, session)
        except NoWorkerAvailable:
            return
        by_url = {w.url: w for w in cluster.workers}
        assert d.route in ("local", "pd", "replica")
        served = by_url[d.decode]
        assert served.healthy
        if d.route == "pd":
            assert served.role == "decode" and by_url[d.prefill].role == "prefill" and by_url[d.prefill].healthy
        elif d.route == "local":
            assert served.role == "decode" and served.can_local_prefill and d.prefill is None
        else:
            assert served.role == "unified"

    check()


# --- the front door over fake workers ------------------------------------------------------


class _RouterThread:
    """A router app over fake P/D workers, served on a loopback port from a background loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        from fake_sglang import FakeWorker

        from ppd_server.config import PrefillSpec, RouterConfig
        from ppd_server.http.app import create_app
        from ppd_server.http.serve import make_runner

        self.workers = [FakeWorker(role="prefill"), FakeWorker(role="decode")]
        for w in self.workers:
            await w.start()
        p, d = self.workers
        cfg = RouterConfig(prefill=(PrefillSpec(p.url, p.bootstrap_port),), decode=(d.url,), load_interval_s=3600.0)
        from aiohttp import web

        self.runner = make_runner(create_app(cfg), drain_timeout_s=1.0, max_header_bytes=cfg.max_header_bytes)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _stop(self) -> None:
        await self.runner.cleanup()
        for w in self.workers:
            await w.close()

    def __enter__(self) -> _RouterThread:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def router_port():
    with _RouterThread() as r:
        yield r.port


chat_bodies = st.fixed_dictionaries(
    {"messages": st.one_of(st.just([{"role": "user", "content": "hi"}]), json_values)},
    optional={
        "model": json_values,
        "stream": json_values,
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
        "ppd": ppd_objects,
        "prompt_cache_key": json_values,
        "stream_options": json_values,
        "tools": json_values,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(body=chat_bodies, headers=headers_strategy)
def test_front_door_never_answers_5xx(router_port, body, headers):
    _count("front_door")
    conn = http.client.HTTPConnection("127.0.0.1", router_port, timeout=30)
    try:
        safe_headers = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body, allow_nan=True),
            headers={"Content-Type": "application/json", **safe_headers},
        )
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    assert r.status < 500, data[:300]
    if r.status >= 400:
        err = json.loads(data)["error"]
        assert isinstance(err["message"], str) and "type" in err and "param" in err and "code" in err


def test_zz_print_counts():
    """Runs last in this file (name order within the module is definition order): the figures."""
    print("\nhypothesis examples run:", json.dumps(COUNTS, sort_keys=True))
