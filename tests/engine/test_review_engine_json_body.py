"""Review finding: a deeply nested JSON body (json.loads raises RecursionError, not
ValueError) must be a 400 like any other unparsable body, not a 500."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions", "/v1/completions", "/abort_request"])
async def test_deeply_nested_json_body_is_400(unified, path):
    client, _ = unified
    r = await client.post(path, data="[" * 100_000 + "]" * 100_000,
                          headers={"Content-Type": "application/json"})
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["type"] == "invalid_request_error"
