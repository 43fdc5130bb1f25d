"""Shared pytest fixtures."""

from __future__ import annotations

# isort: off
import advsyst  # noqa: F401  first: sets OMP_WAIT_POLICY before torch/numba start OpenMP

# isort: on
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def sample_factory(tmp_path_factory) -> Callable[..., Path]:
    """``make(process, n, seed, pseudo=False, **options)`` -> a generated PFNano file, made
    once per test session and shared by every test module."""
    from advsyst.data import generate_sample

    d = tmp_path_factory.getbasetemp() / "advsyst_samples"
    d.mkdir(exist_ok=True)

    def make(process: str, n: int, seed: int, pseudo: bool = False, **kw) -> Path:
        extra = "_".join(f"{k}{v}" for k, v in sorted(kw.items()))
        path = d / f"{process}_{n}_{seed}_{int(pseudo)}{extra}.root"
        if not path.exists():
            generate_sample(process, n, path, seed=seed, pseudo_data=pseudo, workers=1,
                            progress=False, **kw)  # fmt: skip
        return path

    return make


@pytest.fixture(scope="session")
def ttbar_file(sample_factory) -> Path:
    return sample_factory("ttbar", 200, 1)


@pytest.fixture(scope="session")
def ww_file(sample_factory) -> Path:
    return sample_factory("ww", 200, 2)


@pytest.fixture(scope="session")
def data_file(sample_factory) -> Path:
    return sample_factory("mix", 200, 3, pseudo=True)


@pytest.fixture(scope="module")
def client():
    """A dask client on an in-process LocalCluster of 2 single-thread workers, one per test
    module (test_sharded_processes.py overrides it with worker processes)."""
    from _cluster import inproc_cluster

    with inproc_cluster() as (_, c):
        yield c
