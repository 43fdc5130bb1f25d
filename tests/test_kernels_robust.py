"""The candidate scorer with the binning-robust rows against brute force: in moved states with
signed weights and several extra binnings whose limits bind, the kernel's (deltas, status)
equal what a plain-numpy selection over the same grid gives, and the log-free bounds that
let the kernel skip work enclose the exact row values."""

from __future__ import annotations

import numpy as np
import pytest

import _bruteforce as bf
from advsyst.attacks import _kernels as K
from advsyst.attacks.conservattack import _State
from advsyst.stats import FeatureBinning

N, D, NB = 80, 3, 6
EXTRA = ((4, 0.0), (5, 0.5), (9, 0.25))  # (bins, offset in bin widths)
MC, STEP = 0.04, 0.11
ALPHA, BETA = 6.5, 1.0


def _jsd(x0, x, w, edges):
    """JSD of one histogram row; slots with negative net content count as zero."""
    return bf.jsd(np.clip(bf.hist(x0, w, edges), 0, None), np.clip(bf.hist(x, w, edges), 0, None))


def _setup(seed):
    """A moved state with signed weights (about 15 % negative) and three extra binnings."""
    rng = np.random.default_rng(seed)
    X0 = rng.normal(size=(N, D)) @ rng.normal(size=(D, D))
    w = rng.uniform(0.3, 2.0, N)
    w[rng.random(N) < 0.15] *= -0.4
    cons = np.ones(N, bool)
    own = FeatureBinning.from_data(X0, NB)
    lo, hi = own.edges[:, 0], own.edges[:, -1]
    extra = [FeatureBinning.equal_width(lo, hi, k, off) for k, off in EXTRA]
    state = _State(X0, w, cons, own, np.ones(D, bool), extra)
    X = X0.copy()
    ka = state.kernel_args()
    for _ in range(25):
        i, j = int(rng.integers(N)), int(rng.integers(D))
        K.apply_move(X[i], w[i], j, X[i, j] + rng.normal(scale=0.7), ka)
    return rng, X0, X, w, state


def _brute_force(X0, X, w, state, entries, lo, hi, mode):
    """Every grid candidate of every (event, feature, sign) entry: (delta, JSD of every
    histogram row, correlation term), recomputed from scratch."""
    binnings = state.binnings
    C0, Cb = bf.corr_raw(X0, w), bf.corr_raw(X, w)
    norm0 = np.linalg.norm(C0)
    out = []
    for i, j, s in entries:
        dist = hi[j] - X[i, j] if s > 0 else X[i, j] - lo[j]
        rows = []
        c = 0
        while MC + c * STEP <= dist:
            delta = s * (MC + c * STEP)  # the kernel's grid expression, bit for bit
            Xa = X.copy()
            Xa[i, j] += delta
            jsds = [_jsd(X0[:, j], Xa[:, j], w, b.edges[j]) for b in binnings]
            Ca = bf.corr_raw(Xa, w)
            if mode == K.MODE_CUMULATIVE:
                corr = np.linalg.norm(Ca - C0) / norm0
            else:
                corr = np.linalg.norm(Ca - Cb)
            rows.append((delta, *jsds, corr))
            c += 1
        out.append(np.array(rows).reshape(-1, len(binnings) + 2))
    return out


def _select(cands, lim_rows, max_jsd, max_corr, allow):
    """The selection rule: the admissible candidate of minimal score, the first among
    equal scores (status 1); else with ``allow`` the minimal score among all (status 2).
    Returns (delta, status), or None if rounding could decide it (a value within 1e-9 of
    a limit, or two competing scores within 1e-9)."""
    if len(cands) == 0:
        return 0.0, 0
    jsd = cands[:, 1:-1]
    corr = cands[:, -1]
    sc = ALPHA * jsd[:, 0] + BETA * corr
    near = np.abs(jsd - lim_rows[None, :]).min(1)
    near = np.minimum(near, np.abs(jsd[:, 0] - max_jsd))
    near = np.minimum(near, np.abs(corr - max_corr))
    ok = (jsd <= lim_rows[None, :]).all(1) & (jsd[:, 0] <= max_jsd) & (corr <= max_corr)
    if (near < 1e-9).any():
        return None
    pool = ok if ok.any() else (np.ones(len(sc), bool) if allow else None)
    if pool is None:
        return 0.0, 0
    srt = np.sort(sc[pool])
    if len(srt) > 1 and srt[1] - srt[0] < 1e-9:
        return None
    k = int(np.argmin(np.where(pool, sc, np.inf)))
    return cands[k, 0], 1 if ok.any() else 2


