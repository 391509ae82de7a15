"""Writers of tiny model files for loader tests: GGUF (via gguf.GGUFWriter) and HF dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ppd_kernels.chat_template import CHATML_TEMPLATE
from ppd_kernels.config import ModelConfig
from ppd_kernels.tokenizer_sources import SYNTHETIC_SPECIAL_TOKENS, byte_to_unicode, synthetic_tokenizer

# byte-level vocab + one merge ("h e" -> "he") + the ChatML specials: 260 tokens
GGUF_TOKENS = [*byte_to_unicode().values(), "he", *SYNTHETIC_SPECIAL_TOKENS]
GGUF_VOCAB = len(GGUF_TOKENS)

_GGUF_LAYER_NAMES = {
    "attn_norm": "attn_norm",
    "wq": "attn_q",
    "wk": "attn_k",
    "wv": "attn_v",
    "bq": "attn_q",
    "bk": "attn_k",
    "bv": "attn_v",
    "wo": "attn_output",
    "ffn_norm": "ffn_norm",
    "w_gate": "ffn_gate",
    "w_up": "ffn_up",
    "w_down": "ffn_down",
}
_HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm.weight",
    "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight",
    "bq": "self_attn.q_proj.bias",
    "bk": "self_attn.k_proj.bias",
    "bv": "self_attn.v_proj.bias",
    "wo": "self_attn.o_proj.weight",
    "ffn_norm": "post_attention_layernorm.weight",
    "w_gate": "mlp.gate_proj.weight",
    "w_up": "mlp.up_proj.weight",
    "w_down": "mlp.down_proj.weight",
}


def gguf_tensor_name(canonical: str) -> str:
    if canonical in ("embed", "norm", "lm_head"):
        return {"embed": "token_embd.weight", "norm": "output_norm.weight", "lm_head": "output.weight"}[canonical]
    _, index, short = canonical.split(".")
    suffix = "bias" if short in ("bq", "bk", "bv") else "weight"
    return f"blk.{index}.{_GGUF_LAYER_NAMES[short]}.{suffix}"


def write_gguf(path: Path, config: ModelConfig, weights: dict[str, torch.Tensor], qtype) -> None:
    """Matrices stored as ``qtype`` (a GGMLQuantizationType); norms and biases as F32."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("Tiny Test Model")
    writer.add_block_count(config.num_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(GGUF_TOKENS)
    writer.add_token_types([1] * (256 + 1) + [3] * len(SYNTHETIC_SPECIAL_TOKENS))
    writer.add_token_merges(["h e"])
    writer.add_bos_token_id(GGUF_TOKENS.index("<|im_start|>"))
    writer.add_eos_token_id(GGUF_TOKENS.index("<|im_end|>"))
    writer.add_chat_template(CHATML_TEMPLATE)
    for name, tensor in weights.items():
        array = tensor.float().numpy()
        if array.ndim == 1:
            writer.add_tensor(gguf_tensor_name(name), array)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(gguf_tensor_name(name), array.astype(np.float16))
        else:
            writer.add_tensor(gguf_tensor_name(name), gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def to_rotate_half(rows: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation: interleaved pairs -> HF rotate-half pairs."""
    head_dim = rows.shape[0] // num_heads
    return rows.reshape(num_heads, head_dim // 2, 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def write_hf_dir(
    directory: Path, config: ModelConfig, weights: dict[str, torch.Tensor], model_type: str = "llama"
) -> None:
    """HF layout of an interleaved-rope model (synthetic weights): Q/K converted to rotate-half,
    plus the synthetic tokenizer as tokenizer.json with a ChatML tokenizer_config.json."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in weights.items():
        if name in ("embed", "norm", "lm_head"):
            hf_name = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight"}[
                name
            ]
        else:
            _, index, short = name.split(".")
            hf_name = f"model.layers.{index}.{_HF_LAYER_NAMES[short]}"
            if short in ("wq", "bq"):
                tensor = to_rotate_half(tensor, config.num_heads)
            elif short in ("wk", "bk"):
                tensor = to_rotate_half(tensor, config.num_kv_heads)
        tensors[hf_name] = tensor.contiguous()
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": model_type,
                "vocab_size": config.vocab_size,
                "hidden_size": config.hidden_size,
                "num_hidden_layers": config.num_layers,
                "num_attention_heads": config.num_heads,
                "num_key_value_heads": config.num_kv_heads,
                "intermediate_size": config.intermediate_size,
                "rope_theta": config.rope_theta,
                "rms_norm_eps": config.rms_eps,
                "tie_word_embeddings": config.tie_word_embeddings,
                "max_position_embeddings": config.max_position_embeddings,
                "eos_token_id": 256,
            }
        )
    )
    synthetic_tokenizer().backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHATML_TEMPLATE, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    )
