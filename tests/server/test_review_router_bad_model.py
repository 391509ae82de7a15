"""A ``model`` field that is not a string (list, object) is a 400 naming ``model``, not a 500."""

from __future__ import annotations

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over


@pytest.mark.parametrize("model", [["fake-model"], {"name": "fake-model"}, 5])
async def test_a_model_that_is_not_a_string_is_a_400(model):
    async with router_over([FakeWorker(role="prefill"), FakeWorker(role="decode")]) as (client, state):
        r = await client.post("/v1/chat/completions", json=chat_body(model=model))
        assert r.status == 400
        err = (await r.json())["error"]
        assert err["param"] == "model" and err["type"] == "invalid_request_error"
