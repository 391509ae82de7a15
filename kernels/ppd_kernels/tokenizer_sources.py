"""Build ``Tokenizer`` objects from a GGUF file, a Hugging Face directory or the synthetic
byte-level vocabulary (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppd_kernels.tokenizer_base import Tokenizer

if TYPE_CHECKING:
    from gguf import GGUFReader

_GGUF_CONTROL_TOKEN = 3
SYNTHETIC_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the ByteLevel alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def synthetic_tokenizer() -> Tokenizer:
    """Bytes 0..255 are ids 0..255 (no merges); then <|endoftext|>=256, <|im_start|>=257,
    <|im_end|>=258. ChatML template; BOS <|im_start|>, EOS {<|im_end|>, <|endoftext|>}."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {char: byte for byte, char in byte_to_unicode().items()}
    backend = Backend(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SYNTHETIC_SPECIAL_TOKENS))
    specials = {t: 256 + i for i, t in enumerate(SYNTHETIC_SPECIAL_TOKENS)}
    return Tokenizer(
        backend,
        bos_token_id=specials["<|im_start|>"],
        eos_token_ids={specials["<|im_end|>"], specials["<|endoftext|>"]},
        chat_template=None,
        special_tokens=specials,
    )


def tokenizer_from_gguf_path(path: Path) -> Tokenizer:
    from gguf import GGUFReader

    return tokenizer_from_gguf(GGUFReader(str(path)))


def tokenizer_from_gguf(reader: GGUFReader) -> Tokenizer:
    """GPT-2-style BPE from tokenizer.ggml.*; the "smollm" pre-tokenizer splits digits
    individually before the byte-level regex (HF's SmolLM setup, = llama.cpp's "smollm")."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    def value(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    model = value("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"unsupported GGUF tokenizer model {model!r} (only 'gpt2' BPE)")
    tokens: list[str] = value("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in value("tokenizer.ggml.merges", [])]
    backend = Backend(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if value("tokenizer.ggml.pre") == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    types = value("tokenizer.ggml.token_type", [])
    specials = {tokens[i]: i for i, kind in enumerate(types) if kind == _GGUF_CONTROL_TOKEN}
    backend.add_special_tokens(list(specials))
    eos = {value("tokenizer.ggml.eos_token_id"), value("tokenizer.ggml.eot_token_id")} - {None}
    return Tokenizer(
        backend,
        bos_token_id=value("tokenizer.ggml.bos_token_id"),
        eos_token_ids=eos,
        chat_template=value("tokenizer.chat_template"),
        special_tokens=specials,
    )


def tokenizer_from_hf_dir(directory: Path) -> Tokenizer:
    """tokenizer.json + tokenizer_config.json (chat_template, bos/eos), plus eos ids from
    generation_config.json / config.json when present."""
    from tokenizers import Tokenizer as Backend

    backend = Backend.from_file(str(directory / "tokenizer.json"))
    config = _read_json(directory / "tokenizer_config.json")
    specials = {t.content: i for i, t in backend.get_added_tokens_decoder().items() if t.special}

    def token_id(entry: Any) -> int | None:
        text = entry.get("content") if isinstance(entry, dict) else entry
        return backend.token_to_id(text) if text else None

    eos: set[int | None] = {token_id(config.get("eos_token"))}
    for extra in (_read_json(directory / "generation_config.json"), _read_json(directory / "config.json")):
        ids = extra.get("eos_token_id")
        eos.update(ids if isinstance(ids, list) else [ids])
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return Tokenizer(
        backend,
        bos_token_id=token_id(config.get("bos_token")),
        eos_token_ids={i for i in eos if i is not None},
        chat_template=template,
        special_tokens=specials,
    )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
