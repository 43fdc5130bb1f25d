"""advsyst.stats against brute-force recomputation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from advsyst.errors import InputError
from advsyst.stats import (
    FeatureBinning,
    MomentTracker,
    delta_fn,
    distance_correlation,
    distance_correlation_matrix,
    jsd,
    jsd_per_feature,
    pearson_correlation,
)


def _data(seed: int, n: int = 60, d: int = 4, weighted: bool = True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    w = rng.uniform(0.2, 3.0, n) if weighted else None
    return X, w


def test_jsd_matches_scipy_base2():
    rng = np.random.default_rng(1)
    p, q = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
    q[:5] = 0.0
    assert jsd(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert jsd(p, p) == pytest.approx(0.0, abs=1e-7)
    assert jsd(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)


def test_binning_edges_follow_numpy_histogram_convention():
    X = np.array([[0.0], [0.25], [0.5], [1.0], [0.75]])
    b = FeatureBinning.from_data(X, 4)
    # on an inner edge the value goes to the bin that starts there; the max to the last bin
    assert b.index(X)[:, 0].tolist() == [1, 2, 3, 4, 4]
    counts, _ = np.histogram(X[:, 0], bins=b.edges[0])
    assert b.histogram(X)[0, 1:-1].tolist() == counts.tolist()
    assert b.index(np.array([[-0.1], [1.1]]))[:, 0].tolist() == [0, 5]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), split=st.integers(1, 59), weighted=st.booleans())
def test_moment_trackers_merge_to_the_union(seed, split, weighted):
    X, w = _data(seed, weighted=weighted)
    wa = None if w is None else w[:split]
    wb = None if w is None else w[split:]
    m = MomentTracker.from_data(X[:split], wa) + MomentTracker.from_data(X[split:], wb)
    full = MomentTracker.from_data(X, w)
    assert m.W == pytest.approx(full.W)
    np.testing.assert_allclose(m.mean, full.mean, atol=1e-10)
    np.testing.assert_allclose(m.cov, full.cov, atol=1e-9)
    np.testing.assert_allclose(
        full.cov, np.cov(X.T, aweights=w, bias=True) if w is not None else np.cov(X.T, bias=True)
    )


def test_pearson_matches_numpy_unweighted_and_weighted():
    X, w = _data(3, n=200)
    np.testing.assert_allclose(pearson_correlation(X), np.corrcoef(X.T), atol=1e-12)
    cov = np.cov(X.T, aweights=w, bias=True)
    s = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(pearson_correlation(X, w), cov / np.outer(s, s), atol=1e-12)


def test_zero_variance_feature_is_a_clear_error_or_excluded():
    X, _ = _data(4)
    X[:, 2] = 5.0
    with pytest.raises(InputError, match=r"zero-variance feature\(s\) \[2\]"):
        pearson_correlation(X)
    valid = np.array([True, True, False, True])
    C = pearson_correlation(X, valid=valid)
    assert np.all(C[2] == 0) and np.all(C[:, 2] == 0)
    np.testing.assert_allclose(C[np.ix_(valid, valid)], np.corrcoef(X[:, valid].T), atol=1e-12)


def test_nan_is_named():
    X, _ = _data(5)
    X[3, 1] = np.nan
    with pytest.raises(InputError, match=r"NaN/inf .*column\(s\) \[1\]"):
        jsd_per_feature(X, X)


def test_distance_correlation_against_dcor_package():
    dcor = pytest.importorskip("dcor")
    rng = np.random.default_rng(7)
    x = rng.normal(size=300)
    y = x**2 + 0.1 * rng.normal(size=300)
    assert distance_correlation(x, y) == pytest.approx(dcor.distance_correlation(x, y), rel=1e-9)
    X = np.column_stack([x, y, rng.normal(size=300)])
    R = distance_correlation_matrix(X, subsample=None)
    assert R[0, 1] == pytest.approx(dcor.distance_correlation(x, y), rel=1e-9)
    assert R[0, 2] < 0.2 and R[0, 1] > 0.3
    Rs = distance_correlation_matrix(X, subsample=100, seed=1)
    sel = np.random.default_rng(1).choice(300, size=100, replace=False)  # the documented draw
    for j in range(3):
        for k in range(3):
            want = dcor.distance_correlation(X[sel, j], X[sel, k])
            assert Rs[j, k] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert not np.allclose(Rs, R)  # a subsample, not the full set


def test_jsd_per_feature_weights_per_array():
    """Different event sets take a weight array each; one weight array for two sets of
    different lengths is an error (it used to be dropped for the reference silently)."""
    rng = np.random.default_rng(11)
    A, B = rng.normal(size=(80, 2)), rng.normal(0.3, 1.0, size=(50, 2))
    wa, wb = rng.uniform(0.2, 2.0, 80), rng.uniform(0.2, 2.0, 50)
    with pytest.raises(InputError, match="weights_ref"):
        jsd_per_feature(A, B, num_bins=8, weights=wb)
    with pytest.raises(InputError, match=r"weights_ref must have shape \(80,\)"):
        jsd_per_feature(A, B, num_bins=8, weights=wb, weights_ref=wa[:50])
    got = jsd_per_feature(A, B, num_bins=8, weights=wb, weights_ref=wa)
    for j in range(2):
        e = np.linspace(A[:, j].min(), A[:, j].max(), 9)
        ha = np.r_[wa[A[:, j] < e[0]].sum(), np.histogram(A[:, j], e, weights=wa)[0], 0.0]
        hb = np.r_[
            wb[B[:, j] < e[0]].sum(),
            np.histogram(B[:, j], e, weights=wb)[0],
            wb[B[:, j] > e[-1]].sum(),
        ]
        assert got[j] == pytest.approx(jensenshannon(ha, hb, base=2), abs=1e-12)
    # same events, moved values: one array serves both
    same = jsd_per_feature(A, A + 0.1, num_bins=8, weights=wa)
    assert same == pytest.approx(
        jsd_per_feature(A, A + 0.1, num_bins=8, weights=wa, weights_ref=wa)
    )


def test_delta_fn_with_nothing_monitored_is_zero_not_nan():
    X, w = _data(6)
    valid = np.zeros(4, bool)
    assert delta_fn(X, X + 1.0, w, valid=valid) == 0.0
