"""Shared pytest fixtures."""

from __future__ import annotations

# isort: off
import advsyst  # noqa: F401  first: sets OMP_WAIT_POLICY before torch/numba start OpenMP

# isort: on
import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)
