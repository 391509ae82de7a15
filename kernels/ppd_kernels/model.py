"""Llama-family decoder forward over a KVPool (device-agnostic torch).

Weights come in as a dict of canonical names (see ``WEIGHT_NAMES``), float tensors in
[out, in] layout, from any loader (GGUF, HF dir, synthetic). Q/K/V and gate/up are fused
at construction so each layer runs 4 GEMMs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppd_kernels.attention import paged_attention, stages_decode
from ppd_kernels.attention_reference import reference_attention
from ppd_kernels.batch import ForwardBatch
from ppd_kernels.config import ModelConfig
from ppd_kernels.kv_pool import KVPool
from ppd_kernels.layers import Rotary, rms_norm
from ppd_kernels.onednn_linear import linear as dense_linear
from ppd_kernels.onednn_linear import pack, packing_available
from ppd_kernels.packed_q4 import PackedQ4, Q4Blocks, packing_supported

# Canonical weight names; "{i}" is the layer index. Biases and lm_head are optional.
WEIGHT_NAMES = (
    "embed",
    "norm",
    "lm_head",
    "layers.{i}.attn_norm",
    "layers.{i}.wq",
    "layers.{i}.wk",
    "layers.{i}.wv",
    "layers.{i}.bq",
    "layers.{i}.bk",
    "layers.{i}.bv",
    "layers.{i}.wo",
    "layers.{i}.ffn_norm",
    "layers.{i}.w_gate",
    "layers.{i}.w_up",
    "layers.{i}.w_down",
)

# name -> attention(q, k_cache, v_cache, plan, scale[, rows=...]); only "fast" gets ``rows``
ATTENTION_BACKENDS: dict[str, Callable[..., torch.Tensor]] = {"fast": paged_attention, "reference": reference_attention}


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor
    # The matrices are plain or oneDNN-packed (CPU bf16: ``onednn_linear``; ``dense`` reads either).
    w_qkv: torch.Tensor  # [q_size + 2 * kv_size, hidden]
    b_qkv: torch.Tensor | None
    w_o: torch.Tensor
    ffn_norm: torch.Tensor
    w_gate_up: torch.Tensor  # [2 * intermediate, hidden]
    w_down: torch.Tensor
    # Packed 4-bit forms of the same matrices (GGUF Q4_1 on CPU/bf16), else None.
    qkv_packed: PackedQ4 | None = None
    o_packed: PackedQ4 | None = None
    gate_up_packed: PackedQ4 | None = None
    down_packed: PackedQ4 | None = None


class LlamaModel(torch.nn.Module):
    """``forward(batch, kv) -> float32 [num_seqs, vocab]``: logits of each sequence's last new
    token. Writes the batch's new K/V into ``kv`` at their slots. ``attention_backend`` is
    "fast" (default) or "reference" and may be switched at any time.

    ``q4_blocks`` (GGUF Q4_1 matrices by canonical name) adds packed 4-bit copies of the
    matrices, used by forwards of at most ``packed_max_rows`` tokens (0 disables; see
    ``packed_q4``): CPU and bf16 only, ignored elsewhere.

    Weights live on the device and dtype given at construction (they are plain tensors, not
    registered parameters: ``.to()`` does not move them). Token ids are not range-checked
    here (that would sync a GPU every step): callers pass ids < ``config.vocab_size``."""

    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, torch.Tensor],
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        q4_blocks: dict[str, Q4Blocks] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.attention_backend = "fast"
        # Where the 4-bit GEMMs stop paying (1 thread, SmolLM2's four matrices x 30 layers, ms,
        # Q4 vs bf16): against plain F.linear ~16 rows (``packed_q4``); against the oneDNN-packed
        # bf16 weights (``onednn_linear``) 8 rows: 8 rows 23.7 vs 24.2, 12: 34.5 vs 24.5, 16:
        # 43.5 vs 24.3 (1 row: 8.0 vs 23.6).
        self.packed_max_rows = 8 if packing_available(device, dtype) else 16
        if not packing_supported(device, dtype):
            q4_blocks = None

        def packed(*names: str) -> PackedQ4 | None:
            if q4_blocks is None or not all(n in q4_blocks for n in names):
                return None
            return PackedQ4.pack(Q4Blocks.concat([q4_blocks[n] for n in names]), dtype)

        def get(name: str) -> torch.Tensor:
            return weights[name].to(device=device, dtype=dtype)

        self.embed = get("embed")
        self.norm = get("norm")
        # Tied: a packed copy beside the embedding (vocab x hidden more bytes) when packing applies.
        self.lm_head = pack(self.embed if config.tie_word_embeddings else get("lm_head"))
        self.layers: list[LayerWeights] = []
        for i in range(config.num_layers):
            prefix = f"layers.{i}."
            biases = [weights[prefix + b] for b in ("bq", "bk", "bv") if prefix + b in weights]
            if len(biases) not in (0, 3):
                raise ValueError(f"layer {i}: q/k/v biases must be all present or all absent")
            self.layers.append(
                LayerWeights(
                    attn_norm=get(prefix + "attn_norm"),
                    w_qkv=pack(torch.cat([get(prefix + w) for w in ("wq", "wk", "wv")])),
                    b_qkv=torch.cat(biases).to(device=device, dtype=dtype) if biases else None,
                    w_o=pack(get(prefix + "wo")),
                    ffn_norm=get(prefix + "ffn_norm"),
                    w_gate_up=pack(torch.cat([get(prefix + "w_gate"), get(prefix + "w_up")])),
                    w_down=pack(get(prefix + "w_down")),
                    qkv_packed=packed(*(prefix + w for w in ("wq", "wk", "wv"))),
                    o_packed=packed(prefix + "wo"),
                    gate_up_packed=packed(prefix + "w_gate", prefix + "w_up"),
                    down_packed=packed(prefix + "w_down"),
                )
            )
        self.rotary = Rotary(config.head_dim, config.rope_theta, config.rope_interleaved, device)
        self.scale = config.head_dim**-0.5

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, kv: KVPool) -> torch.Tensor:
        cfg = self.config
        if kv.dtype != self.dtype:
            raise ValueError(f"KVPool dtype {kv.dtype} differs from the model dtype {self.dtype}")
        attention = ATTENTION_BACKENDS[self.attention_backend]
        plan = batch.plan()
        num_tokens = batch.input_ids.shape[0]
        heads_qk = cfg.num_heads + cfg.num_kv_heads
        cos, sin = self.rotary.tables(batch.positions, self.dtype)
        use_packed = num_tokens <= self.packed_max_rows

        def linear(
            x: torch.Tensor, weight: torch.Tensor, packed: PackedQ4 | None, bias: torch.Tensor | None = None
        ) -> torch.Tensor:
            if packed is None or not use_packed:
                return dense_linear(x, weight, bias)
            out = packed.linear(x)
            return out if bias is None else out + bias

        staged, decode_members = None, None
        if plan.decode is not None and self.attention_backend == "fast" and stages_decode(kv.device):
            staged = kv.decode_rows.prepare(plan, kv.data)
            decode_members = plan.decode.rows  # None: every row of the batch, in order
        try:
            x = self.embed[batch.input_ids]
            for index, layer in enumerate(self.layers):
                h = rms_norm(x, layer.attn_norm, cfg.rms_eps)
                qkv = linear(h, layer.w_qkv, layer.qkv_packed, layer.b_qkv)
                # Q and K are rotated together in one pass over the fused projection.
                qk = qkv[:, : heads_qk * cfg.head_dim].view(num_tokens, heads_qk, cfg.head_dim)
                qk = self.rotary.apply(qk, cos, sin)
                q, k = qk[:, : cfg.num_heads], qk[:, cfg.num_heads :]
                v = qkv[:, heads_qk * cfg.head_dim :].view(num_tokens, cfg.num_kv_heads, cfg.head_dim)
                kv.store(index, plan.new_slots, k, v)
                if staged is None:
                    attended = attention(q, kv.k[index], kv.v[index], plan, self.scale)
                else:
                    if decode_members is not None:
                        k, v = k.index_select(0, decode_members), v.index_select(0, decode_members)
                    kv.decode_rows.append(index, staged, k, v)
                    rows = (*kv.decode_rows.layer(index, staged.used), staged)
                    attended = attention(q, kv.k[index], kv.v[index], plan, self.scale, rows=rows)
                x = x + linear(attended.reshape(num_tokens, cfg.q_size), layer.w_o, layer.o_packed)
                h = rms_norm(x, layer.ffn_norm, cfg.rms_eps)
                gate, up = linear(h, layer.w_gate_up, layer.gate_up_packed).chunk(2, dim=-1)
                x = x + linear(F.silu(gate) * up, layer.w_down, layer.down_packed)
        except BaseException:
            kv.decode_rows.clear()  # a row may claim a token this forward did not write
            raise
        last = rms_norm(x[plan.last_rows], self.norm, cfg.rms_eps)
        return dense_linear(last, self.lm_head).float()
