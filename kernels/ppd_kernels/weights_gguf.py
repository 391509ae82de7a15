"""Read a GGUF file into (ModelConfig, canonical weights): F32, F16, BF16, Q8_0, Q4_0, Q4_1 (and
any other type gguf.quants can dequantize) are dequantized to float32 at load.

Q/K of GGUF "llama" files are stored permuted by llama.cpp's converter for the interleaved
rotary layout; we keep them as stored and set ``rope_interleaved=True`` (no weight surgery).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch

from ppd_kernels.config import ModelConfig
from ppd_kernels.packed_q4 import Q4Blocks

if TYPE_CHECKING:
    from gguf import GGUFReader

# GGUF architectures whose converter permutes Q/K rows (interleaved "normal" rope in llama.cpp).
_INTERLEAVED_ARCHS = {"llama", "mistral"}
_NEOX_ARCHS = {"qwen2"}

_GLOBAL_NAMES = {"token_embd.weight": "embed", "output_norm.weight": "norm", "output.weight": "lm_head"}
_LAYER_NAMES = {
    "attn_norm.weight": "attn_norm",
    "attn_q.weight": "wq",
    "attn_k.weight": "wk",
    "attn_v.weight": "wv",
    "attn_q.bias": "bq",
    "attn_k.bias": "bk",
    "attn_v.bias": "bv",
    "attn_output.weight": "wo",
    "ffn_norm.weight": "ffn_norm",
    "ffn_gate.weight": "w_gate",
    "ffn_up.weight": "w_up",
    "ffn_down.weight": "w_down",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(.+)")


def field_value(reader: GGUFReader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(reader: GGUFReader) -> ModelConfig:
    arch = field_value(reader, "general.architecture")
    if arch not in _INTERLEAVED_ARCHS | _NEOX_ARCHS:
        raise ValueError(
            f"unsupported GGUF architecture {arch!r}; supported: {sorted(_INTERLEAVED_ARCHS | _NEOX_ARCHS)}"
        )

    def key(name: str, default: Any = None) -> Any:
        value = field_value(reader, f"{arch}.{name}", default)
        if value is None:
            raise ValueError(f"GGUF file lacks required key {arch}.{name}")
        return value

    hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
    tensor_names = {t.name for t in reader.tensors}
    vocab = field_value(reader, f"{arch}.vocab_size")
    if vocab is None:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        num_layers=int(key("block_count")),
        num_heads=heads,
        num_kv_heads=int(key("attention.head_count_kv", heads)),
        head_dim=int(key("attention.key_length", hidden // heads)),
        intermediate_size=int(key("feed_forward_length")),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        rms_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_interleaved=arch in _INTERLEAVED_ARCHS,
        tie_word_embeddings="output.weight" not in tensor_names,
        max_position_embeddings=int(key("context_length", 8192)),
        attention_bias="blk.0.attn_q.bias" in tensor_names,
    )


def weights_from_gguf(reader: GGUFReader) -> dict[str, torch.Tensor]:
    """Canonical weights (see model.WEIGHT_NAMES) as float32 [out, in] tensors."""
    from gguf.quants import dequantize

    weights = {}
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type).astype("float32", copy=False)
        if not array.flags.writeable:  # F32 tensors come back as views of the read-only memmap
            array = array.copy()
        weights[_canonical_name(tensor.name)] = torch.from_numpy(array)
    return weights


def q4_blocks_from_gguf(reader: GGUFReader) -> dict[str, Q4Blocks]:
    """The Q4_1 matrices of the file, unpacked (canonical names), for ``PackedQ4``."""
    from gguf import GGMLQuantizationType

    return {
        _canonical_name(t.name): Q4Blocks.from_gguf_bytes(t.data)
        for t in reader.tensors
        if t.tensor_type == GGMLQuantizationType.Q4_1
    }


def _canonical_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    raise ValueError(f"unsupported GGUF tensor {gguf_name!r} (not part of a plain Llama/Qwen2 decoder)")
