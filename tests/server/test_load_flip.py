"""The ppd policy, live in the router: a conversation's turns go D-local while the decode worker
is idle, flip to P->D when the worker reports heavy load (/v1/loads, polled on demand - no
sleeps), and flip back when the load falls."""

from __future__ import annotations

from fake_sglang import FakeWorker
from router_harness import router_over

HEAVY = {
    "num_running_reqs": 48,
    "num_waiting_reqs": 6,
    "num_used_tokens": 60_000,
    "running_context_tokens": 60_000,
    "max_total_num_tokens": 131_072,
}


async def _turn(client, history: list[dict], text: str, headers: dict | None = None) -> tuple[str, dict]:
    """One turn of a growing conversation (history + the new user message), as a chat app sends it."""
    history.append({"role": "user", "content": text})
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": history, "max_tokens": 4},
        headers={"X-PPD-Conversation-Id": "flip", **(headers or {})},
    )
    assert r.status == 200, await r.text()
    body = await r.json()
    history.append(body["choices"][0]["message"])
    return r.headers["X-PPD-Route"], body["ppd"]


def freeze_cost_model(state, monkeypatch) -> None:
    """These fakes answer instantly; online calibration would (rightly) learn that. The tests are
    about load and SLOs, so keep the default coefficients fixed."""
    monkeypatch.setattr(state.turns.cost_model, "observe", lambda obs: None)


async def test_ppd_flips_to_pd_under_decode_load_and_back(monkeypatch):
    p = FakeWorker(role="prefill", max_total_num_tokens=131_072)
    d = FakeWorker(role="decode", max_total_num_tokens=131_072, cached_tokens=50)
    async with router_over([p, d]) as (client, state):
        freeze_cost_model(state, monkeypatch)
        question = "Tell me more about that, in detail, please. " * 40
        history: list[dict] = []
        assert (await _turn(client, history, "Start a long conversation. " * 40))[0] == "pd"
        route, info = await _turn(client, history, question)
        assert route == "local", info["reason"]

        d.load = HEAVY
        await state.registry.poll_once(state.session, 2.0)
        assert state.registry.get(d.url).load.running_reqs == 48
        route, info = await _turn(client, history, question)
        assert route == "pd", info["reason"]
        assert info["predicted"]["local"]["tpot_ms"] > info["predicted"]["pd"]["tpot_ms"]

        d.load = {}
        await state.registry.poll_once(state.session, 2.0)
        route, info = await _turn(client, history, question)
        assert route == "local", info["reason"]


async def test_tpot_slo_alone_flips_a_moderately_loaded_decode_to_pd(monkeypatch):
    p = FakeWorker(role="prefill")
    d = FakeWorker(role="decode", cached_tokens=50, load={"num_running_reqs": 8, "running_context_tokens": 8000})
    async with router_over([p, d]) as (client, state):
        freeze_cost_model(state, monkeypatch)
        history: list[dict] = []
        await _turn(client, history, "Hello there. " * 40)
        _, info = await _turn(client, history, "More please. " * 40)
        tpot_pd = info["predicted"]["pd"]["tpot_ms"]
        tpot_local = info["predicted"]["local"]["tpot_ms"]
        assert tpot_local > tpot_pd
        slo = (tpot_pd + tpot_local) / 2  # met by P->D, broken by D-local
        route, info = await _turn(client, history, "And more. " * 40, {"X-SLO-TPOT-Ms": str(slo)})
        assert route == "pd", info["reason"]
        assert "SLO" in info["reason"]
