"""Signed event weights (NLO negative genWeight): every statistic against brute force with
25 % negative weights, in moved states."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import _bruteforce as bf
from _toys import fit_mlp
from advsyst.attacks import ConservAttack
from advsyst.attacks import _kernels as K
from advsyst.attacks.conservattack import _State
from advsyst.errors import InputError
from advsyst.stats import FeatureBinning


def _signed_weights(rng, n, frac=0.25):
    w = rng.uniform(0.5, 1.5, n)
    w[rng.random(n) < frac] *= -1.0
    return w


def _bf_jsd2(x0, x, w, edges):
    """JSD² from numpy histograms (with under/overflow) whose negative slots count as zero."""
    K_ = len(edges) - 1

    def hist(v):
        inner, _ = np.histogram(v, bins=edges, weights=w)
        return np.r_[w[v < edges[0]].sum(), inner, w[v > edges[-1]].sum()]

    p, q = np.clip(hist(x0), 0, None), np.clip(hist(x), 0, None)
    assert len(p) == K_ + 2
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    kl = lambda a: np.sum(a[a > 0] * np.log2(a[a > 0] / m[a > 0]))  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


def test_incremental_state_matches_brute_force_with_negative_weights(rng):
    """Random moves (of positive- and negative-weight events) through apply_move, including
    slots whose net content crosses zero: every tracked JSD row (own binning and an offset
    one) and the correlation equal a recomputation with numpy."""
    n, d = 400, 3
    X0 = rng.normal(size=(n, d))
    X0[:, 1] += 0.6 * X0[:, 0]
    w = _signed_weights(rng, n)
    cons = np.ones(n, bool)
    base = FeatureBinning.from_data(X0, 12)
    extra = [FeatureBinning.equal_width(X0.min(0), X0.max(0), 7, 0.5)]
    state = _State(X0, w, cons, base, np.ones(d, bool), extra)
    ka = state.kernel_args()
    X = X0.copy()
    C0 = bf.corr_raw(X0, w)
    crossed = 0
    neg = np.nonzero(w < 0)[0]
    for step in range(300):
        i = int(rng.choice(neg)) if step % 2 else int(rng.integers(n))
        j = int(rng.integers(d))
        before = (state.H < 0).sum()
        K.apply_move(X[i], w[i], j, X[i, j] + rng.normal(scale=1.5), ka)
        crossed += int((state.H < 0).sum() != before)
        if step % 30 == 0 or step == 299:
            for r, b in enumerate([base, *extra]):
                for jj in range(d):
                    ref = _bf_jsd2(X0[:, jj], X[:, jj], w, b.edges[jj])
                    assert state.Ssum[r * d + jj] == pytest.approx(ref, abs=1e-10)
            C = bf.corr_raw(X, w)
            np.testing.assert_allclose(state.Ccur, C, atol=1e-9)
            assert state.F2[0] == pytest.approx(((C - C0) ** 2).sum(), abs=1e-9)
    assert crossed > 0  # the O(slots) branch was exercised


def test_candidate_choice_is_the_brute_force_argmin_in_a_moved_signed_state(rng):
    """The kernel's chosen move equals the argmin of alpha·JSD + beta·ΔFN over the same grid
    computed from numpy histograms (clamped slots) and raw-moment correlations."""
    n, d = 150, 3
    X0 = rng.normal(size=(n, d))
    X0[:, 2] += 0.5 * X0[:, 1]
    w = _signed_weights(rng, n)
    base = FeatureBinning.from_data(X0, 8)
    state = _State(X0, w, np.ones(n, bool), base, np.ones(d, bool))
    ka = state.kernel_args()
    X = X0.copy()
    for _ in range(40):  # a moved state
        i, j = int(rng.integers(n)), int(rng.integers(d))
        K.apply_move(X[i], w[i], j, X[i, j] + rng.normal(scale=0.8), ka)
    lo, hi = X0.min(0) - 1, X0.max(0) + 1
    mc, st, alpha, beta, lim_j, lim_f = 0.05, 0.13, 2.0, 1.0, 0.4, 0.3
    C0 = bf.corr_raw(X0, w)
    norm0 = np.linalg.norm(C0)
    cand = K.make_cand(lo, hi, np.full(d, mc), np.full(d, st), 0, 1000, np.zeros(d), 0, 1, False)
    checked = 0
    for i in np.nonzero(w < 0)[0][:6]:
        for j in range(d):
            for sgn in (1.0, -1.0):
                dl, sc, stt = K.score_feature(
                    X[i], w[i], j, sgn, int(i), cand, ka,
                    (K.MODE_CUMULATIVE, lim_j, lim_f, norm0, alpha, beta), True, False,
                )  # fmt: skip
                best, best_sc = 0.0, np.inf
                for c in range(1000):
                    xn = X[i, j] + sgn * (mc + c * st)
                    if not lo[j] <= xn <= hi[j]:
                        break
                    Xc = X.copy()
                    Xc[i, j] = xn
                    jd = np.sqrt(max(_bf_jsd2(X0[:, j], Xc[:, j], w, base.edges[j]), 0))
                    jall = [_bf_jsd2(X0[:, k], Xc[:, k], w, base.edges[k]) for k in range(d)]
                    fn = np.linalg.norm(bf.corr_raw(Xc, w) - C0) / norm0
                    s_ = alpha * jd + beta * fn
                    if max(jall) <= lim_j**2 + 1e-12 and fn <= lim_f and s_ < best_sc - 1e-12:
                        best, best_sc = xn - X[i, j], s_
                if np.isfinite(best_sc):
                    assert stt == 1 and dl == pytest.approx(best, abs=1e-9)
                    assert sc == pytest.approx(best_sc, rel=1e-7)
                    checked += 1
                else:
                    assert stt == 0
    assert checked > 5


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(3)
    n = 1200
    X = rng.normal(size=(n, 3))
    X[:, 1] += 0.5 * X[:, 0]
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    net = fit_mlp(X, y, hidden=8, epochs=100)
    return X, y, net, _signed_weights(rng, n)


CFG = dict(min_change=0.02, step=0.05, num_bins=30, n_iterations=3, progress=False,
           max_jsd=0.05, max_dfn=0.03)  # fmt: skip


def test_attack_with_negative_weights_reports_brute_force_statistics(toy):
    X, y, net, w = toy
    res = ConservAttack(CFG).run(X, net, y=y, weights=w)
    m = res.metrics
    assert m["fooling_ratio"] > 0
    edges = FeatureBinning.from_data(X, 30).edges
    jsd = np.sqrt([_bf_jsd2(X[:, j], res.X_adv[:, j], w, edges[j]) for j in range(3)])
    np.testing.assert_allclose(m["jsd"], jsd, atol=1e-12)
    assert jsd.max() <= 0.05 + 1e-9
    C0, C = bf.corr_raw(X, w), bf.corr_raw(res.X_adv, w)
    dfn = np.linalg.norm(C - C0) / np.linalg.norm(C0)
    assert m["dfn"] == pytest.approx(dfn, abs=1e-10) and dfn <= 0.03 + 1e-9
    flip = res.pred_clean != res.pred_adv
    assert m["fooling_ratio"] == pytest.approx((w * flip).sum() / w.sum(), abs=1e-12)
    # the report counts the slots whose net content is negative
    ref = sum(
        int((np.histogram(res.X_adv[:, j], bins=edges[j], weights=w)[0] < 0).sum())
        for j in range(3)
    )
    assert m["negative_slots"]["adversarial"] >= ref


def test_non_positive_total_weight_is_an_error(toy):
    X, y, net, _ = toy
    w = -np.ones(len(X))
    w[:10] = 1.0
    with pytest.raises(InputError, match="total event weight of the constraint set"):
        ConservAttack(CFG).run(X, net, weights=w)


def test_negative_signed_variance_freezes_the_feature(toy, caplog):
    X, y, net, w = toy
    X = X.copy()
    w = np.abs(w)
    # feature 2: constant for positive weights, spread only by negative-weight events
    X[:, 2] = 0.0
    X[:30, 2] = np.linspace(-1, 1, 30)
    w[:30] = -0.2
    with caplog.at_level(logging.WARNING, logger="advsyst.attacks.conservattack"):
        res = ConservAttack(CFG).run(X, net, weights=w)
    assert "non-positive signed-weight variance" in caplog.text
    np.testing.assert_array_equal(res.X_adv[:, 2], X[:, 2])
