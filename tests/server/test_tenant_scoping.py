"""Conversation ids are scoped per API key: with several keys configured, tenant B sending tenant
A's conversation id gets a fresh session of its own - no D-local turn onto A's decode worker, no
turn count, cache or placement of A's in B's answers - and A's session is untouched. The key is
never stored: the table and the admin API hold the key's id."""

from __future__ import annotations

from fake_sglang import FakeWorker
from router_harness import chat_body, router_over

from ppd_sdk import wire
from ppd_server.http.auth import key_id

KEY_A, KEY_B, ADMIN = "sk-tenant-a-5d1f0c", "sk-tenant-b-c93e77", "adm-2b4e"


def _h(key: str, conv: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", wire.HEADER_CONVERSATION_ID: conv, **extra}


async def test_tenant_b_cannot_read_or_steer_tenant_a_session():
    p, d1, d2 = FakeWorker(role="prefill"), FakeWorker(role="decode"), FakeWorker(role="decode")
    d1.cached_tokens = d2.cached_tokens = 7
    async with router_over([p, d1, d2], api_key=(KEY_A, KEY_B), admin_key=ADMIN) as (client, state):
        for turn in (1, 2):
            r = await client.post("/v1/chat/completions", json=chat_body(f"a{turn}"), headers=_h(KEY_A, "shared-id"))
            assert r.status == 200
        assert r.headers[wire.HEADER_ROUTE] == "local" and r.headers[wire.HEADER_TURN] == "2"
        r2 = await client.post("/v1/chat/completions", json=chat_body("p"), headers=_h(KEY_A, "a-private"))
        assert r2.status == 200
        a_decode = r.headers[wire.HEADER_DECODE]
        a_seen = {w.url: len(w.seen) for w in (p, d1, d2)}
        seen_by_policy: list = []
        decide = state.turns.decide

        def spy(turn):
            seen_by_policy.append(turn.session)
            return decide(turn)

        state.turns.decide = spy

        # B, same conversation id, with and without a turn number, and as a fork of A's id
        for extra in ({}, {wire.HEADER_TURN: "3"}):
            r = await client.post("/v1/chat/completions", json=chat_body("b"), headers=_h(KEY_B, "shared-id", **extra))
            assert r.status == 200
            info = (await r.json())["ppd"]
            assert info["conversation_id"] == "shared-id", "ids stay opaque to the client: B sees its own id"
            if not extra:
                assert info["route"] == "pd" and info["turn"] == 1, "B's first turn is a fresh P->D turn 1"
        assert seen_by_policy[0] is None, "B's first turn: the policy sees no session (not A's)"
        assert seen_by_policy[1].turns == 1 and seen_by_policy[1].decode_url == r.headers[wire.HEADER_DECODE]
        assert r.headers[wire.HEADER_TURN] == "3"  # B's explicit number is B's business
        r = await client.post(
            "/v1/chat/completions",
            json=chat_body("fork"),
            headers=_h(KEY_B, "b-child", **{wire.HEADER_PARENT_CONVERSATION_ID: "a-private"}),
        )
        # A fork of an id B does not own starts fresh (as a fork of an unknown parent does)
        assert r.status == 200 and seen_by_policy[-1] is None, "B cannot fork onto A's placement"

        # A's session is untouched: still D-local on the same decode worker, turn 3
        r = await client.post("/v1/chat/completions", json=chat_body("a3"), headers=_h(KEY_A, "shared-id"))
        assert r.headers[wire.HEADER_ROUTE] == "local" and r.headers[wire.HEADER_TURN] == "3"
        assert r.headers[wire.HEADER_DECODE] == a_decode
        assert len(p.seen) >= a_seen[p.url] + 2, "B's fresh turns went P->D"

        # the table keys by the key's id, never the key; the admin API is the admin's alone
        assert (await client.get("/admin/sessions", headers={"Authorization": f"Bearer {KEY_A}"})).status == 401
        listing = await client.get("/admin/sessions", headers={"Authorization": f"Bearer {ADMIN}"})
        text = await listing.text()
        assert KEY_A not in text and KEY_B not in text
        rows = {(s["tenant"], s["conversation_id"]): s for s in (await listing.json())["sessions"]}
        assert set(rows) == {
            (key_id(KEY_A), "shared-id"),
            (key_id(KEY_A), "a-private"),
            (key_id(KEY_B), "shared-id"),
            (key_id(KEY_B), "b-child"),
        }
        assert rows[(key_id(KEY_A), "shared-id")]["turns"] == 3
        assert rows[(key_id(KEY_B), "shared-id")]["turns"] == 2


async def test_one_key_or_none_keeps_one_namespace():
    p, d = FakeWorker(role="prefill"), FakeWorker(role="decode")
    d.cached_tokens = 7
    async with router_over([p, d], api_key="sk-only") as (client, state):
        for _ in (1, 2):
            r = await client.post("/v1/chat/completions", json=chat_body(), headers=_h("sk-only", "c"))
        assert r.headers[wire.HEADER_ROUTE] == "local"
        assert state.turns.sessions.snapshot()[0]["tenant"] is None
