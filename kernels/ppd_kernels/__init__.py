"""Compute for the embedded engine: Llama-family forward, attention over a paged KV pool,
weight loading (GGUF / Hugging Face dir / synthetic) and the tokenizer.

Importing ``ppd_kernels`` (and ``ppd_kernels.tokenizer``) does NOT import torch; the names
below are loaded on first use.

API (stable; the engine codes against it)::

    import torch
    from ppd_kernels import ModelConfig, ForwardBatch, SeqChunk, KVPool, LoadedModel, load_model
    from ppd_kernels.tokenizer import Tokenizer, load_tokenizer      # torch-free
    # synthetic shapes: tiny (default), small, llama-3.2-1b, llama-3.1-8b (random weights)

    lm = load_model("path/to/model.gguf" | "path/to/hf_dir" | "synthetic[:SHAPE][:SEED]",
                    dtype=torch.bfloat16, device="cpu")
    lm.model, lm.tokenizer, lm.config, lm.name

    kv = KVPool(lm.config, num_slots, dtype=torch.bfloat16, device="cpu")
    kv.num_slots, kv.bytes_per_token
    blob = kv.read(slots)          # [num_layers, 2, num_kv_heads, len(slots), head_dim], contiguous
    kv.write(slots, blob)          # inverse (the receiving side of a KV transfer)

    batch = ForwardBatch(input_ids, positions, [SeqChunk(num_cached, num_new, slots, seq_id=None), ...])
    batch = ForwardBatch.build(new_token_ids=[[...], ...], num_cached=[...], slots=[[...], ...])
    logits = lm.model.forward(batch, kv)   # float32 [len(seqs), vocab]: last new token of each

Contract of a forward:
- ``SeqChunk.slots`` lists the slot of EVERY token of the sequence (cached prefix, then the
  ``num_new`` tokens of this forward); the forward writes the new tokens' K/V to the last
  ``num_new`` slots. Decode rows (num_new == 1) and extend chunks (num_new > 1, with or
  without a cached prefix) mix freely, in any order. The slots a forward writes (each
  sequence's last ``num_new``) must be distinct across the batch; cached slots may be shared
  by several sequences (prefix sharing) and are only read.
- ``positions`` are the rotary positions of the new tokens (normally num_cached + i).
- ``KVPool`` dtype must equal the model dtype. ``model.attention_backend`` is "fast"
  (default) or "reference" (readable oracle).
- GGUF Q4_1 models on CPU in bf16 also keep their 4-bit matrices packed; a forward of at
  most ``model.packed_max_rows`` tokens (default 8 with oneDNN-packed bf16 weights, else 16) runs its
  GEMMs on them, ~2x faster decode at batch 1. Set it to 0 for dequantized weights only.

Attention (``attention.paged_attention``): one call per layer for the whole batch; decode
rows form one group and extend chunks another (``attention_plan``). ``attention.choose_path``
picks per group: on CUDA (and on CPU for short contexts or scattered slots) one padded batch,
its context gathered once per layer, by whole blocks when every sequence sits on aligned
pages (the engine's page allocator), else slot by slot; on CPU for sequences on consecutive
slots with long contexts, a loop over sequences reading zero-copy views of the pool (cheaper
there than the gather). Any slot order is correct; consecutive pages are the fast case.
On CPU, when every decode row carries a ``SeqChunk.seq_id`` (the engine passes the request
id), the decode group instead reads persistent contiguous rows of its KV kept across steps
and appended in place (``decode_rows``, owned by the ``KVPool``, bounded by its
``decode_rows_budget``): each sequence's context is read once per layer, with no gather.

Why the tokenizer lives here and not in the engine: the router counts prompt tokens with it
(``ppd_server.request_path.token_count``), torch-free, and the router must never import the
engine; ``ppd_kernels.tokenizer`` is the lowest layer both can use.

Tokenizer: ``encode(text)`` (no specials added; special-token texts map to their ids),
``decode(ids, skip_special_tokens=True)``, ``apply_chat_template(messages, tools=None,
add_generation_prompt=True)`` (Hermes-style tool format: see ``ppd_kernels.chat_template``),
``eos_token_ids``, ``bos_token_id``, ``vocab_size``, ``special_tokens``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # explicit re-exports (``X as X``) for type checkers; at run time __getattr__ loads them lazily
    from ppd_kernels.batch import ForwardBatch as ForwardBatch
    from ppd_kernels.batch import SeqChunk as SeqChunk
    from ppd_kernels.config import ModelConfig as ModelConfig
    from ppd_kernels.kv_pool import KVPool as KVPool
    from ppd_kernels.loader import LoadedModel as LoadedModel
    from ppd_kernels.loader import load_model as load_model

_EXPORTS = {
    "ModelConfig": "ppd_kernels.config",
    "ForwardBatch": "ppd_kernels.batch",
    "SeqChunk": "ppd_kernels.batch",
    "KVPool": "ppd_kernels.kv_pool",
    "LoadedModel": "ppd_kernels.loader",
    "load_model": "ppd_kernels.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ppd_kernels' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
