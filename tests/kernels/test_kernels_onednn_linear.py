"""oneDNN-packed bf16 weights (``ppd_kernels.onednn_linear``): the same numbers as F.linear,
and no packing where it does not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ppd_kernels.onednn_linear import dense, linear, pack, packing_available

needs_packing = pytest.mark.skipif(
    not packing_available("cpu", torch.bfloat16), reason="no oneDNN bf16 on this CPU / torch build"
)


@needs_packing
@pytest.mark.parametrize("rows", [1, 7, 32, 513])
def test_packed_linear_equals_f_linear_bit_for_bit(rows):
    gen = torch.Generator().manual_seed(rows)
    weight = (torch.randn(96, 80, generator=gen) * 0.1).to(torch.bfloat16)
    bias = torch.randn(96, generator=gen).to(torch.bfloat16)
    x = torch.randn(rows, 80, generator=gen).to(torch.bfloat16)
    packed = pack(weight)
    assert packed.is_mkldnn and tuple(packed.shape) == (96, 80) and packed.numel() == weight.numel()
    assert torch.equal(linear(x, packed), F.linear(x, weight))
    assert torch.equal(linear(x, packed, bias), F.linear(x, weight, bias))
    assert torch.equal(dense(packed), weight)


def test_fp32_weights_stay_plain():
    weight = torch.randn(8, 4)
    assert pack(weight) is weight and dense(weight) is weight
    x = torch.randn(3, 4)
    assert torch.equal(linear(x, weight), F.linear(x, weight))
    assert not packing_available("cuda", torch.bfloat16)


@needs_packing
def test_the_model_packs_its_bf16_matrices_and_keeps_the_embedding_plain():
    from ppd_kernels import load_model

    model = load_model("synthetic:2", dtype=torch.bfloat16).model
    layer = model.layers[0]
    assert all(w.is_mkldnn for w in (layer.w_qkv, layer.w_o, layer.w_gate_up, layer.w_down, model.lm_head))
    assert not model.embed.is_mkldnn  # the token lookup reads it
