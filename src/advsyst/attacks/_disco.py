"""Distance correlation (DisCo) as CONSERVAttack's dependence constraint.

The paper's DisCo variant recomputes the distance-correlation matrix for every candidate
move, O(d²·m²) each.  Here the matrix lives on a fixed, seeded subsample of m constraint
events and is updated exactly, O(m·d) per candidate.

Notation for the subsample (m points, d features), all V-statistics:

* ``a_j[p, q] = |x_pj − x_qj|``, the raw distances of feature j (never stored: row p is
  rebuilt in O(m·d) when needed);
* ``r[p, j] = Σ_q a_j[p, q]`` (row sums), ``tot[j] = Σ_p r[p, j]``;
* ``S1[j, k] = Σ_pq a_j[p, q]·a_k[p, q]`` and ``P[j, k] = Σ_p r[p, j]·r[p, k]``.

Then ``dCov²_jk = S1_jk/m² − 2·P_jk/m³ + tot_j·tot_k/m⁴`` and
``dCor_jk = sqrt(dCov²_jk / sqrt(dCov²_jj·dCov²_kk))`` (0 where a variance is 0), equal to
:func:`advsyst.stats.distance_correlation_matrix` on the same points.

Moving point p of feature j to u changes row and column p of ``a_j`` only.  With
``Δ_q = |u − x_qj| − a_j[p, q]`` (Δ_p = 0), ``D = Σ Δ_q``, ``E = Σ Δ_q²``,
``g_k = Σ_q Δ_q·a_k[p, q]`` and ``h_k = Σ_q Δ_q·r[q, k]``:

* ``r[:, j] += Δ``, ``r[p, j] += D``, ``tot_j += 2D``;
* ``S1_jk += 2·g_k`` (k ≠ j), ``S1_jj += 2·(2·g_j + E)``;
* ``P_jk += h_k + D·r[p, k]`` (k ≠ j), ``P_jj += 2·(h_j + D·r[p, j]) + E + D²``;

every other entry is unchanged, so a candidate costs one pass over the m points and d
features, and only row/column j of the dCor matrix moves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advsyst.attacks import _kernels as K
from advsyst.attacks._jit import call, njit
from advsyst.errors import InputError
from advsyst.stats.dcor import distance_correlation_matrix

__all__ = ["DiscoTracker", "disco_pass", "disco_iteration", "dcor_dfn"]


# --------------------------------------------------------------------------- numba core
@njit(cache=True)
def _dist_row(xs, p, Ap):
    """Ap[q, k] = a_k[p, q] = |x_pk − x_qk|."""
    m, d = xs.shape
    for q in range(m):
        for k in range(d):
            Ap[q, k] = abs(xs[p, k] - xs[q, k])


@njit(cache=True)
def _delta_sums(xs, r, Ap, p, j, u, g, h):
    """Fill g, h for moving x_pj to u; return (D, E, const) where const says that every
    other point sits at u (feature j becomes constant: its sums are exactly zero)."""
    m, d = xs.shape
    for k in range(d):
        g[k] = 0.0
        h[k] = 0.0
    D = 0.0
    E = 0.0
    const = True
    for q in range(m):
        if q == p:
            continue
        aq = abs(u - xs[q, j])
        if aq != 0.0:
            const = False
        dq = aq - Ap[q, j]
        if dq == 0.0:
            continue
        D += dq
        E += dq * dq
        for k in range(d):
            g[k] += dq * Ap[q, k]
            h[k] += dq * r[q, k]
    return D, E, const


@njit(cache=True, inline="always")
def _dcor(c2, vj, vk):
    if vj <= 0.0 or vk <= 0.0:
        return 0.0
    den = np.sqrt(vj * vk)
    if den <= 0.0:
        return 0.0
    return np.sqrt(max(c2, 0.0) / den)


@njit(cache=True)
def _new_row(S1, P, tot, V, r, p, j, D, E, const, g, h, Rrow):
    """dCor row j after the move described by (D, E, g, h) into Rrow; returns the new
    dCov²_jj (and the new S1_jj, P_jj, tot_j for :func:`_move`)."""
    m = r.shape[0]
    d = S1.shape[0]
    if const:  # exact zeros, as the brute force has them (no rounding residue)
        for k in range(d):
            Rrow[k] = 0.0
        Rrow[j] = 1.0
        return 0.0, 0.0, 0.0, 0.0
    m2 = float(m) * m
    m3 = m2 * m
    m4 = m3 * m
    totj = tot[j] + 2.0 * D
    s1jj = S1[j, j] + 2.0 * (2.0 * g[j] + E)
    pjj = P[j, j] + 2.0 * (h[j] + D * r[p, j]) + E + D * D
    vj = s1jj / m2 - 2.0 * pjj / m3 + totj * totj / m4
    for k in range(d):
        if k == j:
            Rrow[k] = 1.0
            continue
        c2 = (S1[j, k] + 2.0 * g[k]) / m2 - 2.0 * (P[j, k] + h[k] + D * r[p, k]) / m3
        c2 += totj * tot[k] / m4
        Rrow[k] = _dcor(c2, vj, V[k])
    return vj, s1jj, pjj, totj


@njit(cache=True)
def _row_change(Rcur, Rref, valid, j, Rrow):
    """Squared distance to Rref of row and column j (k ≠ j, valid k) with the new row
    Rrow and with the current one: (new, old)."""
    new = 0.0
    old = 0.0
    for k in range(Rrow.shape[0]):
        if k == j or not valid[k]:
            continue
        e = Rrow[k] - Rref[j, k]
        f = Rrow[k] - Rref[k, j]
        new += e * e + f * f
        e = Rcur[j, k] - Rref[j, k]
        f = Rcur[j, k] - Rref[k, j]
        old += e * e + f * f
    return new, old


@njit(cache=True)
def _move(dstats, p, j, u, scratch):
    """x_pj = u with the exact O(m·d) update of ``dstats`` (:meth:`DiscoTracker.arrays`);
    ``scratch = (Ap, g, h, Rrow)``, Ap must hold row p of the distances and is refreshed
    for column j.  F2[0] = ‖R − R0‖²_F over valid pairs."""
    xs, r, tot, S1, P, V, Rcur, R0, valid, F2 = dstats
    Ap, g, h, Rrow = scratch
    m, d = xs.shape
    D, E, const = _delta_sums(xs, r, Ap, p, j, u, g, h)
    vj, s1jj, pjj, totj = _new_row(S1, P, tot, V, r, p, j, D, E, const, g, h, Rrow)
    if valid[j]:
        new, old = _row_change(Rcur, R0, valid, j, Rrow)
        F2[0] += new - old
        if F2[0] < 0.0:
            F2[0] = 0.0
    for k in range(d):
        if k == j:
            continue
        if const:
            S1[j, k] = 0.0
            P[j, k] = 0.0
        else:
            S1[j, k] += 2.0 * g[k]
            P[j, k] += h[k] + D * r[p, k]
        S1[k, j] = S1[j, k]
        P[k, j] = P[j, k]
        Rcur[j, k] = Rrow[k]
        Rcur[k, j] = Rrow[k]
    S1[j, j] = s1jj
    P[j, j] = pjj
    tot[j] = totj
    V[j] = vj
    if const:
        for q in range(m):
            r[q, j] = 0.0
    else:
        for q in range(m):
            if q != p:
                r[q, j] += abs(u - xs[q, j]) - Ap[q, j]
        r[p, j] += D
    xs[p, j] = u
    for q in range(m):
        Ap[q, j] = abs(u - xs[q, j])


@njit(cache=True)
def _candidates_f2(xs, r, tot, S1, P, V, Rcur, Rref, valid, base, p, j, values):
    """‖R(u) − Rref‖²_F (valid pairs) for every u in values; base = the current value."""
    m, d = xs.shape
    Ap = np.empty((m, d))
    g = np.empty(d)
    h = np.empty(d)
    Rrow = np.empty(d)
    _dist_row(xs, p, Ap)
    out = np.empty(values.shape[0])
    for c in range(values.shape[0]):
        if not valid[j]:
            out[c] = base
            continue
        D, E, const = _delta_sums(xs, r, Ap, p, j, values[c], g, h)
        _new_row(S1, P, tot, V, r, p, j, D, E, const, g, h, Rrow)
        new, old = _row_change(Rcur, Rref, valid, j, Rrow)
        v = base + new - old
        out[c] = v if v > 0.0 else 0.0
    return out


@njit(cache=True)
def _score(x, w, j, s, ev, p, cand, stats, dstats, scratch, budget, allow_inadmissible):
    """Best move of feature j of subsample point p (event ev, values x): the candidates
    and the JSD term of :func:`advsyst.attacks._kernels.score_feature`, the dCor term
    ‖R(u) − Rref‖_F (over ‖R0‖_F under the cumulative budget, where Rref = R0; under
    ``per_change`` Rref is the current matrix).  ``stats``, ``cand`` and ``budget`` as for
    the Pearson kernels (``budget`` with the tracker's ‖R0‖_F), ``dstats`` the tracker's
    arrays, ``scratch = (Ap, g, h, Rrow)`` with Ap holding row p of the distances.  Returns
    (delta, score, status) like ``score_feature``."""
    xs, r, tot, S1, P, V, Rcur, R0, valid, F2 = dstats
    Ap, g, h, Rrow = scratch
    mode, max_jsd, max_frob, norm0, alpha, beta = budget
    cum = mode == K.MODE_CUMULATIVE
    Rref = R0 if cum else Rcur
    base = F2[0] if cum else 0.0
    st = K._step(cand, ev, j)
    xj = x[j]
    if s == 0.0:
        return 0.0, 0.0, 0
    dist = K._reach(cand, ev, j, xj, s)
    if dist <= 0.0:
        return 0.0, 0.0, 0
    d = x.shape[0]
    corr_j = valid[j]
    nrow = stats[0].shape[0] // d
    a_r = np.empty(nrow, dtype=np.int64)
    last_b = np.empty(nrow, dtype=np.int64)
    S_r = np.empty(nrow)
    K._jsd_init(xj, j, d, stats, a_r, last_b)
    max_jsd2 = max_jsd * max_jsd
    maxF2 = (max_frob * norm0) ** 2 if cum else max_frob * max_frob

    best_d = 0.0
    best_sc = np.inf
    found = 0
    any_d = 0.0
    any_sc = np.inf
    n_c = K._n_candidates(cand, j, xj, s, st, dist)
    for c_i in range(n_c):
        delta = K._delta(c_i, cand, ev, j, xj, s, st, dist)
        if np.isnan(delta):
            break
        if delta == 0.0:  # min_change = 0: the zero move is no candidate
            continue
        xn = xj + delta
        jsd2, jsd_ok = K._jsd_candidate(xn, w, j, d, stats, a_r, last_b, S_r, max_jsd2)
        jsd = np.sqrt(jsd2)
        # the dCor term is >= 0: skip the O(m·d) part when it cannot change the answer
        if not allow_inadmissible and (not jsd_ok or alpha * jsd >= best_sc):
            continue
        F2n = base
        if corr_j:
            D, E, const = _delta_sums(xs, r, Ap, p, j, xn, g, h)
            _new_row(S1, P, tot, V, r, p, j, D, E, const, g, h, Rrow)
            new, old = _row_change(Rcur, Rref, valid, j, Rrow)
            F2n = base + new - old
        if F2n < 0.0:
            F2n = 0.0
        corr_term = np.sqrt(F2n) / norm0 if cum else np.sqrt(F2n)
        ok = jsd_ok and F2n <= maxF2
        sc = alpha * jsd + beta * corr_term
        if ok and sc < best_sc:
            best_sc = sc
            best_d = delta
            found = 1
        if sc < any_sc:
            any_sc = sc
            any_d = delta
    if found:
        return best_d, best_sc, 1
    if allow_inadmissible and any_sc < np.inf:
        return any_d, any_sc, 2
    return 0.0, 0.0, 0


@njit(cache=True)
def _pass_kernel(
    X, wts, events, pos, sign, movable, cand, stats, dstats, budget, allow_inadmissible
):
    """Sequential pass over subsample events (as ``exact_pass``): each feature is scored
    against the state left by every earlier move and applied at once; a move that no
    longer qualifies when applied (rounding at the very edge) is undone.  Cumulative: the
    data set stays within the budget; ``per_change``: the moved feature's JSD and the
    Frobenius change this move makes to the dCor matrix stay within the limits.  ``stats``
    is the Pearson state (histograms kept exact), ``dstats`` the tracker's arrays,
    ``budget`` carries the tracker's ‖R0‖_F."""
    xs, r, tot, S1, P, V, Rcur, R0, valid, F2 = dstats
    mode, max_jsd, max_frob, norm0, _, _ = budget
    n_ev = events.shape[0]
    m, d = xs.shape
    scratch = (np.empty((m, d)), np.empty(d), np.empty(d), np.empty(d))
    Ap = scratch[0]
    rold = np.empty(d)
    max_jsd2 = max_jsd * max_jsd
    maxF2 = (max_frob * norm0) ** 2
    cum = mode == K.MODE_CUMULATIVE
    n_moved = 0
    undone = 0
    for t in range(n_ev):
        i = events[t]
        p = pos[i]
        x = X[i]
        w = wts[i]
        _dist_row(xs, p, Ap)
        ev_moved = False
        for j in range(d):
            if not movable[i, j]:
                continue
            # per_change: Rref is Rcur, the matrix just before this move (absolute change)
            dl, sc, stt = _score(
                x, w, j, sign[t, j], i, p, cand, stats, dstats, scratch, budget, allow_inadmissible
            )
            if stt == 0:
                continue
            old = x[j]
            for k in range(d):
                rold[k] = Rcur[j, k]
            K.apply_move(x, w, j, x[j] + dl, stats)
            _move(dstats, p, j, x[j], scratch)
            bad = False
            if stt == 1:  # status 2 (use_no_change=False) is beyond the limits on purpose
                if cum:
                    bad = K.jsd_over(stats, j, d, max_jsd2) or F2[0] > maxF2
                else:
                    ch = 0.0
                    if valid[j]:
                        for k in range(d):
                            if k != j and valid[k]:
                                e = Rcur[j, k] - rold[k]
                                ch += 2.0 * e * e
                    bad = K.jsd_over(stats, j, d, max_jsd2) or ch > max_frob * max_frob
            if bad:
                K.apply_move(x, w, j, old, stats)
                x[j] = old
                _move(dstats, p, j, old, scratch)
                undone += 1
                continue
            ev_moved = True
        if ev_moved:
            n_moved += 1
    return n_moved, undone


# --------------------------------------------------------------------------- tracker
def _full_sums(xs: np.ndarray, block: int = 1 << 22) -> tuple[np.ndarray, ...]:
    """Row sums, totals, S1 and P from scratch, O(m²·d²) in blocks of O(block) memory."""
    m, d = xs.shape
    r = np.empty((m, d))
    S1 = np.zeros((d, d))
    step = max(1, block // max(1, m * d))
    for p0 in range(0, m, step):
        A = np.abs(xs[p0 : p0 + step, None, :] - xs[None, :, :])  # (b, m, d)
        r[p0 : p0 + step] = A.sum(axis=1)
        A2 = A.reshape(-1, d)
        S1 += A2.T @ A2
    tot = r.sum(axis=0)
    P = r.T @ r
    return r, tot, S1, P


def _dcor_from_sums(m: int, tot, S1, P) -> tuple[np.ndarray, np.ndarray]:
    C2 = S1 / m**2 - 2.0 * P / m**3 + np.outer(tot, tot) / float(m) ** 4
    V = np.diag(C2).copy()
    d = len(V)
    R = np.eye(d)
    for j in range(d):
        for k in range(j + 1, d):
            R[j, k] = R[k, j] = _dcor(C2[j, k], V[j], V[k])
    return V, R


class DiscoTracker:
    """Distance-correlation matrix of a fixed subsample with exact O(m·d) updates.

    Parameters
    ----------
    xs
        Subsample values (m, d); copied.
    valid
        Features taking part in the Frobenius distance (pairs of valid features); features
        with zero distance variance on the subsample are removed from it.
    index
        Event index of each subsample row in the caller's data (for :meth:`positions`).

    The reference R0 is the matrix at construction; :meth:`dfn` is ‖R − R0‖_F/‖R0‖_F over
    valid pairs (diagonal included in ‖R0‖_F, as for the Pearson ΔFN).
    """

    def __init__(self, xs: np.ndarray, valid: np.ndarray | None = None, index=None):
        xs = np.ascontiguousarray(xs, dtype=np.float64)
        if xs.ndim != 2 or xs.shape[0] < 2:
            raise InputError(f"distance correlation needs an (m>=2, d) sample, got {xs.shape}")
        if not np.isfinite(xs).all():
            raise InputError("distance correlation sample contains NaN/inf")
        self.m, self.d = xs.shape
        self.index = np.arange(self.m) if index is None else np.asarray(index, dtype=np.int64)
        self._set(xs)
        v = np.ones(self.d, bool) if valid is None else np.asarray(valid, bool).copy()
        self.valid = np.ascontiguousarray(v & (self.V > 0))
        mask = np.outer(self.valid, self.valid)
        self.R0 = np.ascontiguousarray(np.where(mask, self.R, 0.0))
        self.norm0 = float(np.linalg.norm(self.R0)) or 1.0
        self.F2 = np.zeros(1)

    @classmethod
    def from_data(
        cls,
        X_cons: np.ndarray,
        seed: int = 0,
        m: int | None = 300,
        valid: np.ndarray | None = None,
        index: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> DiscoTracker:
        """Tracker on ``m`` rows of ``X_cons`` drawn exactly as
        ``distance_correlation_matrix(X_cons, subsample=m, seed=seed, weights=weights)``
        draws them (all rows if ``m`` is None or ≥ n).  ``index`` maps rows of ``X_cons``
        to event indices of the caller's data."""
        X_cons = np.asarray(X_cons, dtype=np.float64)
        n = len(X_cons)
        if m is not None and m < 2:
            raise InputError(f"disco_subsample must be at least 2, got {m}")
        if m is not None and m < n:
            rng = np.random.default_rng(seed)
            p = None
            if weights is not None and np.ptp(weights) > 0:
                wv = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
                p = wv / wv.sum()
            sel = rng.choice(n, size=m, replace=False, p=p)
        else:
            sel = np.arange(n)
        idx = sel if index is None else np.asarray(index)[sel]
        return cls(X_cons[sel], valid=valid, index=idx)

    def _set(self, xs: np.ndarray) -> None:
        self.xs = np.ascontiguousarray(xs, dtype=np.float64).copy()
        r, tot, S1, P = _full_sums(self.xs)
        self.r, self.tot, self.S1, self.P = r, tot, S1, P
        self.V, self.R = _dcor_from_sums(self.m, tot, S1, P)

    # -- queries ------------------------------------------------------------------
    def matrix(self) -> np.ndarray:
        """The current distance-correlation matrix (d, d), all features."""
        return self.R.copy()

    def dfn(self) -> float:
        """‖R − R0‖_F / ‖R0‖_F over valid pairs (incrementally tracked)."""
        return float(np.sqrt(self.F2[0]) / self.norm0)

    def positions(self, n: int) -> np.ndarray:
        """(n,) subsample row of every event index, −1 outside the subsample."""
        pos = np.full(n, -1, dtype=np.int64)
        pos[self.index] = np.arange(self.m)
        return pos

    def frobenius_sq(self, R_ref: np.ndarray) -> float:
        mask = np.outer(self.valid, self.valid)
        return float((((self.R - R_ref) ** 2) * mask).sum())

    def candidate_frobenius_sq(
        self, p: int, j: int, values: np.ndarray, R_ref: np.ndarray
    ) -> np.ndarray:
        """‖R(u) − R_ref‖²_F over valid pairs for each u in ``values``, where R(u) is the
        matrix after moving point ``p`` of feature ``j`` to u.  O(m·d) per value."""
        values = np.ascontiguousarray(np.atleast_1d(values), dtype=np.float64)
        R_ref = np.ascontiguousarray(R_ref, dtype=np.float64)
        return call(
            _candidates_f2,
            self.xs,
            self.r,
            self.tot,
            self.S1,
            self.P,
            self.V,
            self.R,
            R_ref,
            self.valid,
            self.frobenius_sq(R_ref),
            int(p),
            int(j),
            values,
        )

    # -- updates ------------------------------------------------------------------
    def move(self, p: int, j: int, u: float) -> None:
        """Set point ``p`` of feature ``j`` to ``u`` (exact O(m·d) update)."""
        Ap = np.empty((self.m, self.d))
        call(_dist_row, self.xs, int(p), Ap)
        scratch = (Ap, np.empty(self.d), np.empty(self.d), np.empty(self.d))
        call(_move, self.arrays(), int(p), int(j), float(u), scratch)

    def arrays(self) -> tuple:
        """The tracker's state for the kernels (``dstats``; arrays shared, updated in
        place): (xs, r, tot, S1, P, V, R, R0, valid, F2)."""
        return (
            self.xs,
            self.r,
            self.tot,
            self.S1,
            self.P,
            self.V,
            self.R,
            self.R0,
            self.valid,
            self.F2,
        )

    def resync(self, X: np.ndarray | None = None) -> None:
        """Recompute every sum from the points (``X[index]`` if given), dropping drift."""
        xs = self.xs if X is None else np.asarray(X)[self.index]
        self._set(xs)
        self.F2[0] = self.frobenius_sq(self.R0)


def dcor_dfn(X0_sub: np.ndarray, X_sub: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Brute-force ‖R − R0‖_F / ‖R0‖_F of the distance-correlation matrices of two versions
    of the same points (valid pairs only), with :func:`distance_correlation_matrix`."""
    R0 = distance_correlation_matrix(X0_sub, subsample=None)
    R = distance_correlation_matrix(X_sub, subsample=None)
    d = R0.shape[0]
    v = np.ones(d, bool) if valid is None else np.asarray(valid, bool)
    mask = np.outer(v, v)
    n0 = float(np.linalg.norm(R0 * mask)) or 1.0
    return float(np.linalg.norm((R - R0) * mask) / n0)


# --------------------------------------------------------------------------- attack path
def _mode(cfg) -> tuple[int, bool]:
    mode = K.MODE_CUMULATIVE if cfg.budget == "cumulative" else K.MODE_PER_CHANGE
    return mode, (not cfg.use_no_change) and mode == K.MODE_PER_CHANGE


def _kernel_state(state: Any, off: bool) -> tuple:
    """``state.kernel_args()`` with the Pearson part switched off (``valid`` all False,
    ``F2`` a zero scratch array) when ``off``."""
    args = state.kernel_args()
    if not off:
        return args
    d = len(state.valid)
    return (*args[:12], np.zeros(d, dtype=np.bool_), np.zeros(1), args[14])


def disco_pass(
    X: np.ndarray,
    w: np.ndarray,
    events: np.ndarray,
    sign: np.ndarray,
    movable: np.ndarray,
    cand: tuple,
    budget: tuple,
    cfg: Any,
    state: Any,
    tracker: DiscoTracker,
    pos: np.ndarray | None = None,
) -> tuple[int, int]:
    """Attack the subsample events ``events`` (rows ``sign``) sequentially under
    ``alpha·JSD + beta·ΔdCor``; updates ``X``, the kernel state (histograms exactly) and
    the tracker in place.  ``cand`` and ``budget`` are the tuples of
    :mod:`advsyst.attacks._kernels` (the tracker's ‖R0‖_F replaces ``budget``'s norm).
    Returns (events moved, moves undone)."""
    events = np.ascontiguousarray(events, dtype=np.int64)
    if len(events) == 0:
        return 0, 0
    if pos is None:
        pos = tracker.positions(len(X))
    if (pos[events] < 0).any():
        raise InputError("disco_pass got events outside the distance-correlation subsample")
    _, allow = _mode(cfg)
    return call(
        _pass_kernel,
        X,
        w,
        events,
        pos,
        np.ascontiguousarray(sign, dtype=np.float64),
        movable,
        cand,
        _kernel_state(state, off=True),
        tracker.arrays(),
        (*budget[:3], tracker.norm0, *budget[4:]),
        allow,
    )


def disco_iteration(
    X: np.ndarray,
    w: np.ndarray,
    cm: np.ndarray,
    events: np.ndarray,
    sign: np.ndarray,
    movable: np.ndarray,
    cand: tuple,
    budget: tuple,
    cfg: Any,
    state: Any,
    tracker: DiscoTracker,
) -> int:
    """One CONSERVAttack iteration with ``use_disco``: events outside the subsample go
    through the usual kernels with the Pearson term switched off (they cannot change the
    dCor matrix, so only the JSD term and limit apply; with ``fast`` every move is
    re-checked against the current state under both budgets), then the subsample events
    through :func:`disco_pass`.  Returns the number of undone moves."""
    pos = tracker.positions(len(X))
    sub = pos[events] >= 0
    _, allow = _mode(cfg)
    undone = 0
    rest = np.ascontiguousarray(events[~sub])
    if len(rest):
        undone += K.kernel_pass(
            X,
            w,
            cm,
            rest,
            np.ascontiguousarray(sign[~sub]),
            movable,
            cand,
            _kernel_state(state, off=True),
            budget,
            allow,
            exact=cfg.method == "exact",
            block_size=cfg.block_size,
        )
    _, u = disco_pass(X, w, events[sub], sign[sub], movable, cand, budget, cfg, state, tracker, pos)
    return undone + int(u)
