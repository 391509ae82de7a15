"""Prefix caches scoped per API key: with several keys, every request reaches the workers with a
``cache_salt`` derived from its tenant (and the client's own salt), so one tenant cannot observe by
timing or ``cached_tokens`` what another has sent. With ``shared_prefix_cache`` or a single key,
the client's body goes through untouched."""

from __future__ import annotations

import pytest
from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_sdk import wire
from ppd_server.http.auth import key_id, tenant_cache_salt

KEY_A, KEY_B = "sk-tenant-a-5d1f0c", "sk-tenant-b-c93e77"


def _h(key: str, conv: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", wire.HEADER_CONVERSATION_ID: conv}


def _salts(*workers: FakeWorker) -> list:
    return [s.body.get("cache_salt", "<none>") for w in workers for s in w.seen]


async def test_each_tenant_reaches_the_workers_under_its_own_salt():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d], api_key=(KEY_A, KEY_B)) as (client, _):
        for key, conv in ((KEY_A, "a1"), (KEY_A, "a2"), (KEY_B, "b1")):
            for stream in (False, True):
                r = await client.post(
                    "/v1/chat/completions", json={**chat_body("same prompt"), "stream": stream}, headers=_h(key, conv)
                )
                assert r.status == 200
                await r.read()
        salt_a, salt_b = tenant_cache_salt(key_id(KEY_A), None), tenant_cache_salt(key_id(KEY_B), None)
        assert salt_a != salt_b and salt_a.startswith("ppd-")
        # every request on D (each conversation's turn 2 runs there locally) and both legs of every
        # P->D turn 1 (the KV is keyed by the salt on both workers)
        assert _salts(d) == [salt_a] * 4 + [salt_b] * 2
        assert _salts(p) == [salt_a, salt_a, salt_b]
        # a client naming A's salt (or any) stays in B's own namespace
        p.seen.clear()
        r = await client.post(
            "/v1/chat/completions", json={**chat_body("x"), "cache_salt": salt_a}, headers=_h(KEY_B, "b2")
        )
        assert r.status == 200
        (seen,) = _salts(p)
        assert seen not in (salt_a, salt_b) and seen == tenant_cache_salt(key_id(KEY_B), salt_a)


@pytest.mark.parametrize("keys", [(KEY_A,), (KEY_A, KEY_B)])
async def test_the_client_salt_passes_through_when_tenants_share_or_there_is_one_tenant(keys):
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    shared = len(keys) > 1
    async with router_over([p, d], api_key=keys, shared_prefix_cache=shared) as (client, _):
        for salt in ("mine", None):
            body = {**chat_body("hi"), **({"cache_salt": salt} if salt else {})}
            r = await client.post("/v1/chat/completions", json=body, headers=_h(KEY_A, f"c-{salt}"))
            assert r.status == 200
    assert _salts(d) == ["mine", "<none>"]


@pytest.mark.parametrize("salt", [7, ["a"], {"x": 1}, True])
async def test_a_non_string_cache_salt_is_a_400_naming_it(salt):
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    async with router_over([p, d], api_key=(KEY_A, KEY_B)) as (client, _):
        r = await client.post(
            "/v1/chat/completions", json={**chat_body("hi"), "cache_salt": salt}, headers=_h(KEY_A, "c")
        )
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "cache_salt"
    assert not p.seen and not d.seen
