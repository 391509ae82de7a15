"""Hermes <tool_call> parsing into OpenAI tool_calls, and stream-safe prefixes."""

from __future__ import annotations

import json

from ppd_engine.tool_calls import parse_tool_calls, safe_prefix_len


def test_single_call_with_dict_arguments():
    content, calls = parse_tool_calls('<tool_call>{"name": "get_weather", "arguments": {"city": "Berlin"}}</tool_call>')
    assert content is None and len(calls) == 1
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Berlin"}


def test_text_around_calls_and_multiple_calls():
    text = (
        'Let me check.\n<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": "{\\"x\\": 1}"}</tool_call>'
    )
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["a", "b"]
    assert calls[1]["function"]["arguments"] == '{"x": 1}'


def test_unterminated_call_at_the_end_still_parses():
    content, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"q": 2}}')
    assert calls and calls[0]["function"]["name"] == "f"


def test_invalid_json_is_left_as_content():
    text = "<tool_call>{not json}</tool_call>"
    assert parse_tool_calls(text) == (text, [])
    assert parse_tool_calls("plain answer") == ("plain answer", [])


def test_safe_prefix_holds_back_possible_markup():
    assert safe_prefix_len("hello") == 5
    assert safe_prefix_len("hello <tool") == 6
    assert safe_prefix_len("hi <tool_call>{") == 3
    assert safe_prefix_len("a<") == 1 and safe_prefix_len("a<b") == 3


def test_chat_message_with_and_without_tools():
    from ppd_engine.openai_api import chat_message

    text = 'Sure.<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
    message, calls = chat_message(text, tools=True)
    assert message["content"] == "Sure." and message["tool_calls"] == calls and len(calls) == 1
    message, calls = chat_message(text, tools=False)
    assert message == {"role": "assistant", "content": text} and calls == []


def test_stream_deltas_hold_back_tool_markup_then_emit_tool_calls():
    from ppd_engine.openai_api import ChatDeltas

    deltas = ChatDeltas(tools=True)
    steps = [
        "Ok",
        "Ok <tool",
        'Ok <tool_call>{"name": "f",',
        'Ok <tool_call>{"name": "f", "arguments": {}}</tool_call>',
    ]
    out = [deltas.next(text, finished=(i == len(steps) - 1)) for i, text in enumerate(steps)]
    assert out[0] == ({"role": "assistant", "content": "Ok"}, False)
    assert out[1] == ({"content": " "}, False)
    assert out[2] == ({}, False)
    last, has_calls = out[3]
    assert has_calls and last["tool_calls"][0]["function"]["name"] == "f" and last["tool_calls"][0]["index"] == 0
    assert "content" not in last


def test_stream_deltas_flush_held_back_text_when_no_call_comes():
    from ppd_engine.openai_api import ChatDeltas

    deltas = ChatDeltas(tools=True)
    assert deltas.next("a <tool", finished=False)[0] == {"role": "assistant", "content": "a "}
    assert deltas.next("a <tools are fun", finished=True) == ({"content": "<tools are fun"}, False)
