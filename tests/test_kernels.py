"""The attack's numba kernels against brute-force recomputation with plain numpy, in moved,
weighted states: the tracked statistics after a sequence of moves, every candidate's JSD
and correlation term, and the chosen move (the argmin over the admissible grid)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _bruteforce as bf
from advsyst.attacks import _kernels as K
from advsyst.attacks.conservattack import _State
from advsyst.stats import FeatureBinning

NB = 6  # bins: coarse, so that moves change bins often


_hist, _jsd, _corr = bf.hist, bf.jsd, bf.corr


def _setup(seed, n, d):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    w = rng.uniform(0.2, 3.0, n)
    cons = np.ones(n, bool)
    binning = FeatureBinning.from_data(X, NB)
    state = _State(X, w, cons, binning, np.ones(d, bool))
    return rng, X, w, state, binning


def _moves(rng, X, w, state, n_moves):
    """Random moves through apply_move (some land exactly on a bin edge); returns the moved
    data and the per-move correlation changes the kernel reported."""
    Xm = X.copy()
    ka = state.kernel_args()
    out = []
    for _ in range(n_moves):
        i, j = rng.integers(len(X)), rng.integers(X.shape[1])
        if rng.uniform() < 0.3:
            new = state.edges[j, rng.integers(NB + 1)]
        else:
            new = Xm[i, j] + rng.normal() * 1.5
        C_before = _corr(Xm, w)
        dc2 = K.apply_move(Xm[i], w[i], j, new, ka)
        assert Xm[i, j] == new
        out.append((dc2, float(((_corr(Xm, w) - C_before) ** 2).sum())))
    return Xm, out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), n_moves=st.integers(1, 30), d=st.integers(2, 5))
def test_apply_move_tracks_every_statistic_exactly(seed, n_moves, d):
    rng, X, w, state, binning = _setup(seed, 50, d)
    Xm, dcs = _moves(rng, X, w, state, n_moves)
    for got, want in dcs:
        assert got == pytest.approx(want, rel=1e-7, abs=1e-12)
    H = np.array([_hist(Xm[:, j], w, binning.edges[j]) for j in range(d)])
    np.testing.assert_allclose(state.H, H, atol=1e-9)
    H0 = np.array([_hist(X[:, j], w, binning.edges[j]) for j in range(d)])
    np.testing.assert_allclose(state.jsd(), [_jsd(H0[j], H[j]) for j in range(d)], atol=1e-7)
    np.testing.assert_allclose(state.mean, np.average(Xm, axis=0, weights=w), atol=1e-10)
    np.testing.assert_allclose(state.cov, np.cov(Xm.T, aweights=w, bias=True), atol=1e-9)
    C, C0 = _corr(Xm, w), _corr(X, w)
    np.testing.assert_allclose(state.Ccur, C, atol=1e-9)
    assert state.F2[0] == pytest.approx(((C - C0) ** 2).sum(), rel=1e-7, abs=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    n_moves=st.integers(0, 20),
    mode=st.sampled_from([K.MODE_CUMULATIVE, K.MODE_PER_CHANGE]),
    mag=st.floats(0.01, 4.0),
    sign=st.sampled_from([-1.0, 1.0]),
)
def test_candidate_scores_equal_brute_force_in_a_moved_weighted_state(
    seed, n_moves, mode, mag, sign
):
    """One candidate at a time (grid of size 1, limits that never bind): alpha=1, beta=0
    gives the feature's JSD after the move; alpha=0, beta=1 the correlation term (cumulative:
    ‖C − C0‖_F/‖C0‖_F after the move; per_change: ‖C_after − C_before‖_F)."""
    rng, X, w, state, binning = _setup(seed, 40, 4)
    Xm, _ = _moves(rng, X, w, state, n_moves)
    ka = state.kernel_args()
    i, j = int(rng.integers(40)), int(rng.integers(4))
    lo, hi = np.full(4, -1e9), np.full(4, 1e9)
    cand = K.make_cand(
        lo, hi, np.full(4, mag), np.full(4, 1.0), 0, 1, np.zeros(4, bool), 0, 1, False
    )
    Xa = Xm.copy()
    Xa[i, j] += sign * mag
    H0 = _hist(X[:, j], w, binning.edges[j])
    want_jsd = _jsd(H0, _hist(Xa[:, j], w, binning.edges[j]))
    C0, Cb, Ca = _corr(X, w), _corr(Xm, w), _corr(Xa, w)
    if mode == K.MODE_CUMULATIVE:
        want_corr = np.linalg.norm(Ca - C0) / np.linalg.norm(C0)
    else:
        want_corr = np.linalg.norm(Ca - Cb)
    for alpha, beta, want in ((1.0, 0.0, want_jsd), (0.0, 1.0, want_corr)):
        budget = (mode, 1.0, 1e9, state.norm0, alpha, beta)
        dl, sc, status = K.score_feature(
            Xm[i].copy(), w[i], j, sign, i, cand, ka, budget, True, False
        )
        assert status == 1
        assert dl == sign * mag
        # compared as squares: JSD = sqrt(S), and near S = 0 a rounding of 1e-17 in the
        # running sum S is a difference of 3e-9 in the distance
        assert sc**2 == pytest.approx(want**2, rel=1e-6, abs=1e-15)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    n_moves=st.integers(0, 20),
    mode=st.sampled_from([K.MODE_CUMULATIVE, K.MODE_PER_CHANGE]),
    sign=st.sampled_from([-1.0, 1.0]),
    q_jsd=st.floats(0.2, 0.9),
    q_corr=st.floats(0.2, 0.9),
)
def test_chosen_move_is_the_brute_force_argmin_in_a_moved_weighted_state(
    seed, n_moves, mode, sign, q_jsd, q_corr
):
    """The kernel's move minimises alpha·JSD + beta·corr over the admissible grid
    candidates, limits set between the candidates' brute-force values so that they bind."""
    rng, X, w, state, binning = _setup(seed, 40, 4)
    Xm, _ = _moves(rng, X, w, state, n_moves)
    ka = state.kernel_args()
    i, j = int(rng.integers(40)), int(rng.integers(4))
    mc, stp, alpha, beta = 0.05, 0.15, 6.5, 1.0
    lo, hi = Xm.min(0) - 1.0, Xm.max(0) + 1.0
    dist = hi[j] - Xm[i, j] if sign > 0 else Xm[i, j] - lo[j]
    H0 = _hist(X[:, j], w, binning.edges[j])
    C0, Cb = _corr(X, w), _corr(Xm, w)
    rows = []
    k = 0
    while mc + k * stp <= dist:
        delta = sign * (mc + k * stp)
        Xa = Xm.copy()
        Xa[i, j] += delta
        jd = _jsd(H0, _hist(Xa[:, j], w, binning.edges[j]))
        Ca = _corr(Xa, w)
        if mode == K.MODE_CUMULATIVE:
            corr = np.linalg.norm(Ca - C0) / np.linalg.norm(C0)
        else:
            corr = np.linalg.norm(Ca - Cb)
        rows.append((delta, jd, corr))
        k += 1
    rows = np.array(rows)
    lim_j = float(np.quantile(rows[:, 1], q_jsd))
    lim_c = float(np.quantile(rows[:, 2], q_corr))
    ok = (rows[:, 1] <= lim_j) & (rows[:, 2] <= lim_c)
    # keep clear of ties and of candidates within rounding of a limit
    near = np.minimum(np.abs(rows[:, 1] - lim_j), np.abs(rows[:, 2] - lim_c))
    sc = alpha * rows[:, 1] + beta * rows[:, 2]
    cand = K.make_cand(
        lo, hi, np.full(4, mc), np.full(4, stp), 0, 10_000, np.zeros(4, bool), 0, 1, False
    )
    budget = (mode, lim_j, lim_c, state.norm0, alpha, beta)
    dl, got_sc, status = K.score_feature(
        Xm[i].copy(), w[i], j, sign, i, cand, ka, budget, True, False
    )
    if not ok.any():
        assert status == 0
        return
    best = int(np.argmin(np.where(ok, sc, np.inf)))
    srt = np.sort(sc[ok])
    if (near[ok] < 1e-9).any() or (len(srt) > 1 and srt[1] - srt[0] < 1e-9):
        return  # ambiguous within rounding
    assert status == 1
    assert dl == pytest.approx(rows[best, 0], abs=1e-12)
    assert got_sc == pytest.approx(sc[best], rel=1e-6, abs=1e-9)


def test_zero_min_change_is_no_candidate():
    """min_change = 0: the zero move (which never costs anything) is skipped, the grid
    starts at one step."""
    rng, X, w, state, binning = _setup(3, 40, 3)
    lo, hi = X.min(0) - 1, X.max(0) + 1
    cand = K.make_cand(lo, hi, np.zeros(3), np.full(3, 0.2), 0, 100, np.zeros(3, bool), 0, 1, False)
    budget = (K.MODE_CUMULATIVE, 1.0, 1e9, state.norm0, 6.5, 1.0)
    dl, sc, status = K.score_feature(X[0].copy(), w[0], 1, 1.0, 0, cand, state.kernel_args(),
                                     budget, True, False)  # fmt: skip
    assert status == 1
    assert dl != 0.0
    assert dl == pytest.approx(round(dl / 0.2) * 0.2, abs=1e-12)  # on the grid k·step, k >= 1
