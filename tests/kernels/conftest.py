"""Kernel tests run on one thread (the machine is shared) with tiny synthetic models."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_fp32():
    from ppd_kernels import load_model

    return load_model("synthetic:1", dtype=torch.float32)
