"""The wire contract shared by ppd_sdk and ppd_server: where each hint is read from, which
source wins, and that every bad value is a WireError naming its field."""

from __future__ import annotations

import pytest

from ppd_sdk import wire
from ppd_sdk.wire import SLO, Hints, RouteInfo, Weights, WireError, parse_hints


def test_no_hints_is_a_one_shot_balanced_turn() -> None:
    h = parse_hints({}, {"messages": []})
    assert h.conversation_id is None and h.turn is None
    assert h.weights == Weights(ttft=1.0, tpot=1.0)
    assert h.slo == SLO()


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"X-PPD-Conversation-Id": "hdr"}, {"prompt_cache_key": "pck", "ppd": {"conversation_id": "body"}}, "hdr"),
        ({"x-ppd-conversation-id": "lower"}, {}, "lower"),
        ({}, {"prompt_cache_key": "pck", "ppd": {"conversation_id": "body"}}, "pck"),
        ({}, {"ppd": {"conversation_id": "body"}}, "body"),
    ],
    ids=["header-wins", "header-lowercase", "prompt-cache-key-next", "ppd-field-last"],
)
def test_conversation_id_precedence(headers: dict, body: dict, expected: str) -> None:
    assert parse_hints(headers, body).conversation_id == expected


def test_slo_headers_override_body_and_presets_set_weights() -> None:
    h = parse_hints(
        {"X-SLO-TTFT-Ms": "150", "x-slo-tpot-ms": "40.5"},
        {"ppd": {"preset": "interactive", "slo": {"ttft_ms": 999, "tpot_ms": 999}}},
    )
    assert h.slo == SLO(ttft_ms=150.0, tpot_ms=40.5)
    assert h.weights == wire.PRESETS["interactive"]


def test_explicit_weights_beat_preset() -> None:
    h = parse_hints({}, {"ppd": {"preset": "throughput", "weights": {"ttft": 3, "tpot": 0.5}}})
    assert h.weights == Weights(ttft=3.0, tpot=0.5)


def test_fork_and_turn() -> None:
    h = parse_hints({"X-PPD-Parent-Conversation-Id": "parent", "X-PPD-Turn": "3"}, {"prompt_cache_key": "child"})
    assert (h.conversation_id, h.parent_conversation_id, h.turn) == ("child", "parent", 3)
    assert parse_hints({}, {"ppd": {"turn": 2, "parent_conversation_id": "p"}}).turn == 2


@pytest.mark.parametrize(
    ("headers", "body", "param"),
    [
        ({"X-SLO-TTFT-Ms": "fast"}, {}, "X-SLO-TTFT-Ms"),
        ({"X-SLO-TPOT-Ms": "-5"}, {}, "X-SLO-TPOT-Ms"),
        ({"X-SLO-TTFT-Ms": "inf"}, {}, "X-SLO-TTFT-Ms"),
        ({}, {"ppd": {"slo": {"ttft_ms": 0}}}, "ppd.slo"),
        ({}, {"ppd": {"slo": {"ttft_ms": "soon"}}}, "ppd.slo"),
        ({}, {"ppd": {"slo": {"latency": 3}}}, "ppd.slo"),
        ({}, {"ppd": {"weights": {"ttft": -1}}}, "ppd.weights"),
        ({}, {"ppd": {"weights": "heavy"}}, "ppd.weights"),
        ({}, {"ppd": {"preset": "turbo"}}, "ppd.preset"),
        ({}, {"ppd": {"preset": ["balanced"]}}, "ppd.preset"),
        ({}, {"ppd": {"bogus": 1}}, "ppd.bogus"),
        ({}, {"ppd": "fast"}, "ppd"),
        ({}, {"ppd": {"turn": 0}}, "ppd.turn"),
        ({}, {"ppd": {"turn": True}}, "ppd.turn"),
        ({"X-PPD-Turn": "2.5"}, {}, "X-PPD-Turn"),
        ({}, {"prompt_cache_key": ""}, "prompt_cache_key"),
        ({}, {"prompt_cache_key": 7}, "prompt_cache_key"),
        ({"X-PPD-Conversation-Id": "x" * 300}, {}, "X-PPD-Conversation-Id"),
    ],
)
def test_bad_hints_name_their_field(headers: dict, body: dict, param: str) -> None:
    with pytest.raises(WireError) as err:
        parse_hints(headers, body)
    assert err.value.param == param
    assert err.value.message


def test_self_fork_is_rejected_naming_where_the_parent_came_from() -> None:
    with pytest.raises(WireError) as err:
        parse_hints({"X-PPD-Parent-Conversation-Id": "a"}, {"prompt_cache_key": "a"})
    assert err.value.param == "X-PPD-Parent-Conversation-Id"
    with pytest.raises(WireError) as err:
        parse_hints({"X-PPD-Conversation-Id": "a"}, {"ppd": {"parent_conversation_id": "a"}})
    assert err.value.param == "ppd.parent_conversation_id"


def test_apply_round_trips_through_parse() -> None:
    sent = Hints(
        conversation_id="c-1",
        parent_conversation_id="c-0",
        turn=4,
        weights=Weights(ttft=2.0, tpot=0.5),
        slo=SLO(ttft_ms=120.0, tpot_ms=33.3),
    )
    headers, body = sent.apply({"X-Other": "1"}, {"model": "m"})
    assert parse_hints(headers, body) == sent
    # the clients' body-only spelling still parses to the same hints
    body_only = {"ppd": {"conversation_id": "c-1", "parent_conversation_id": "c-0", "turn": 4,
                         "weights": {"ttft": 2.0, "tpot": 0.5}, "slo": {"ttft_ms": 120.0, "tpot_ms": 33.3}}}
    assert parse_hints({}, body_only) == sent


