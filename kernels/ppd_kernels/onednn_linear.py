"""bf16 weight matrices pre-packed once for oneDNN on CPU (``torch.ops.mkldnn``).

Why: ``F.linear`` on a plain bf16 weight lets oneDNN re-layout (pack) the weight on every
call; packing it once at load time, as PyTorch's own CPU compiler does for frozen weights,
gives the same results bit for bit and less time. Measured on the 2-vCPU AVX-512/AMX box,
1 thread, SmolLM2's four matrices x 30 layers (212 MB, from DRAM), ms per pass, plain vs
packed: 1 row 32.6 vs 23.4, 32 rows 39.3 vs 27.2, 64 rows 47.7 vs 31.2, 512 rows 113.9 vs
88.7, 1024 rows 185 vs 190 (equal); the packing's batch-size hint made no difference.

Contract: ``pack(weight)`` returns the packed tensor (an opaque ``torch._mkldnn`` tensor:
shape, dtype, ``numel`` work; ``dense`` gives the plain matrix back) when the device is CPU,
the dtype bf16 and the op is available, else ``weight`` unchanged; ``linear(x, weight,
bias)`` computes ``F.linear`` for either form. ``x`` must be 2-D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def packing_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    if torch.device(device).type != "cpu" or dtype != torch.bfloat16:
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def pack(weight: torch.Tensor) -> torch.Tensor:
    """The packed form of ``weight`` [out, in] (see the module contract)."""
    if not packing_available(weight.device, weight.dtype):
        return weight
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
    except RuntimeError:
        return weight


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def dense(weight: torch.Tensor) -> torch.Tensor:
    """The plain matrix of a packed or plain weight."""
    return weight.to_dense() if weight.is_mkldnn else weight
