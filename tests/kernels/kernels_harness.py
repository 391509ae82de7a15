"""Test harness for the forward: a plain full-recompute oracle (one sequence, no KV pool,
dense causal attention, rotary via complex multiplication; shares only the weights with
ppd_kernels.model) and a driver for ragged mixed batches over several slot layouts."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ppd_kernels import ForwardBatch, KVPool
from ppd_kernels.model import LlamaModel
from ppd_kernels.onednn_linear import dense

POOL_SLOTS = 512
LAYOUTS = ["contiguous", "pages", "shuffled"]

# (num_cached, num_new) per sequence of the final mixed batch
SHAPES = {
    "prefill-only": [(0, 7)],
    "single-decode": [(9, 1)],
    "extend-on-prefix": [(12, 5)],
    "one-token-prefill": [(0, 1)],
    "ragged-mixed": [(0, 6), (13, 1), (5, 4), (20, 1), (1, 1), (0, 1), (3, 2)],
    "long-context": [(70, 1), (40, 9), (33, 1)],
}


def allocate_slots(lengths: list[int], layout: str, rng: random.Random) -> list[list[int]]:
    """Slots for sequences of the given total lengths, laid out contiguously, as shuffled
    4-slot pages, or as individually shuffled slots."""
    if layout == "contiguous":
        slots, start = [], 3
        for n in lengths:
            slots.append(list(range(start, start + n)))
            start += n + 5
        return slots
    if layout == "pages":
        pages = rng.sample(range(POOL_SLOTS // 4), sum((n + 3) // 4 for n in lengths))
        slots = []
        for n in lengths:
            own, pages = pages[: (n + 3) // 4], pages[(n + 3) // 4 :]
            slots.append([page * 4 + i for page in own for i in range(4)][:n])
        return slots
    free = rng.sample(range(POOL_SLOTS), sum(lengths))
    slots = []
    for n in lengths:
        slots.append(free[:n])
        free = free[n:]
    return slots


def tolerance(reference: torch.Tensor) -> float:
    return 1e-4 * max(1.0, reference.abs().max().item())


def run_mixed_batch(model: LlamaModel, shape: list[tuple[int, int]], layout: str, seed: int):
    """Fill every prefix (all prefixes in one batch), then run the mixed batch in shuffled
    order. Returns [(logits, dense oracle logits)] per sequence."""
    rng = random.Random(seed)
    vocab = model.config.vocab_size
    tokens = [[rng.randrange(vocab) for _ in range(c + n)] for c, n in shape]
    slots = allocate_slots([c + n for c, n in shape], layout, rng)
    kv = KVPool(model.config, POOL_SLOTS, dtype=model.dtype)
    with_prefix = [i for i, (c, _) in enumerate(shape) if c > 0]
    if with_prefix:
        model.forward(
            ForwardBatch.build(
                [tokens[i][: shape[i][0]] for i in with_prefix],
                [0] * len(with_prefix),
                [slots[i][: shape[i][0]] for i in with_prefix],
            ),
            kv,
        )
    order = list(range(len(shape)))
    rng.shuffle(order)
    logits = model.forward(
        ForwardBatch.build(
            [tokens[i][shape[i][0] :] for i in order], [shape[i][0] for i in order], [slots[i] for i in order]
        ),
        kv,
    )
    return [(logits[order.index(i)], dense_logits(model, tokens[i])[-1]) for i in range(len(shape))]


def dense_logits(model: LlamaModel, token_ids: list[int]) -> torch.Tensor:
    """float32 [len(token_ids), vocab]: the logits at every position of one sequence."""
    cfg = model.config
    n = len(token_ids)
    x = model.embed[torch.tensor(token_ids)].float()
    positions = torch.arange(n, dtype=torch.float64)
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim)
    rotation = torch.polar(
        torch.ones(n, cfg.head_dim // 2, dtype=torch.float64), positions[:, None] * inv_freq[None, :]
    )[:, None, :]

    def rotate(t: torch.Tensor) -> torch.Tensor:  # t: [n, heads, hd]
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
        qkv = h @ dense(layer.w_qkv).float().T + (layer.b_qkv.float() if layer.b_qkv is not None else 0)
        q, k, v = qkv.split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=-1)
        q = rotate(q.view(n, cfg.num_heads, cfg.head_dim))
        k = rotate(k.view(n, cfg.num_kv_heads, cfg.head_dim)).repeat_interleave(group, dim=1)
        v = v.view(n, cfg.num_kv_heads, cfg.head_dim).repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / cfg.head_dim**0.5
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, cfg.q_size)
        x = x + attended @ dense(layer.w_o).float().T
        gate, up = (norm(x, layer.ffn_norm) @ dense(layer.w_gate_up).float().T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ dense(layer.w_down).float().T
    return norm(x, model.norm) @ dense(model.lm_head).float().T
