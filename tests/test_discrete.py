"""Discrete features (few distinct clean values) stay on their observed support."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from _toys import fit_mlp
from advsyst.attacks import ConservAttack


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(5)
    n = 1500
    X = np.empty((n, 4))
    X[:, 0] = rng.normal(size=n)
    X[:, 1] = rng.poisson(2.5, n).clip(0, 8)  # a jet multiplicity
    X[:, 2] = rng.choice([0.1, 0.3, 0.7, 2.5], n)  # a non-lattice support (no float steps)
    X[:, 3] = rng.integers(0, 2, n)  # a flag
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] + X[:, 3] + 0.5 * rng.normal(size=n) > 1).astype(int)
    net = fit_mlp(X, y, hidden=16)
    return X, net


CFG = dict(min_change=0.01, step=0.05, num_bins=40, n_iterations=3, progress=False,
           max_jsd=0.1, max_dfn=0.05, robust_binnings=None)  # fmt: skip


def test_discrete_features_move_only_between_observed_values(toy, caplog):
    X, net = toy
    with caplog.at_level(logging.INFO, logger="advsyst.attacks.conservattack"):
        res = ConservAttack(CFG).run(X, net, feature_names=["x", "njet", "code", "flag"])
    assert res.metrics["discrete_features"] == [1, 2, 3]
    assert "['njet', 'code', 'flag']" in caplog.text and "observed values" in caplog.text
    for j in (1, 2, 3):
        support = set(np.unique(X[:, j]).tolist())
        assert set(np.unique(res.X_adv[:, j]).tolist()) <= support, j
    moved = res.X_adv != X
    assert moved[:, 1].sum() > 0 and moved[:, 2].sum() > 0  # they do move, on the support
    assert moved[:, 0].sum() > 0


def test_without_detection_the_same_attack_leaves_the_support(toy):
    """The check above can fail: with detection off, grid moves land off the support."""
    X, net = toy
    res = ConservAttack(CFG, max_discrete_values=0).run(X, net)
    off = [~np.isin(res.X_adv[:, j], np.unique(X[:, j])) for j in (1, 2)]
    assert sum(int(o.sum()) for o in off) > 0


def test_freeze_mode_and_integer_features(toy):
    X, net = toy
    res = ConservAttack(CFG, discrete="freeze").run(X, net)
    np.testing.assert_array_equal(res.X_adv[:, 1:], X[:, 1:])
    # integer_features keeps its meaning (integer steps within the bounds), not detection
    res = ConservAttack(CFG, integer_features=[1]).run(X, net)
    step = res.X_adv[:, 1] - X[:, 1]
    assert (step != 0).any() and np.all(step == np.round(step))
    assert res.metrics["discrete_features"] == [2, 3]
