"""``--header-timeout``: a streamed turn whose worker accepts the request and never answers its
headers is retried on another pair after that bound, not after ``--request-timeout``; a
non-streamed answer (whose headers come with the whole answer) is not bound by it."""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_server.cli import build_parser
from ppd_server.config import ConfigError, RouterConfig

REQUEST_TIMEOUT_S = 60.0  # what a hung worker cost before: the test must end far below it


class NeverAnswers(FakeWorker):
    """Reads the request and never sends a byte (a wedged worker, before its headers)."""

    async def _serve(self, request):
        self.seen.append(await request.json())
        await asyncio.Event().wait()


class AnswersLate(FakeWorker):
    """A non-streamed answer that takes a while (its headers come with it)."""

    async def _serve(self, request):
        await asyncio.sleep(0.6)
        return await super()._serve(request)


def _events(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


async def test_a_decode_without_headers_is_retried_on_another_pair_after_the_header_timeout():
    p, hung = FakeWorker(role="prefill"), NeverAnswers(role="decode")
    good = FakeWorker(role="decode", n_tokens=4, load={"num_running_reqs": 30})  # looks busy: tried second
    async with router_over([p, hung, good], header_timeout_s=0.3, request_timeout_s=REQUEST_TIMEOUT_S) as (
        client,
        state,
    ):
        t0 = time.monotonic()
        r = await client.post(
            "/v1/chat/completions", json=chat_body(stream=True), headers={"X-PPD-Conversation-Id": "c"}
        )
        evs = _events(await r.read())
        elapsed = time.monotonic() - t0
        assert hung.seen, "the hung decode was tried: the test proves nothing otherwise"
        assert r.status == 200 and evs[-1] == "[DONE]" and not any('"error"' in e for e in evs)
        assert r.headers["X-PPD-Decode"] == good.url
        assert not state.registry.get(hung.url).healthy, "the hung worker is taken out"
        assert state.registry.get(p.url).healthy, "its prefill had answered: not a stuck pair"
        assert elapsed < REQUEST_TIMEOUT_S / 4, f"served after {elapsed:.1f} s: the request timeout, not the header one"


async def test_a_unified_worker_without_headers_is_retried_too():
    hung = NeverAnswers(role="unified")
    good = FakeWorker(role="unified", n_tokens=3, load={"num_running_reqs": 40, "num_waiting_reqs": 20})
    async with router_over(
        [hung, good], policy="replica", header_timeout_s=0.3, request_timeout_s=REQUEST_TIMEOUT_S
    ) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        evs = _events(await r.read())
        assert len(hung.seen) == 1 and r.status == 200 and evs[-1] == "[DONE]"
        assert not state.registry.get(hung.url).healthy


async def test_a_non_streamed_answer_is_not_bound_by_the_header_timeout():
    late = AnswersLate(role="unified", n_tokens=3)
    async with router_over([late], policy="replica", header_timeout_s=0.1) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status == 200 and (await r.json())["choices"]
        assert len(late.seen) == 1 and state.registry.get(late.url).healthy


def test_the_header_timeout_is_a_checked_setting_with_a_flag():
    with pytest.raises(ConfigError, match="header_timeout_s"):
        RouterConfig(decode=("http://127.0.0.1:1",), header_timeout_s=-1.0).validate()
    parser = build_parser()
    assert "--header-timeout" in parser.format_help()
