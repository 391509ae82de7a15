"""Fixtures for the router app's unit tests (fake SGLang workers in-process + the router app)."""

from __future__ import annotations

import pytest
from fake_sglang import FakeWorker
from router_harness import router_over


@pytest.fixture
async def pd_pair():
    """A fake prefill + a fake decode worker and a router (policy ppd) over them."""
    p, d = FakeWorker(role="prefill", bootstrap_port=31998), FakeWorker(role="decode")
    async with router_over([p, d]) as (client, state):
        yield client, state, p, d
