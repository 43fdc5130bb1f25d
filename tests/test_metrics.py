"""Tests of advsyst.attacks.metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from advsyst.attacks.metrics import (
    auroc,
    binomial_uncertainty,
    delta_fn,
    effective_count,
    fooling_ratio,
    fooling_ratio_with_error,
    jsd_per_feature,
    weighted_fraction_uncertainty,
)
from advsyst.errors import InputError


# ---------------------------------------------------------------------- fooling ratio
def test_fooling_ratio_counts_flips():
    clean = np.array([0, 1, 1, 0, 1])
    adv = np.array([1, 1, 0, 0, 1])
    assert fooling_ratio(clean, adv) == pytest.approx(2 / 5)
    mask = np.array([True, True, False, False, False])
    assert fooling_ratio(clean, adv, mask=mask) == pytest.approx(1 / 2)
    w = np.array([3.0, 1.0, 1.0, 1.0, 0.0])
    assert fooling_ratio(clean, adv, weights=w) == pytest.approx(4 / 6)
    assert fooling_ratio(clean, adv, mask=mask, weights=w) == pytest.approx(3 / 4)
    # predicted classes as floats/bools are fine; multi-class labels too
    assert fooling_ratio(clean.astype(float), adv.astype(bool)) == pytest.approx(0.4)
    assert fooling_ratio([0, 2, 1], [0, 1, 1]) == pytest.approx(1 / 3)


def test_fooling_ratio_edge_cases():
    assert np.isnan(fooling_ratio(np.zeros(3), np.ones(3), mask=np.zeros(3, bool)))
    assert np.isnan(fooling_ratio([], []))
    with pytest.raises(InputError, match="scores"):
        fooling_ratio(np.array([0.2, 0.7]), np.array([0, 1]))
    with pytest.raises(InputError, match="pred_adv"):
        fooling_ratio([0, 1, 1], [0, 1])
    with pytest.raises(InputError, match="boolean"):
        fooling_ratio([0, 1], [1, 1], mask=[1, 0])
    with pytest.raises(InputError, match="weights"):
        fooling_ratio([0, 1], [1, 1], weights=[1.0])


def test_binomial_uncertainty():
    assert binomial_uncertainty(25, 100) == pytest.approx(np.sqrt(0.25 * 0.75 / 100))
    assert binomial_uncertainty(0, 10) == 0.0
    arr = binomial_uncertainty(np.array([1, 5]), np.array([10, 10]))
    assert np.allclose(arr, np.sqrt([0.09 / 10, 0.25 / 10]))
    assert np.isnan(binomial_uncertainty(0, 0))
    with pytest.raises(InputError):
        binomial_uncertainty(5, 3)


def test_effective_count_and_weighted_uncertainty():
    assert effective_count(np.ones(50)) == pytest.approx(50)
    assert effective_count([2.0, 0.0, 0.0]) == pytest.approx(1)
    assert effective_count([]) == 0.0
    rng = np.random.default_rng(0)
    t = rng.random(200) < 0.3
    # unit (or any equal) weights: exactly the binomial error
    p = t.mean()
    for c in (1.0, 7.5):
        assert weighted_fraction_uncertainty(t, np.full(200, c)) == pytest.approx(
            np.sqrt(p * (1 - p) / 200)
        )


def test_fooling_ratio_with_error():
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 2, 400)
    adv = np.where(rng.random(400) < 0.2, 1 - clean, clean)
    r, e = fooling_ratio_with_error(clean, adv)
    k = int((clean != adv).sum())
    assert r == pytest.approx(k / 400) and e == pytest.approx(binomial_uncertainty(k, 400))
    r2, e2 = fooling_ratio_with_error(clean, adv, weights=np.full(400, 0.3))
    assert r2 == pytest.approx(r) and e2 == pytest.approx(e)
    # uneven weights, flips equally frequent in the heavy and light groups: the error is
    # the binomial one for the Kish effective count (larger than for 400 events)
    clean = np.zeros(400, dtype=int)
    adv = np.zeros(400, dtype=int)
    adv[:20] = 1  # 20 % of the heavy group
    adv[100:160] = 1  # 20 % of the light group
    w = np.where(np.arange(400) < 100, 40.0, 1.0)
    r3, e3 = fooling_ratio_with_error(clean, adv, weights=w)
    n_eff = effective_count(w)
    assert r3 == pytest.approx(0.2)
    assert e3 == pytest.approx(binomial_uncertainty(0.2 * n_eff, n_eff))
    assert e3 > binomial_uncertainty(80, 400)
    r4, e4 = fooling_ratio_with_error(clean, adv, mask=np.zeros(400, bool))
    assert np.isnan(r4) and np.isnan(e4)


# ---------------------------------------------------------------------- AUROC
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weighted", [False, True])
def test_auroc_matches_sklearn_with_ties(seed, weighted):
    rng = np.random.default_rng(seed)
    n = 500
    y = rng.integers(0, 2, n)
    score = np.round(rng.normal(size=n) + 0.7 * y, 1)  # many ties
    w = rng.exponential(size=n) if weighted else None
    assert auroc(y, score, w) == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(-3, 3),
            st.floats(0.01, 10.0, allow_nan=False),
        ),
        min_size=2,
        max_size=40,
    )
)
def test_auroc_property_against_sklearn(data):
    y = np.array([d[0] for d in data], dtype=int)
    if y.min() == y.max():
        with pytest.raises(InputError):
            auroc(y, np.zeros(len(y)))
        return
    s = np.array([d[1] for d in data], dtype=float)
    w = np.array([d[2] for d in data])
    assert auroc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-9)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # symmetric: flipping labels gives 1 - AUC
    assert auroc(1 - y, s, w) == pytest.approx(1 - auroc(y, s, w), abs=1e-12)


def test_auroc_extremes_and_errors():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    assert auroc(np.array([False, True]), [1.0, 2.0]) == 1.0
    with pytest.raises(InputError, match="binary"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="NaN"):
        auroc([0, 1], [np.nan, 0.2])
    with pytest.raises(InputError):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(InputError, match="both classes"):
        auroc([0, 1], [0.1, 0.2], weights=[1.0, 0.0])


def test_distortion_measures_are_reexported():
    import advsyst.stats

    assert jsd_per_feature is advsyst.stats.jsd_per_feature
    assert delta_fn is advsyst.stats.delta_fn
    X = np.random.default_rng(0).normal(size=(300, 3))
    assert np.allclose(jsd_per_feature(X, X, num_bins=20), 0.0)
    assert delta_fn(X, X) == pytest.approx(0.0, abs=1e-12)
    shifted = jsd_per_feature(X, X + [0.5, 0.0, 0.0], num_bins=20)
    assert shifted[0] > 0.05 and np.allclose(shifted[1:], 0.0)
