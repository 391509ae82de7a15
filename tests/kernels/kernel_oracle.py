"""Plain full-recompute forward for tests: one sequence, no KV pool, dense causal attention,
rotary via complex multiplication. Shares only the weights with ppd_kernels.model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ppd_kernels.model import LlamaModel


def dense_logits(model: LlamaModel, token_ids: list[int]) -> torch.Tensor:
    """float32 [len(token_ids), vocab]: the logits at every position of one sequence."""
    cfg = model.config
    n = len(token_ids)
    x = model.embed[torch.tensor(token_ids)].float()
    positions = torch.arange(n, dtype=torch.float64)
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim)
    rotation = torch.polar(torch.ones(n, cfg.head_dim // 2, dtype=torch.float64),
                           positions[:, None] * inv_freq[None, :])[:, None, :]

    def rotate(t: torch.Tensor) -> torch.Tensor:   # t: [n, heads, hd]
        t = t.double()
        if cfg.rope_interleaved:
            pairs = torch.view_as_complex(t.unflatten(-1, (cfg.head_dim // 2, 2)).contiguous())
            return torch.view_as_real(pairs * rotation).flatten(-2).float()
        half = cfg.head_dim // 2
        rotated = torch.complex(t[..., :half], t[..., half:]) * rotation
        return torch.cat((rotated.real, rotated.imag), dim=-1).float()

    def norm(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + cfg.rms_eps) * w.float()

    group = cfg.num_heads // cfg.num_kv_heads
    for layer in model.layers:
        h = norm(x, layer.attn_norm)
        qkv = h @ layer.w_qkv.float().T + (layer.b_qkv.float() if layer.b_qkv is not None else 0)
        q, k, v = qkv.split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=-1)
        q = rotate(q.view(n, cfg.num_heads, cfg.head_dim))
        k = rotate(k.view(n, cfg.num_kv_heads, cfg.head_dim)).repeat_interleave(group, dim=1)
        v = v.view(n, cfg.num_kv_heads, cfg.head_dim).repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / cfg.head_dim ** 0.5
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, cfg.q_size)
        x = x + attended @ layer.w_o.float().T
        gate, up = (norm(x, layer.ffn_norm) @ layer.w_gate_up.float().T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ layer.w_down.float().T
    return norm(x, model.norm) @ model.lm_head.float().T
