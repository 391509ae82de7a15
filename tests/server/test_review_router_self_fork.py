"""A conversation that names itself as its own parent is a 400 naming the parent field, not a
500 (SessionTable.start_fork raised ValueError out of the request handler)."""

from __future__ import annotations

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_sdk import wire


@pytest.mark.parametrize("via", ["headers", "body"])
async def test_a_self_fork_is_a_400(via):
    async with router_over([FakeWorker(role="prefill"), FakeWorker(role="decode")]) as (client, state):
        if via == "headers":
            kw = {"json": chat_body(), "headers": {wire.HEADER_CONVERSATION_ID: "a",
                                                   wire.HEADER_PARENT_CONVERSATION_ID: "a"}}
            param = wire.HEADER_PARENT_CONVERSATION_ID
        else:
            kw = {"json": chat_body(ppd={"conversation_id": "a", "parent_conversation_id": "a"})}
            param = "ppd.parent_conversation_id"
        r = await client.post("/v1/chat/completions", **kw)
        assert r.status == 400
        err = (await r.json())["error"]
        assert err["param"] == param and err["code"] == "invalid_ppd_hints"
