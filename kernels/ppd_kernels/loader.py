"""``load_model(source)``: GGUF file, Hugging Face directory or "synthetic[:SEED]"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ppd_kernels.config import ModelConfig
from ppd_kernels.model import LlamaModel
from ppd_kernels.synthetic import parse_synthetic
from ppd_kernels.tokenizer_base import Tokenizer


@dataclass(frozen=True)
class LoadedModel:
    model: LlamaModel
    tokenizer: Tokenizer
    config: ModelConfig
    name: str


def load_model(source: str, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu") -> LoadedModel:
    """Load weights (dequantized to ``dtype``), tokenizer and config from ``source``:
    a .gguf file, an HF Llama/Qwen2 directory, or "synthetic[:SHAPE][:SEED]" (``synthetic``).
    GGUF Q4_1 matrices are also kept packed for small forwards on CPU in bf16
    (``LlamaModel.packed_max_rows``; set it to 0 to always use the dequantized weights)."""
    from ppd_kernels import tokenizer_sources

    q4_blocks = None
    synthetic = parse_synthetic(source)
    if synthetic is not None:
        from ppd_kernels.synthetic import SYNTHETIC_SHAPES, synthetic_weights

        shape, seed = synthetic
        config = SYNTHETIC_SHAPES[shape]
        if shape in ("tiny", "small"):  # float32 on CPU: identical weights on every device
            weights = synthetic_weights(config, seed)
            name = f"synthetic-{seed}" if shape == "tiny" else f"synthetic-{shape}-{seed}"
        else:  # drawn where they live (GB-sized shapes)
            weights, name = synthetic_weights(config, seed, dtype, device), f"synthetic-{shape}-{seed}"
        tokenizer = tokenizer_sources.synthetic_tokenizer()
    elif (path := Path(source)).is_dir():
        from ppd_kernels.weights_hf import load_hf_dir

        config, weights = load_hf_dir(path)
        tokenizer, name = tokenizer_sources.tokenizer_from_hf_dir(path), path.name
    elif path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        from ppd_kernels.packed_q4 import packing_supported
        from ppd_kernels.weights_gguf import config_from_gguf, field_value, q4_blocks_from_gguf, weights_from_gguf

        reader = GGUFReader(str(path))
        config, weights = config_from_gguf(reader), weights_from_gguf(reader)
        if packing_supported(device, dtype):
            q4_blocks = q4_blocks_from_gguf(reader)
        tokenizer = tokenizer_sources.tokenizer_from_gguf(reader)
        name = gguf_model_name(path, field_value(reader, "general.name"))
    else:
        raise FileNotFoundError(f"model source {source!r} is not a .gguf file, a model directory or 'synthetic[:SEED]'")
    model = LlamaModel(config, weights, dtype=dtype, device=device, q4_blocks=q4_blocks)
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, name=name)


def gguf_model_name(path: Path, general_name: str | None) -> str:
    """The file name without its quantization suffix ("SmolLM2-135M-Instruct.Q4_1.gguf" ->
    "SmolLM2-135M-Instruct"): more recognisable than general.name, which converters often
    fill with a training-run label. general.name is the fallback."""
    stem = re.sub(r"[.-](?:[QqFf]\d\w*|BF16|bf16)$", "", path.stem)
    return stem or general_name or path.stem
