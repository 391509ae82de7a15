"""Tokenizer of a loaded model (torch-free: the router imports this module too).

``load_tokenizer(source)`` accepts a .gguf path, a Hugging Face model directory, or
"synthetic[:SHAPE][:SEED]" (the byte-level tokenizer of the synthetic models). The class
itself lives in ``tokenizer_base`` (so ``tokenizer_sources`` builds it without importing
this module back).
"""

from __future__ import annotations

from pathlib import Path

from ppd_kernels import tokenizer_sources
from ppd_kernels.synthetic import parse_synthetic
from ppd_kernels.tokenizer_base import Tokenizer

__all__ = ["Tokenizer", "load_tokenizer", "parse_synthetic_source"]


def load_tokenizer(source: str) -> Tokenizer:
    if parse_synthetic(source) is not None:
        return tokenizer_sources.synthetic_tokenizer()
    path = Path(source)
    if path.is_dir():
        return tokenizer_sources.tokenizer_from_hf_dir(path)
    if path.is_file() and path.suffix == ".gguf":
        return tokenizer_sources.tokenizer_from_gguf_path(path)
    raise FileNotFoundError(
        f"tokenizer source {source!r} is not a .gguf file, a model directory or 'synthetic[:SHAPE][:SEED]'"
    )


def parse_synthetic_source(source: str) -> int | None:
    """Seed of a synthetic source ("synthetic", "synthetic:SEED", "synthetic:SHAPE[:SEED]"),
    None for other sources; ValueError for a malformed one (see ``synthetic.parse_synthetic``)."""
    spec = parse_synthetic(source)
    return None if spec is None else spec[1]
