"""The published surface of ppd_kernels (the engine codes against it)."""

from __future__ import annotations

import dataclasses

import pytest

import ppd_kernels


def test_public_names_are_pinned():
    assert ppd_kernels.__all__ == ["ForwardBatch", "KVPool", "LoadedModel", "ModelConfig", "SeqChunk", "load_model"]
    for name in ppd_kernels.__all__:
        assert getattr(ppd_kernels, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ppd_kernels.nope  # noqa: B018


def test_model_config_fields_and_frozen():
    fields = {f.name for f in dataclasses.fields(ppd_kernels.ModelConfig)}
    assert {
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "intermediate_size",
        "rope_theta",
        "rms_eps",
        "rope_interleaved",
        "tie_word_embeddings",
        "max_position_embeddings",
    } <= fields
    config = ppd_kernels.load_model("synthetic").config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.vocab_size = 1


@pytest.mark.parametrize(
    "overrides,match",
    [(dict(num_heads=3), "multiple"), (dict(head_dim=15), "even"), (dict(num_layers=0), "num_layers")],
)
def test_model_config_validation(overrides, match):
    from ppd_kernels.synthetic import synthetic_config

    with pytest.raises(ValueError, match=match):
        synthetic_config(**overrides)
