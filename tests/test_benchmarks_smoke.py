"""The brute-force baseline of benchmarks/attack_throughput.py computes the real statistics."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from advsyst.stats import FeatureBinning, delta_fn, jsd_per_feature

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_reference_bruteforce.py"


@pytest.fixture(scope="module")
def bf():
    spec = importlib.util.spec_from_file_location("_reference_bruteforce", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def _data(n: int = 300, d: int = 4, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


@pytest.mark.parametrize(
    ("i", "j", "shift"),
    [(3, 1, 0.37), (10, 0, -1.9), (0, 2, "overflow"), (5, 3, "underflow")],
)
def test_single_move_matches_advsyst_stats(bf, i, j, shift):
    X0 = _data()
    bins = 20
    ref = bf.BruteForceReference(X0, num_bins=bins)
    if shift == "overflow":
        delta = X0[:, j].max() - X0[i, j] + 0.5
    elif shift == "underflow":
        delta = X0[:, j].min() - X0[i, j] - 0.5
    else:
        delta = shift * X0[:, j].std()
    X = X0.copy()
    jsd_j, dfn = ref.evaluate(X, i, j, delta)
    np.testing.assert_array_equal(X, X0)  # evaluate() moves back

    X1 = X0.copy()
    X1[i, j] += delta
    expected_jsd = jsd_per_feature(X0, X1, binning=FeatureBinning.from_data(X0, bins))
    assert jsd_j > 0 and dfn > 0
    assert jsd_j == pytest.approx(expected_jsd[j], rel=1e-9, abs=1e-12)
    assert dfn == pytest.approx(delta_fn(X0, X1), rel=1e-9)
    assert ref.jsd_feature(X0, j) == 0.0 and ref.dfn(X0) == pytest.approx(0.0, abs=1e-12)


def test_reference_attack_moves_within_budget(bf):
    X0 = _data(n=200, d=3, seed=3)
    ref = bf.BruteForceReference(X0, num_bins=10)
    X = X0.copy()
    lo, hi = X0.min(axis=0), X0.max(axis=0)
    events = np.arange(6)
    sign = np.where(np.arange(18).reshape(6, 3) % 2 == 0, 1.0, -1.0)
    stats = ref.attack_events(
        X,
        events,
        sign,
        lo,
        hi,
        min_change=0.01,
        step=0.05,
        max_candidates=8,
        max_jsd=0.05,
        max_dfn=0.02,
    )
    assert stats.n_moves > 0 and stats.n_evaluations > stats.n_moves
    assert stats.seconds > 0
    assert (X[6:] == X0[6:]).all() and (X != X0).any()
    binning = FeatureBinning.from_data(X0, 10)
    assert jsd_per_feature(X0, X, binning=binning).max() <= 0.05 + 1e-12
    assert delta_fn(X0, X) <= 0.02 + 1e-12
