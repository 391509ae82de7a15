"""Read a local Hugging Face Llama/Qwen2 directory (config.json + *.safetensors) into
(ModelConfig, canonical weights). HF stores Q/K for rotate-half rope: ``rope_interleaved=False``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ppd_kernels.config import ModelConfig

_SUPPORTED_TYPES = {"llama", "qwen2", "mistral"}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "embed", "model.norm.weight": "norm", "lm_head.weight": "lm_head"}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm",
    "self_attn.q_proj.weight": "wq",
    "self_attn.k_proj.weight": "wk",
    "self_attn.v_proj.weight": "wv",
    "self_attn.q_proj.bias": "bq",
    "self_attn.k_proj.bias": "bk",
    "self_attn.v_proj.bias": "bv",
    "self_attn.o_proj.weight": "wo",
    "post_attention_layernorm.weight": "ffn_norm",
    "mlp.gate_proj.weight": "w_gate",
    "mlp.up_proj.weight": "w_up",
    "mlp.down_proj.weight": "w_down",
}
_LAYER_TENSOR = re.compile(r"model\.layers\.(\d+)\.(.+)")


def config_from_hf(directory: Path, has_lm_head: bool) -> ModelConfig:
    raw = json.loads((directory / "config.json").read_text())
    model_type = raw.get("model_type")
    if model_type not in _SUPPORTED_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r} in {directory / 'config.json'}; "
            f"supported: {sorted(_SUPPORTED_TYPES)}"
        )
    scaling = raw.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise ValueError(f"rope_scaling {scaling} is not supported")
    hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
    return ModelConfig(
        vocab_size=raw["vocab_size"],
        hidden_size=hidden,
        num_layers=raw["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads") or heads,
        head_dim=raw.get("head_dim") or hidden // heads,
        intermediate_size=raw["intermediate_size"],
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        rms_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_interleaved=False,
        # A checkpoint without lm_head.weight can only mean tied embeddings.
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)) or not has_lm_head,
        max_position_embeddings=raw.get("max_position_embeddings", 8192),
        attention_bias=model_type == "qwen2" or bool(raw.get("attention_bias", False)),
    )


def load_hf_dir(directory: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {directory}")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            canonical = _canonical_name(name)
            if canonical is not None:
                weights[canonical] = tensor
    config = config_from_hf(directory, has_lm_head="lm_head" in weights)
    return config, weights


def _canonical_name(hf_name: str) -> str | None:
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    match = _LAYER_TENSOR.fullmatch(hf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    if hf_name.endswith("rotary_emb.inv_freq"):  # a buffer some old checkpoints saved; recomputed
        return None
    raise ValueError(f"unsupported tensor {hf_name!r} (not part of a plain Llama/Qwen2 decoder)")
