"""Tokenizer and chat template (synthetic byte-level tokenizer; no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ppd_kernels.chat_template import ChatTemplate
from ppd_kernels.tokenizer import load_tokenizer

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("synthetic:3")


@pytest.mark.parametrize("text", ["", "hello world", "héllo – 数字 123 🙂", "tabs\tand\nnewlines  "])
def test_round_trip(tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))  # byte-level: one id per byte
    assert tokenizer.decode(ids) == text


def test_special_tokens(tokenizer):
    assert tokenizer.special_tokens == {"<|endoftext|>": 256, "<|im_start|>": 257, "<|im_end|>": 258}
    assert tokenizer.bos_token_id == 257 and tokenizer.eos_token_ids == {256, 258}
    assert tokenizer.vocab_size == 259
    ids = tokenizer.encode("<|im_start|>a<|im_end|>")
    assert ids == [257, ord("a"), 258]
    assert tokenizer.decode(ids) == "a"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>a<|im_end|>"


def test_chat_template(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert not tokenizer.apply_chat_template(messages, add_generation_prompt=False).endswith("assistant\n")


def test_content_parts_are_joined(tokenizer):
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    assert "user\nHello there<|im_end|>" in tokenizer.apply_chat_template([{"role": "user", "content": parts}])


def test_tools_go_to_the_system_prompt_when_the_template_ignores_them(tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL])
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\n")
    assert "<tools>\n" + json.dumps(WEATHER_TOOL["function"]) + "\n</tools>" in system
    assert "<tool_call>" in system
    with_system = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], tools=[WEATHER_TOOL]
    )
    assert with_system.startswith("<|im_start|>system\nBe brief.\n\n") and with_system.count("system\n") == 1


def test_tool_call_history_is_rendered_hermes_style(tokenizer):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
    ]
    prompt = tokenizer.apply_chat_template(messages, tools=[WEATHER_TOOL])
    assert (
        '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
        "</tool_call><|im_end|>"
    ) in prompt
    assert "<|im_start|>tool\n<tool_response>\n18C\n</tool_response><|im_end|>" in prompt


def test_template_that_handles_tools_gets_them_raw():
    template = ChatTemplate(
        "{% for t in tools %}{{ t.function.name }};{% endfor %}"
        "{% for m in messages %}{{ m.role }}{% if m.tool_calls %}+calls{% endif %}{% endfor %}"
    )
    rendered = template.render(
        [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}], tools=[WEATHER_TOOL]
    )
    assert rendered == "get_weather;assistant+calls"


@pytest.mark.parametrize(
    "messages,match",
    [
        ([{"content": "no role"}], "role"),
        ([{"role": "user", "content": 5}], "content"),
    ],
)
def test_bad_messages_raise_value_error(tokenizer, messages, match):
    with pytest.raises(ValueError, match=match):
        tokenizer.apply_chat_template(messages)


def test_template_raise_exception_is_a_value_error():
    with pytest.raises(ValueError, match="chat template error: nope"):
        ChatTemplate("{{ raise_exception('nope') }}").render([])


def test_bad_sources():
    with pytest.raises(ValueError, match="seed"):
        load_tokenizer("synthetic:-1")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer("/nowhere/tok")


def test_tokenizer_import_chain_does_not_import_torch():
    code = (
        "import sys; from ppd_kernels.tokenizer import load_tokenizer; import ppd_kernels; "
        "load_tokenizer('synthetic').encode('x'); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
