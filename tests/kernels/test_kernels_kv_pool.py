"""KVPool storage contract: read/write round trip (the KV-transfer path) and sizes."""

from __future__ import annotations

import pytest
import torch

from ppd_kernels import KVPool
from ppd_kernels.synthetic import SYNTHETIC_CONFIG as CONFIG


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_read_write_round_trip_between_pools(dtype):
    sender, receiver = KVPool(CONFIG, 64, dtype), KVPool(CONFIG, 32, dtype)
    sender.data.copy_(torch.randn(sender.data.shape))
    src, dst = torch.tensor([40, 3, 17, 18]), torch.tensor([0, 1, 30, 2])
    blob = sender.read(src)
    assert blob.shape == (CONFIG.num_layers, 2, CONFIG.num_kv_heads, 4, CONFIG.head_dim)
    assert blob.is_contiguous()
    receiver.write(dst, blob)
    assert torch.equal(receiver.read(dst), blob)
    assert torch.equal(receiver.k[1][:, 30], sender.k[1][:, 17])
    assert torch.equal(receiver.v[0][:, 2], sender.v[0][:, 18])
    assert receiver.data[:, :, :, 3:30].abs().sum() == 0  # nothing else touched


def test_bytes_per_token_and_validation():
    kv = KVPool(CONFIG, 10, torch.bfloat16)
    assert kv.num_slots == 10
    assert kv.bytes_per_token == CONFIG.num_layers * 2 * CONFIG.num_kv_heads * CONFIG.head_dim * 2
    assert CONFIG.kv_bytes_per_token(torch.float32) == 2 * kv.bytes_per_token
    with pytest.raises(ValueError, match="shape"):
        kv.write(torch.tensor([0, 1]), torch.zeros(1))
    with pytest.raises(ValueError, match="num_slots"):
        KVPool(CONFIG, 0, torch.bfloat16)
