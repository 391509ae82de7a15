"""SessionTable: placement after each turn, turn inference, forks, bounds (LRU, idle TTL),
forget_worker, snapshot."""

from __future__ import annotations

import pytest

from ppd_server.routing.types import Decision
from ppd_server.sessions import SessionTable

PD = Decision("pd", "http://d0", "http://p0", "pd: turn 1", "ppd")
LOCAL = Decision("local", "http://d0", None, "local: S=+0.5", "ppd")
REPLICA = Decision("replica", "http://u0", None, "replica", "replica")


def test_unknown_or_anonymous_conversations_have_no_view():
    st = SessionTable()
    assert st.view("nope", 0.0) is None
    assert st.view(None, 0.0) is None
    st.record(None, PD, 100, 0, 10, 0.0)
    assert len(st) == 0


def test_turns_place_the_kv_where_the_workers_hold_it():
    st = SessionTable()
    st.record("c", PD, 100, 0, 20, now=1.0)
    v = st.view("c", 1.0)
    assert (v.decode_url, v.prefill_url, v.cached_tokens_decode, v.cached_tokens_prefill, v.turns) == (
        "http://d0",
        "http://p0",
        120,
        100,
        1,
    )
    st.record("c", LOCAL, 150, 120, 30, now=2.0)
    v = st.view("c", 2.0)
    # a local turn grows the decode side only; the prefill worker keeps its older prefix
    assert (v.decode_url, v.prefill_url, v.cached_tokens_decode, v.cached_tokens_prefill, v.turns) == (
        "http://d0",
        "http://p0",
        180,
        100,
        2,
    )
    st.record("c", Decision("pd", "http://d1", "http://p1", "", "pd"), 200, 100, 5, now=3.0)
    v = st.view("c", 3.0)
    assert (v.decode_url, v.prefill_url, v.cached_tokens_decode, v.cached_tokens_prefill, v.turns) == (
        "http://d1",
        "http://p1",
        205,
        200,
        3,
    )


def test_replica_turns_have_no_prefill_placement():
    st = SessionTable()
    st.record("c", PD, 100, 0, 20, now=1.0)
    st.record("c", REPLICA, 150, 0, 20, now=2.0)
    v = st.view("c", 2.0)
    assert (v.decode_url, v.prefill_url, v.cached_tokens_prefill) == ("http://u0", None, 0)


@pytest.mark.parametrize("explicit,recorded,want", [(None, 0, 1), (None, 2, 3), (7, 2, 7), (1, 2, 1)])
def test_turn_inference(explicit, recorded, want):
    st = SessionTable()
    for i in range(recorded):
        st.record("c", PD, 100, 0, 10, now=float(i))
    assert st.turn_for("c", explicit, now=5.0) == want


def test_turn_must_be_positive():
    with pytest.raises(ValueError):
        SessionTable().turn_for("c", 0, 0.0)


def test_idle_sessions_expire():
    st = SessionTable(idle_ttl_s=10.0)
    st.record("c", PD, 100, 0, 10, now=0.0)
    assert st.view("c", 10.0) is not None
    assert st.view("c", 10.5) is None
    assert st.turn_for("c", None, 10.5) == 1
    assert len(st) == 0 and st.expired == 1


def test_writes_purge_expired_sessions_so_memory_follows_live_traffic():
    st = SessionTable(idle_ttl_s=10.0)
    for i in range(50):
        st.record(f"old{i}", PD, 100, 0, 10, now=0.0)
    st.record("new", PD, 100, 0, 10, now=100.0)
    assert len(st) == 1 and st.expired == 50


def test_lru_bound_evicts_the_least_recently_used():
    st = SessionTable(max_sessions=100)
    for i in range(1000):
        st.record(f"c{i}", PD, 100, 0, 10, now=float(i))
        if i == 950:
            st.record("c860", LOCAL, 200, 100, 10, now=float(i))  # a new turn keeps c860 warm
    assert len(st) == 100 and st.evicted_lru == 900
    assert st.view("c860", 1000.0) is not None
    assert st.view("c861", 1000.0) is None
    assert st.view("c0", 1000.0) is None
    assert st.view("c999", 1000.0) is not None


def test_view_does_not_refresh_last_use():
    st = SessionTable(idle_ttl_s=10.0)
    st.record("c", PD, 100, 0, 10, now=0.0)
    for t in (4.0, 8.0):
        assert st.view("c", t) is not None
    assert st.view("c", 11.0) is None


