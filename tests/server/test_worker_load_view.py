"""The policy's view of a worker's load between polls: the router's own finished requests are
taken off the last poll's running count until a poll sent after them arrives (regression: an
agent's back-to-back turn was charged interference from the turn that had just ended)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from fake_sglang import FakeWorker
from router_harness import chat_body, eventually, router_over

from ppd_server.fleet.loads import LoadReport
from ppd_server.fleet.workers import Worker
from ppd_server.routing.types import CostCoefficients

COEFS = CostCoefficients()


def _decode_with(running: int, context: int) -> Worker:
    w = Worker("http://d", "decode", healthy=True)
    w.set_load(LoadReport(running_reqs=running, running_context_tokens=context), "v1/loads", polled_at=10.0)
    return w


def test_a_request_that_ended_after_the_poll_is_not_counted_as_running() -> None:
    w = _decode_with(running=2, context=600)
    w.inflight = 1
    w.release(now=11.0)
    view = w.view(COEFS)
    assert view.running_reqs == 1
    assert view.running_context_tokens == 300
    assert view.inflight == 0


def test_a_poll_sent_after_the_finish_replaces_the_correction() -> None:
    w = _decode_with(running=1, context=100)
    w.inflight = 1
    w.release(now=11.0)
    assert w.view(COEFS).running_reqs == 0
    w.set_load(LoadReport(running_reqs=1, running_context_tokens=50), "v1/loads", polled_at=12.0)
    assert w.view(COEFS).running_reqs == 1  # a new stream started: the fresh poll is believed


def test_a_poll_sent_before_the_finish_keeps_the_correction() -> None:
    w = _decode_with(running=1, context=100)
    w.inflight = 1
    w.release(now=11.0)
    w.set_load(LoadReport(running_reqs=1, running_context_tokens=100), "v1/loads", polled_at=10.5)
    assert w.view(COEFS).running_reqs == 0


def test_more_finishes_than_polled_streams_floor_at_zero() -> None:
    w = _decode_with(running=1, context=100)
    w.inflight = 3
    for t in (11.0, 11.1, 11.2):
        w.release(now=t)
    view = w.view(COEFS)
    assert (view.running_reqs, view.running_context_tokens) == (0, 0)


# ------------------------------------------------------------------------------------------------
# A worker whose /server_info or /v1/loads answer is valid JSON of the wrong shape (a list, a list
# where a string belongs, an infinite number) is a failed poll of THAT worker: the poll round must
# not raise (the background poller would die, freezing load and health for every worker).


class OddInfo(FakeWorker):
    info: object = None
    loads: str | None = None

    async def _server_info(self, request: web.Request) -> web.Response:
        if self.info is None:
            return await super()._server_info(request)
        return web.json_response(self.info)

    async def _loads(self, request: web.Request) -> web.Response:
        if self.loads is None:
            return await super()._loads(request)
        return web.Response(text=self.loads, content_type="application/json")


ODD = [
    ("info-is-a-list", {"info": []}),
    ("mode-is-a-list", {"info": {"disaggregation_mode": ["decode"]}}),
    ("loads-infinite", {"loads": '{"loads": [{"num_running_reqs": Infinity}]}'}),
]


@pytest.mark.parametrize("odd", [o[1] for o in ODD], ids=[o[0] for o in ODD])
async def test_an_odd_answer_is_a_failed_poll_not_a_dead_poller(odd):
    good = FakeWorker(role="unified", load={"num_running_reqs": 2})
    bad = OddInfo(role="unified")
    async with router_over([good, bad]) as (client, state):
        for k, v in odd.items():
            setattr(bad, k, v)
        w = state.registry.get(bad.url)
        w.info_loaded = "info" not in odd  # make the next poll read /server_info again
        for _ in range(2):
            await state.registry.poll_once(state.session, 2.0)  # must not raise
        assert w.healthy is False and w.last_error
        assert state.registry.get(good.url).healthy and state.registry.get(good.url).load.running_reqs == 2


def test_the_view_is_kept_while_nothing_it_shows_changes_and_follows_every_change() -> None:
    w = _decode_with(running=2, context=600)
    first = w.view(COEFS)
    assert w.view(COEFS) is first
    w.inflight += 1
    assert w.view(COEFS).inflight == 1
    w.local_load.commit("r1", 100, 10)
    assert w.view(COEFS).local_prefill_tokens == 100
    w.set_load(LoadReport(running_reqs=3, running_context_tokens=900), "v1/loads", polled_at=12.0)
    assert w.view(COEFS).running_reqs == 3
    w.can_local_prefill = True
    assert w.view(COEFS).can_local_prefill
    w.healthy = False
    assert not w.view(COEFS).healthy
    refit = CostCoefficients(decode_base_ms=COEFS.decode_base_ms + 1.0)
    assert w.view(refit).coefficients is refit
    assert w.view(refit) is w.view(refit)


# The prefills the router has in flight on a prefill worker price its queue between polls (issue 7).
async def test_the_live_router_counts_a_p_to_d_prefill_until_its_leg_ends():
    p = FakeWorker(role="prefill", hold=asyncio.Event())
    d = FakeWorker(role="decode")
    async with router_over([p, d]) as (client, state):
        try:
            post = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
            await eventually(lambda: p.seen)
            view = state.registry.get(p.url).view(COEFS)
            assert view.router_prefill_reqs == 1 and view.router_prefill_tokens > 0
            p.hold.set()
            r = await post
            assert r.status == 200
        finally:
            p.hold.set()
        await eventually(lambda: state.registry.get(p.url).prefill_load.reqs == 0)  # the leg is drained
        assert state.registry.get(p.url).view(COEFS).router_prefill_reqs == 0
