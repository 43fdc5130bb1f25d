"""Regions: cut/callable regions, weighted AUROC and the optimal single-cut split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import advsyst.systematics as S
from advsyst.errors import ConfigError, InputError


def _brute_best(X, y, w, criterion):
    """Every feature, every midpoint cut, both sides, by explicit masks."""
    y = y.astype(bool)
    best = (-np.inf, None, None, None)
    for j in range(X.shape[1]):
        u = np.unique(X[:, j])
        for t in 0.5 * (u[:-1] + u[1:]):
            for side in ("above", "below"):
                sig = X[:, j] >= t if side == "above" else X[:, j] < t
                tpr = w[y & sig].sum() / w[y].sum()
                tnr = w[~y & ~sig].sum() / w[~y].sum()
                if criterion == "balanced_accuracy":
                    val = 0.5 * (tpr + tnr)
                else:
                    val = (w[y & sig].sum() + w[~y & ~sig].sum()) / w.sum()
                if val > best[0] + 1e-12:
                    best = (val, j, t, side)
    return best


def _brute_auroc(x, y, w):
    s, b = y == 1, y == 0
    num = 0.0
    for xi, wi in zip(x[s], w[s]):
        num += wi * (w[b] * ((xi > x[b]) + 0.5 * (xi == x[b]))).sum()
    return num / (w[s].sum() * w[b].sum())


def test_region_cut_and_callable():
    X = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    below = S.Region.from_cut("cr", 0, 1.0, "below")
    above = S.Region.from_cut("sr", "b", 2.0, "above")
    np.testing.assert_array_equal(below.mask(X), [True, False, False])
    np.testing.assert_array_equal(above.mask(X, ["a", "b"]), [False, True, True])
    sel = S.Region.from_callable("odd", lambda Z: Z[:, 0] == 1.0)
    np.testing.assert_array_equal(sel.mask(X), [False, True, False])
    masks = S.region_masks([below, sel], X)
    assert set(masks) == {"cr", "odd"}
    with pytest.raises(InputError, match="'zz'"):
        S.Region.from_cut("r", "zz", 0.0).mask(X, ["a", "b"])
    with pytest.raises(InputError, match="out of range"):
        S.Region.from_cut("r", 5, 0.0).mask(X)
    with pytest.raises(ConfigError):
        S.Region("r")
    with pytest.raises(ConfigError, match="unique"):
        S.region_masks([below, below], X)
    with pytest.raises(InputError, match="selector"):
        S.Region.from_callable("bad", lambda Z: np.ones(2, bool)).mask(X)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from(["balanced_accuracy", "accuracy"]),
    st.booleans(),
)
def test_optimal_cut_matches_brute_force(seed, criterion, weighted):
    rng = np.random.default_rng(seed)
    n, d = 40, 3
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    X = np.round(rng.normal(size=(n, d)) + y[:, None] * rng.normal(size=d), 1)
    w = rng.uniform(0.2, 2.0, n) if weighted else np.ones(n)
    split = S.optimal_cut_regions(X, y, w, criterion=criterion)
    val, j, t, side = _brute_best(X, y, w, criterion)
    assert split.score == pytest.approx(val, abs=1e-12)
    # ties can pick another cut with the same score; check the chosen cut's score directly
    sig = split.masks(X)["signal"]
    yb = y.astype(bool)
    if criterion == "balanced_accuracy":
        got = 0.5 * (w[yb & sig].sum() / w[yb].sum() + w[~yb & ~sig].sum() / w[~yb].sum())
    else:
        got = (w[yb & sig].sum() + w[~yb & ~sig].sum()) / w.sum()
    assert got == pytest.approx(val, abs=1e-12)
    assert split.best_per_feature.max() == pytest.approx(val, abs=1e-12)


def test_optimal_cut_picks_discriminating_feature():
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 4))
    X[:, 2] += 2.5 * y  # the separating feature; signal sits above
    X[:, 0] -= 0.5 * y
    split = S.optimal_cut_regions(X, y, feature_names=["a", "b", "c", "d"])
    assert split.feature == 2 and split.feature_name == "c"
    assert split.signal_side == "above"
    assert 0.8 < split.threshold < 1.7
    m = split.masks(X)
    assert np.array_equal(m["control"], ~m["signal"])
    np.testing.assert_array_equal(m["signal"], X[:, 2] >= split.threshold)
    # control region is background enriched
    assert y[m["control"]].mean() < 0.2 < 0.8 < y[m["signal"]].mean()
    assert split.control.mask(X).sum() == m["control"].sum()
    d = split.to_dict()
    assert d["feature_name"] == "c" and len(d["auroc"]) == 4


def test_signal_below_orientation():
    y = np.array([1, 1, 1, 0, 0, 0])
    X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    split = S.optimal_cut_regions(X, y)
    assert split.signal_side == "below" and split.threshold == 2.5
    np.testing.assert_array_equal(split.masks(X)["signal"], [1, 1, 1, 0, 0, 0])


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_weighted_auroc_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 30
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    x = np.round(rng.normal(size=n), 1)  # ties on purpose
    w = rng.uniform(0.1, 3.0, n)
    assert S.weighted_auroc(x, y, w) == pytest.approx(_brute_auroc(x, y, w), abs=1e-12)


def test_optimal_cut_errors():
    X = np.ones((10, 2))
    y = np.array([0, 1] * 5)
    with pytest.raises(InputError, match="distinct"):
        S.optimal_cut_regions(X, y)
    with pytest.raises(InputError, match="both signal"):
        S.optimal_cut_regions(np.arange(10.0)[:, None], np.zeros(10))
    with pytest.raises(InputError, match="0 \\(background\\) or 1"):
        S.optimal_cut_regions(np.arange(10.0)[:, None], np.arange(10))
    with pytest.raises(InputError, match="labels have shape"):
        S.optimal_cut_regions(np.arange(10.0)[:, None], y[:5])
    with pytest.raises(ConfigError, match="criterion"):
        S.optimal_cut_regions(np.arange(10.0)[:, None], y, criterion="nope")
    Xn = np.arange(10.0)[:, None].copy()
    Xn[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        S.optimal_cut_regions(Xn, y)


def test_features_restriction():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    X = rng.normal(size=(300, 3))
    X[:, 0] += 3 * y
    X[:, 1] += 1 * y
    split = S.optimal_cut_regions(X, y, features=[1, 2])
    assert split.feature == 1
    assert split.best_per_feature[0] == -np.inf
