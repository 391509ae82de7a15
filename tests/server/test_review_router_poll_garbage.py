"""A worker whose /server_info or /v1/loads answer is valid JSON of the wrong shape (a list, a list
where a string belongs, an infinite number) is a failed poll of THAT worker: the poll round must
not raise (the background poller would die, freezing load and health for every worker)."""

from __future__ import annotations

import pytest
from aiohttp import web
from fake_sglang import FakeWorker
from router_harness import router_over


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
