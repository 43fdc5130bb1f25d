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
    HistogramTracker,
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


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    moves=st.lists(
        st.tuples(
            st.integers(0, 59), st.integers(0, 3), st.sampled_from([-1.5, -0.3, 0.0, 0.7, 3.0])
        ),
        min_size=1,
        max_size=25,
    ),
    weighted=st.booleans(),
    on_edge=st.booleans(),
)
def test_histogram_tracker_updates_equal_recount(seed, moves, weighted, on_edge):
    X, w = _data(seed, weighted=weighted)
    tr = HistogramTracker.from_data(X, num_bins=7, weights=w)
    Xc = X.copy()
    for i, j, dv in moves:
        old = Xc[i, j]
        new = tr.binning.edges[j, 3] if on_edge else old + dv  # exactly on an inner edge
        pred = tr.candidate_jsd(j, old, new, 1.0 if w is None else w[i])
        tr.move(j, old, new, 1.0 if w is None else w[i])
        Xc[i, j] = new
        assert tr.jsd()[j] == pytest.approx(pred, abs=1e-9)
    H = tr.binning.histogram(Xc, w)
    np.testing.assert_allclose(tr.counts, H, atol=1e-9)
    brute = jsd_per_feature(X, Xc, weights=w, binning=tr.binning)
    np.testing.assert_allclose(tr.jsd(), brute, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    moves=st.lists(
        st.tuples(st.integers(0, 59), st.integers(0, 3), st.floats(-3, 3)), min_size=1, max_size=25
    ),
    weighted=st.booleans(),
)
def test_moment_tracker_updates_equal_recomputation(seed, moves, weighted):
    X, w = _data(seed, weighted=weighted)
    tr = MomentTracker.from_data(X, w)
    C0 = pearson_correlation(X, w)
    Xc = X.copy()
    for i, j, dv in moves:
        wi = 1.0 if w is None else w[i]
        # closed-form prediction of the Frobenius norm after the move
        rest = tr.correlation() - C0
        R = (rest**2).sum() - 2 * (rest[j] ** 2).sum() + rest[j, j] ** 2
        pred = R + 2 * tr.candidate_frobenius_sq(Xc[i], j, np.array([dv]), C0, wi)[0]
        tr.move(Xc[i], j, dv, wi)
        Xc[i, j] += dv
        direct = ((pearson_correlation(Xc, w) - C0) ** 2).sum()
        assert pred == pytest.approx(direct, rel=1e-7, abs=1e-10)
    ref = MomentTracker.from_data(Xc, w)
    np.testing.assert_allclose(tr.mean, ref.mean, atol=1e-9)
    np.testing.assert_allclose(tr.cov, ref.cov, atol=1e-8)
    assert np.sqrt(((tr.correlation() - C0) ** 2).sum()) / np.linalg.norm(C0) == pytest.approx(
        delta_fn(X, Xc, w), abs=1e-8
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), split=st.integers(1, 59), weighted=st.booleans())
def test_trackers_merge_to_the_union(seed, split, weighted):
    X, w = _data(seed, weighted=weighted)
    wa = None if w is None else w[:split]
    wb = None if w is None else w[split:]
    m = MomentTracker.from_data(X[:split], wa) + MomentTracker.from_data(X[split:], wb)
    full = MomentTracker.from_data(X, w)
    assert m.W == pytest.approx(full.W)
    np.testing.assert_allclose(m.mean, full.mean, atol=1e-10)
    np.testing.assert_allclose(m.cov, full.cov, atol=1e-9)
    b = FeatureBinning.from_data(X, 9)
    h = HistogramTracker.from_data(X[:split], weights=wa, binning=b) + HistogramTracker.from_data(
        X[split:], weights=wb, binning=b
    )
    np.testing.assert_allclose(h.counts, HistogramTracker.from_data(X, weights=w, binning=b).counts)


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
    assert Rs.shape == (3, 3) and np.allclose(np.diag(Rs), 1.0)