def test_fork_starts_on_the_parents_workers_with_its_cache():
    st = SessionTable()
    st.record("parent", PD, 400, 0, 100, now=0.0)
    child = st.start_fork("child", "parent", now=1.0)
    assert (child.decode_url, child.prefill_url, child.cached_tokens_decode, child.cached_tokens_prefill) == (
        "http://d0",
        "http://p0",
        500,
        400,
    )
    assert (child.turns, child.forked_from) == (0, "parent")
    assert st.turn_for("child", None, 1.0) == 1
    st.record("child", LOCAL, 520, 500, 10, now=2.0)
    assert st.view("child", 2.0).turns == 1
    assert st.view("parent", 2.0).turns == 1  # the parent is untouched


def test_fork_edge_cases():
    st = SessionTable()
    assert st.start_fork("child", "unknown-parent", 0.0) is None
    with pytest.raises(ValueError):
        st.start_fork("same", "same", 0.0)
    st.record("parent", PD, 400, 0, 100, now=0.0)
    st.record("child", Decision("pd", "http://d1", "http://p1", "", "pd"), 50, 0, 5, now=0.0)
    # a child with turns of its own keeps its placement
    assert st.start_fork("child", "parent", 1.0).decode_url == "http://d1"


def test_forget_worker_unplaces_its_sessions():
    st = SessionTable()
    st.record("a", PD, 100, 0, 10, now=0.0)
    st.record("b", Decision("pd", "http://d1", "http://p0", "", "pd"), 100, 0, 10, now=0.0)
    assert st.forget_worker("http://d0") == 1
    a, b = st.view("a", 0.0), st.view("b", 0.0)
    assert (a.decode_url, a.cached_tokens_decode, a.prefill_url, a.turns) == (None, 0, "http://p0", 1)
    assert b.decode_url == "http://d1"
    assert st.forget_worker("http://p0") == 2
    assert st.view("b", 0.0).prefill_url is None


def test_snapshot_lists_newest_first_with_limit():
    st = SessionTable()
    for i in range(5):
        st.record(f"c{i}", PD, 100, 7, 10, now=float(i))
    snap = st.snapshot(limit=3)
    assert [s["conversation_id"] for s in snap] == ["c4", "c3", "c2"]
    assert (
        snap[0]["decode_url"] == "http://d0" and snap[0]["last_reported_cached"] == 7 and snap[0]["last_route"] == "pd"
    )


@pytest.mark.parametrize("kw", [{"max_sessions": 0}, {"idle_ttl_s": 0}])
def test_bad_bounds_are_rejected(kw):
    with pytest.raises(ValueError):
        SessionTable(**kw)


def test_admit_sees_what_turn_for_and_view_see():
    """``admit`` (one lookup when the client numbers its turns and does not fork) hands the policy
    the turn and session that ``turn_for`` and ``view`` give, for known, unknown, expired and
    other-tenant conversations, and still refuses a turn below 1."""
    from ppd_sdk.wire import Hints

    st = SessionTable(idle_ttl_s=10.0)
    st.record("c", PD, 100, 0, 20, now=1.0)
    st.record("old", LOCAL, 50, 0, 5, now=0.0)
    st.record("t", PD, 70, 0, 7, now=1.0, tenant="k1")
    for conv, turn, tenant in (("c", 2, None), ("c", 5, None), ("new", 1, None), ("t", 2, "k1"), ("t", 2, "k2")):
        request, session = st.admit(Hints(conversation_id=conv, turn=turn), 120, 64, 5.0, tenant)
        assert request.turn == st.turn_for(conv, turn, 5.0, tenant) == turn
        assert session == st.view(conv, 5.0, tenant)
        assert (request.conversation_id, request.prompt_tokens, request.max_new_tokens) == (conv, 120, 64)
    assert st.admit(Hints(conversation_id="c", turn=2), 120, 64, 5.0)[1].turns == 1
    _, expired = st.admit(Hints(conversation_id="old", turn=2), 60, 8, now=20.0)  # idle past the TTL
    assert expired is None and st.view("old", 20.0) is None
    request, session = st.admit(Hints(conversation_id="c"), 120, 64, 5.0)  # no turn: inferred
    assert request.turn == 2 and session == st.view("c", 5.0)
    with pytest.raises(ValueError):
        st.admit(Hints.model_construct(conversation_id="c", turn=0, parent_conversation_id=None), 120, 64, 5.0)