@pytest.mark.parametrize(
    ("seed", "mode", "allow"),
    [
        (0, K.MODE_CUMULATIVE, False),
        (1, K.MODE_CUMULATIVE, False),
        (2, K.MODE_PER_CHANGE, False),
        (3, K.MODE_PER_CHANGE, True),
    ],
)
def test_robust_choice_equals_brute_force_selection(seed, mode, allow):
    """score_block with four histogram rows per feature (limits set between the candidates'
    brute-force values so that every kind of row binds somewhere) returns, entry by entry,
    exactly the move and status of the brute-force selection, and the extra rows change
    the answer for some entries (so the check is not vacuous)."""
    rng, X0, X, w, state = _setup(seed)
    events = rng.choice(N, 16, replace=False)
    neg = np.nonzero(w < 0)[0]
    events[:3] = neg[:3]  # negative-weight events move too
    sign = np.where(rng.random((len(events), D)) < 0.5, -1.0, 1.0)
    lo, hi = X.min(0) - 0.5, X.max(0) + 0.5
    entries = [(int(i), j, sign[t, j]) for t, i in enumerate(events) for j in range(D)]
    cands = _brute_force(X0, X, w, state, entries, lo, hi, mode)
    pooled = np.concatenate([c for c in cands if len(c)])
    R = len(state.binnings)
    # one JSD limit per binning: the extra ones tighter than the own one, so that they bind
    lim = np.quantile(pooled[:, 1 : 1 + R], [0.9] + [0.5] * (R - 1), axis=0).diagonal().copy()
    max_jsd = float(np.quantile(pooled[:, 1], 0.95))
    max_corr = float(np.quantile(pooled[:, -1], 0.6))
    state.hs[2] = np.repeat(lim**2, D)  # row r*d + j: binning r
    ka = state.kernel_args()
    # max_corr limits ||C - C0|| / ||C0|| (cumulative) or ||C_after - C_before|| (per change)
    budget = (mode, max_jsd, max_corr, state.norm0, ALPHA, BETA)
    cand = K.make_cand(lo, hi, np.full(D, MC), np.full(D, STEP), 0, 10_000, np.zeros(D), 0, 1,
                       False)  # fmt: skip
    movable = np.ones((N, D), bool)
    deltas, status = K.score_block(
        X, w, np.ones(N, bool), events, np.arange(N), sign, movable, cand, ka, budget, allow
    )
    checked = changed = 0
    for t, (i, j, s) in enumerate(entries):
        t_ev, jj = divmod(t, D)
        want = _select(cands[t], lim, max_jsd, max_corr, allow)
        if want is None:
            continue  # a limit or a tie within rounding: either answer is right
        assert (deltas[t_ev, jj], status[t_ev, jj]) == want, (i, j, s)
        checked += 1
        own_only = _select(cands[t], np.r_[lim[0], np.full(R - 1, np.inf)], max_jsd, max_corr,
                           allow)  # fmt: skip
        changed += own_only is not None and own_only != want
    assert checked >= 15
    assert changed >= 1


def test_row_bounds_enclose_the_exact_value():
    """_row_bounds encloses the value _row_after computes (moved state, signed weights,
    every pair of slots of every row, three weights), and gives no bound where it cannot
    (a weight <= 0, a slot that would be emptied, a negative slot)."""
    _, X0, X, w, state = _setup(7)
    ka = state.kernel_args()
    H0, H, hs, Ssum = state.H0, state.H, state.hs, state.Ssum
    n_bounded = 0
    for row in range(H.shape[0]):
        n_slots = int(hs[3, row]) + 2
        for wt in (0.7, 1.9, -0.5):
            for a in range(n_slots):
                for b in range(n_slots):
                    if a == b:
                        continue
                    lo, hi = K._row_bounds(wt, a, b, row, ka)
                    S, _ = K._row_after(H0, H, hs, Ssum, row, a, b, wt)
                    if wt <= 0 or not H[row, a] - wt > 0 or H[row, b] < 0:
                        assert (lo, hi) == (-np.inf, np.inf)
                        continue
                    assert lo <= S <= hi
                    n_bounded += int(np.isfinite(lo))
    assert n_bounded > 100


