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


def test_hints_round_trip_through_headers_and_body() -> None:
    sent = Hints(
        conversation_id="c-1",
        parent_conversation_id="c-0",
        turn=4,
        weights=Weights(ttft=2.0, tpot=0.5),
        slo=SLO(ttft_ms=120.0, tpot_ms=33.3),
    )
    via_headers = parse_hints(sent.headers(), {"ppd": {"weights": sent.weights.model_dump()}})
    via_body = parse_hints({}, {"ppd": sent.body_field()})
    assert via_headers == sent
    assert via_body == sent


def test_route_info_keeps_unknown_fields_for_forward_compatibility() -> None:
    info = RouteInfo.model_validate(
        {"route": "local", "turn": 2, "predicted": {"local": {"ttft_ms": 30, "tpot_ms": 41}}, "future": 1}
    )
    assert info.predicted["local"].ttft_ms == 30
    assert info.model_extra == {"future": 1}
    with pytest.raises(ValueError):
        RouteInfo.model_validate({"route": "sideways", "turn": 1})
