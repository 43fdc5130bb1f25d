"""Constituent sorting, padding and TopoDNN-style preprocessing."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advsyst.features import (
    StandardScaler,
    pad_constituents,
    raw_constituent_features,
    raw_feature_names,
    topodnn_feature_names,
    topodnn_features,
    wrap_phi,
)


def _jets(rng, n_jets=40, max_c=45):
    counts = rng.integers(0, max_c, n_jets)
    total = counts.sum()
    pt = ak.unflatten(rng.exponential(10.0, total) + 0.1, counts)
    jet_eta = rng.uniform(-2, 2, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    eta = ak.unflatten(np.repeat(jet_eta, counts) + rng.normal(0, 0.3, total), counts)
    phi = ak.unflatten(wrap_phi(np.repeat(jet_phi, counts) + rng.normal(0, 0.3, total)), counts)
    jet_pt = ak.to_numpy(ak.sum(pt, axis=1)) + 1.0
    return pt, eta, phi, jet_pt, jet_eta, jet_phi


def test_names():
    raw = raw_feature_names()
    assert len(raw) == 90 and raw[:4] == ["pt_1", "eta_1", "phi_1", "pt_2"]
    names = topodnn_feature_names()
    assert len(names) == 87 and names[:5] == ["pt_1", "pt_2", "phi_2", "pt_3", "eta_3"]
    assert not {"eta_1", "phi_1", "eta_2"} & set(names)


def test_raw_features_sorted_truncated_padded(rng):
    pt, eta, phi, *_ = _jets(rng)
    X = raw_constituent_features(pt, eta, phi)
    assert X.shape == (40, 90)
    for i in range(40):
        p, e, f = (ak.to_numpy(a[i]) for a in (pt, eta, phi))
        order = np.argsort(-p, kind="stable")[:30]
        k = order.size
        np.testing.assert_array_equal(X[i, 0 : 3 * k : 3], p[order])
        np.testing.assert_array_equal(X[i, 1 : 3 * k : 3], e[order])
        np.testing.assert_array_equal(X[i, 2 : 3 * k : 3], f[order])
        assert np.all(X[i, 3 * k :] == 0.0)


def test_pad_counts_and_ties_keep_input_order():
    pt = ak.Array([[2.0, 5.0, 2.0], []])
    eta = ak.Array([[0.1, 0.2, 0.3], []])
    phi = ak.Array([[0.0, 0.0, 0.0], []])
    padded, counts = pad_constituents(pt, eta, phi, n=4)
    assert counts.tolist() == [3, 0]
    assert padded[0, :, 1].tolist() == [0.2, 0.1, 0.3, 0.0]
    assert np.all(padded[1] == 0)


def test_topodnn_fixed_entries_and_padding(rng):
    pt, eta, phi, jpt, jeta, jphi = _jets(rng)
    full = topodnn_features(pt, eta, phi, jpt, jeta, jphi, drop_fixed=False)
    full = full.reshape(-1, 30, 3)
    counts = np.minimum(ak.to_numpy(ak.num(pt)), 30)
    assert np.all(full[:, 0, 1:] == 0.0) and np.all(full[:, 1, 1] == 0.0)
    assert np.all(full[counts >= 2, 1, 2] <= 0.0)  # second constituent below the origin
    assert np.all(full[counts >= 3, 2, 1] >= 0.0)  # third at positive eta
    for i, c in enumerate(counts):
        assert np.all(full[i, c:] == 0.0)
    # pT fractions of the jet pT, in decreasing order
    np.testing.assert_allclose(
        full[:, 0, 0],
        np.where(counts > 0, ak.to_numpy(ak.max(pt, axis=1, mask_identity=False)) / jpt, 0),
    )
    X = topodnn_features(pt, eta, phi, jpt, jeta, jphi)
    assert X.shape == (40, 87)
    np.testing.assert_array_equal(
        X, full.reshape(-1, 90)[:, [i for i in range(90) if i not in (1, 2, 4)]]
    )


def test_topodnn_fixed_pt_scale(rng):
    pt, eta, phi, jpt, jeta, jphi = _jets(rng, n_jets=5)
    X = topodnn_features(pt, eta, phi, jpt, jeta, jphi, pt_scale=100.0)
    raw = raw_constituent_features(pt, eta, phi)
    np.testing.assert_allclose(X[:, 0], raw[:, 0] / 100.0)
    with pytest.raises(ValueError):
        topodnn_features(pt, eta, phi, jpt, jeta, jphi, pt_scale="weird")


@settings(max_examples=40, deadline=None)
@given(
    angle=st.floats(-np.pi, np.pi),
    shift_eta=st.floats(-1.5, 1.5),
    shift_phi=st.floats(-np.pi, np.pi),
    seed=st.integers(0, 1000),
)
def test_topodnn_invariant_under_translation_rotation_reflection(angle, shift_eta, shift_phi, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 35))
    pt = np.sort(rng.exponential(10, n))[::-1] + np.arange(n, 0, -1) * 1e-3
    deta, dphi = rng.normal(0, 0.3, n), rng.normal(0, 0.3, n)

    def feats(de, dp, jeta, jphi):
        return topodnn_features(
            ak.Array([pt]),
            ak.Array([jeta + de]),
            ak.Array([wrap_phi(jphi + dp)]),
            [pt.sum()],
            [jeta],
            [jphi],
        )

    base = feats(deta, dphi, 0.3, 1.0)
    c, s = np.cos(angle), np.sin(angle)
    rot = feats(c * deta - s * dphi, s * deta + c * dphi, 0.3 + shift_eta, 1.0 + shift_phi)
    refl = feats(-deta, dphi, 0.3, 1.0)
    np.testing.assert_allclose(rot, base, atol=1e-9)
    np.testing.assert_allclose(refl, base, atol=1e-9)


def test_empty_inputs():
    empty = ak.Array([[0.0]])[:0]
    assert raw_constituent_features(empty, empty, empty).shape == (0, 90)
    assert topodnn_features(empty, empty, empty, [], [], []).shape == (0, 87)


def test_standard_scaler_weighted_roundtrip(rng):
    X = rng.normal(3, 2, size=(200, 4))
    X[:, 3] = 0.0
    w = rng.uniform(0.5, 2, 200)
    sc = StandardScaler().fit(X, w)
    Z = sc.transform(X)
    np.testing.assert_allclose(np.average(Z[:, :3], axis=0, weights=w), 0, atol=1e-12)
    assert sc.scale[3] == 1.0
    back = StandardScaler.from_dict(sc.to_dict()).inverse_transform(Z)
    np.testing.assert_allclose(back, X)