def test_apply_sends_each_hint_once_and_the_id_as_the_cache_key() -> None:
    hints = Hints(conversation_id="c", turn=2, weights=wire.PRESETS["interactive"], slo=SLO(ttft_ms=500))
    given_headers, given_body = {"X-Other": "1"}, {"model": "m", "ppd": {"stale": True}}
    headers, body = hints.apply(given_headers, given_body)
    assert headers == {"X-Other": "1", "X-PPD-Conversation-Id": "c", "X-PPD-Turn": "2", "X-SLO-TTFT-Ms": "500"}
    assert body == {"model": "m", "prompt_cache_key": "c", "ppd": {"weights": {"ttft": 2.0, "tpot": 1.0}}}
    assert given_headers == {"X-Other": "1"} and "prompt_cache_key" not in given_body  # copies, not in place
    _, plain = hints.apply(None, {"model": "m"}, ppd_body=False)
    assert plain == {"model": "m", "prompt_cache_key": "c"}
    assert Hints().apply() == ({}, {"ppd": {"weights": {"ttft": 1.0, "tpot": 1.0}}})


def test_parse_keeps_the_validated_objects() -> None:
    h = parse_hints({}, {"ppd": {"preset": "throughput"}})
    assert h.weights is wire.PRESETS["throughput"] and h.slo is wire.NO_SLO


def test_route_body_is_a_route_info_and_headers_parse_back() -> None:
    body = wire.route_body("local", 3, "c", "ppd", "http://d0", None, 40, "local: S=+0.2",
                           [("local", 31.23456, 40.0, 0.123456), ("pd", 90.0, 38.0, 0.0)])
    assert set(body) == set(RouteInfo.model_fields)
    info = wire.parse_route(body, {}, turn=1)
    assert info is not None and info.turn == 3 and info.predicted["local"].score == 0.1235
    headers = wire.route_headers("pd", 2, "http://d0", "http://p0")
    from_headers = wire.parse_route(None, {k.lower(): v for k, v in headers.items()}, turn=9)
    assert from_headers == RouteInfo(route="pd", turn=2, decode="http://d0", prefill="http://p0")
    assert wire.parse_route(None, {}, turn=1) is None


def test_the_sdk_span_and_the_router_span_name_a_decision_the_same_way() -> None:
    from ppd_sdk._telemetry import _route_attributes
    from ppd_sdk._types import Reply
    from ppd_server.routing.types import Candidate, Decision
    from ppd_server.telemetry import decision_attributes

    cands = (Candidate("local", "http://d0", None, 30.0, 41.0, 0.5), Candidate("pd", "http://d0", "http://p0", 90.0, 40.0, 0.0))
    decision = Decision("local", "http://d0", None, "local: S=+0.50", "ppd", cands, 0.5, 100, Weights(ttft=4.0, tpot=1.0))
    router = decision_attributes(decision)
    body = wire.route_body("local", 2, "c", "ppd", "http://d0", None, 100, decision.reason,
                           ((c.route, c.ttft_ms, c.tpot_ms, c.score) for c in cands))
    sdk = _route_attributes(Reply(text="", conversation_id="c", turn=2, model="m", route=RouteInfo.model_validate(body)))
    shared = set(router) & set(sdk)
    assert {wire.ATTR_ROUTE, wire.ATTR_POLICY, wire.ATTR_DECODE, wire.ATTR_REASON, wire.ATTR_SCORE} <= shared
    assert {wire.attr_candidate(r, f) for r in ("local", "pd") for f in ("ttft_ms", "tpot_ms", "score")} <= shared
    assert {k: router[k] for k in shared} == {k: sdk[k] for k in shared}
    assert router[wire.ATTR_POLICY_WEIGHT_TTFT] == 4.0 and router[wire.ATTR_POLICY_WEIGHT_TPOT] == 1.0
    assert not any(k.startswith("ppd.route.") for k in sdk)  # one name per attribute


def test_hint_attributes() -> None:
    attrs = wire.hint_attributes(Hints(conversation_id="c", weights=Weights(ttft=2.0), slo=SLO(tpot_ms=30)), turn=3)
    assert attrs == {"gen_ai.conversation.id": "c", "ppd.turn": 3, "ppd.weights.ttft": 2.0, "ppd.weights.tpot": 1.0,
                     "ppd.slo.tpot_ms": 30.0}


def test_hints_reach_the_policy_as_the_same_objects() -> None:
    """One parse, one shape: the router's and the simulator's admission hand the policy the
    Weights and SLO objects the parser made, and the Decision records what the policy used."""
    from ppd_server.routing.policies import make_policy
    from ppd_server.sessions import SessionTable

    hints = parse_hints({"X-PPD-Conversation-Id": "c", "X-SLO-TTFT-Ms": "300"}, {"ppd": {"weights": {"ttft": 2, "tpot": 1}}})
    request, session = SessionTable().admit(hints, prompt_tokens=100, max_new_tokens=8, now=0.0)
    assert request.weights is hints.weights and request.slo is hints.slo
    assert (request.conversation_id, request.turn, session) == ("c", 1, None)
    assert make_policy("ppd").score_weights(request) is hints.weights
    assert make_policy("ppd", w_tpot=3.0).score_weights(request) == Weights(ttft=2.0, tpot=3.0)


def test_route_info_keeps_unknown_fields_for_forward_compatibility() -> None:
    info = RouteInfo.model_validate(
        {"route": "local", "turn": 2, "predicted": {"local": {"ttft_ms": 30, "tpot_ms": 41}}, "future": 1}
    )
    assert info.predicted["local"].ttft_ms == 30
    assert info.model_extra == {"future": 1}
    with pytest.raises(ValueError):
        RouteInfo.model_validate({"route": "sideways", "turn": 1})
