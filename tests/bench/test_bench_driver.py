"""The driver against an in-process fake endpoint: what it sends (hints, ignore_eos, history),
what it measures, and how failures and the deadline are counted."""

from __future__ import annotations

import pytest
from fake_endpoint import FakeEndpoint
from ppd_bench.driver import BenchError, RunConfig, arun, sessions_from_result

from ppd_sim.workload import Session


def _sessions(n: int = 2, turns: int = 3) -> list[Session]:
    return [Session(f"s{k}", tuple([(20, 5)] + [(8, 4)] * (turns - 1)), tuple([0.0] * (turns - 1))) for k in range(n)]


async def _run(fake: FakeEndpoint, sessions: list[Session], **kw) -> dict:
    url = await fake.start()
    try:
        cfg = RunConfig(url=url, rate=50.0, sessions=len(sessions), duration_s=5.0, progress=False, **kw)
        return await arun(cfg, sessions, "test")
    finally:
        await fake.stop()


async def test_every_turn_carries_the_hints_and_the_history():
    fake = FakeEndpoint()
    res = await _run(fake, _sessions(1, 3), slo_ttft_ms=500.0, w_ttft=2.0)
    assert len(fake.requests) == 3
    conv_ids = {h["X-PPD-Conversation-Id"] for h, _ in fake.requests}
    assert len(conv_ids) == 1
    for k, (headers, body) in enumerate(fake.requests, 1):
        assert headers["X-PPD-Turn"] == str(k) and headers["X-SLO-TTFT-Ms"] == "500"
        assert body["ppd"]["weights"] == {"ttft": 2.0, "tpot": 1.0} and body["prompt_cache_key"] in conv_ids
        assert body["ignore_eos"] is True and body["stream"] is True and body["max_tokens"] == (5 if k == 1 else 4)
        assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * (k - 1) + ["user"]
    assert len(fake.requests[0][1]["messages"][0]["content"].split()) == 20
    s = res["summary"]
    assert s["turn1"]["turns"] == 1 and s["turn2plus"]["turns"] == 2 and s["all"]["success_rate"] == 1.0
    assert s["turn2plus"]["routes"] == {"local": 2} and s["turn1"]["routes"] == {"pd": 1}
    assert s["turn2plus"]["cached_tokens"] > 0 and s["turn1"]["cached_tokens"] == 0
    rec = res["records"][0]
    assert (
        rec["completion_tokens"] == 5 and rec["ttft_ms"] > 0 and rec["tpot_ms"] > 0 and rec["e2e_ms"] >= rec["ttft_ms"]
    )
    assert res["load"] == {**res["load"], "sessions": 1, "turns": 3, "sessions_per_s": 50.0}


async def test_headers_only_and_no_ignore_eos():
    fake = FakeEndpoint()
    await _run(fake, _sessions(1, 1), body_hints=False, ignore_eos=False)
    headers, body = fake.requests[0]
    assert "ppd" not in body and "ignore_eos" not in body and "X-PPD-Conversation-Id" in headers


async def test_a_failed_turn_fails_the_rest_of_its_session():
    fake = FakeEndpoint(fail_turns=(2,))
    res = await _run(fake, _sessions(2, 3))
    assert len(fake.requests) == 4  # turn 3 is never sent
    s = res["summary"]
    assert s["turn1"]["success_rate"] == 1.0 and s["turn2plus"]["ok"] == 0 and s["turn2plus"]["failed"] == 4
    errors = s["turn2plus"]["errors"]
    assert any("HTTP 500: boom" in e for e in errors) and any("not sent: turn 2 failed" in e for e in errors)
    assert s["all"]["slo_attainment"] == pytest.approx(2 / 6, abs=1e-3)


async def test_the_deadline_ends_the_run_and_counts_what_was_cut():
    fake = FakeEndpoint(hang_turns=(2,))
    res = await _run(fake, _sessions(1, 3), deadline_s=1.0)
    assert res["hit_deadline"] is True and res["wall_s"] < 5
    assert [r["ok"] for r in res["records"]] == [True, False, False]
    assert {r["error"] for r in res["records"][1:]} == {"run deadline"}


async def test_a_recorded_arrival_time_is_honoured():
    fake = FakeEndpoint()
    sessions = [Session("a", ((4, 2),), (), 0.0), Session("b", ((4, 2),), (), 400.0)]
    res = await _run(fake, sessions)
    sent = {r["session"]: r["sent_s"] for r in res["records"]}
    assert sent["b"] - sent["a"] >= 0.35
    assert [s["arrival_ms"] for s in res["sessions"]] == [0.0, 400.0]
    assert sessions_from_result(res) == sessions


async def test_unreachable_url_is_a_bench_error_naming_it():
    from ppd_server.fleet.launcher import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BenchError, match=f"cannot reach --url '{url}'"):
        await arun(RunConfig(url=url, progress=False), _sessions(1, 1))