def _rows_exact_ok(X, w, i, j, xn, state):
    """Whether every extra row of feature ``j`` stays within its limit if ``X[i, j]`` became
    ``xn``: each row's value by _row_after (the update apply_move stores)."""
    H0, H, hs, Ssum = state.H0, state.H, state.hs, state.Ssum
    ka = state.kernel_args()
    for r in range(1, len(state.binnings)):
        row = r * D + j
        a = K._slot_row(X[i, j], ka, row)
        b = K._slot_row(xn, ka, row)
        if K._row_after(H0, H, hs, Ssum, row, a, b, w[i])[0] > hs[2, row]:
            return False
    return True


@pytest.mark.parametrize("seed", [11, 12])
def test_extra_rows_decision_cache_equals_row_by_row_check(seed):
    """_extra_rows_ok with its per-row decision cache (and the rows it settles once with
    _row_upper) answers, candidate after candidate, what the rows' values give, for
    sequences that go back and forth between slots (random draws are not monotone), in a
    moved state with signed weights, with limits at the rows' values so that they bind."""
    rng, X0, X, w, state = _setup(seed)
    ka = state.kernel_args()
    nrow = len(state.binnings)
    checked = failed = upper = 0
    for i in [int(k) for k in np.nonzero(w < 0)[0][:4]] + list(rng.choice(N, 10, replace=False)):
        for j in range(D):
            # limits: each row at its current value times a factor around 1 (binding), or
            # loose (settled at once by _row_upper where the row has no negative slot)
            lim = np.maximum(state.Ssum, 1e-9) * rng.uniform(0.9, 1.6, state.Ssum.shape)
            state.hs[2] = np.where(rng.random(lim.shape) < 0.3, lim + 1.0, lim)
            ib, rb = K._row_work(nrow)
            K._rows_reset(ib)
            xs = X[i, j] + rng.normal(scale=0.8, size=40)
            xs[10:20] = np.sort(xs[10:20])  # a monotone stretch: the cache hits
            first = 1
            for xn in xs:
                ok, first = K._extra_rows_ok(X[i, j], xn, w[i], j, D, ka, ib, rb, first)
                assert ok == _rows_exact_ok(X, w, i, j, xn, state), (i, j, xn)
                checked += 1
                failed += not ok
            upper += int((ib[2, 1:] == -3).sum())
    assert checked > 1000 and 0.1 * checked < failed < 0.9 * checked
    assert upper > 0  # some rows were settled by _row_upper


def test_row_upper_bounds_every_slot():
    """_row_upper is at least the value _row_after computes for every destination slot
    (the slot itself included) where it gives a bound, and gives none (inf) for a weight
    <= 0, a slot that would be emptied, or a row with a negative slot (signed weights)."""
    _, X0, X, w, state = _setup(5)
    ka = state.kernel_args()
    H0, H, hs, Ssum = state.H0, state.H, state.hs, state.Ssum
    n_bounded = n_neg = 0
    for row in range(H.shape[0]):
        n_slots = int(hs[3, row]) + 2
        neg = (H[row, :n_slots] < 0).any()
        n_neg += int(neg)
        for wt in (0.7, 1.9, -0.5):
            for a in range(n_slots):
                up = K._row_upper(wt, a, row, ka)
                if wt <= 0 or not H[row, a] - wt > 0 or neg:
                    assert up == np.inf
                    continue
                assert np.isfinite(up)
                n_bounded += 1
                for b in range(n_slots):
                    assert K._row_after(H0, H, hs, Ssum, row, a, b, wt)[0] <= up
    assert n_bounded > 50 and n_neg > 0
