"""Numba kernels of CONSERVAttack: candidate scoring and exact state updates.

The kernels take their many inputs as three tuples (numba passes them natively; each kernel
unpacks what it reads at the top):

* ``stats = (edges, lo_e, inv_w, H0, H, T, Ssum, mean, cov, sig, Ccur, C0, valid, F2, W)``,
  the tracked state of the constraint set (``_State.kernel_args()``); the arrays are
  mutated in place by :func:`apply_move`, the scalars ``T`` and ``W`` never change;
* ``cand = (lo, hi, mc, st, ncand, maxc, is_int, rseed, it, randomize)``, candidate
  generation: per-feature bounds, minimal change, grid step and integer flag, the number
  of random draws (0 = grid), the grid cap, the seed, the iteration and the step
  randomisation;
* ``budget = (mode, max_jsd, max_frob, norm0, alpha, beta)``: the limits and the score.

State (all float64 unless said otherwise):

* ``edges`` (d, K+1) bin edges, ``lo_e = edges[:, 0]``, ``inv_w`` = K / (edges[:, K] − lo_e).
* ``H0, H`` (d, S): clean and current weighted counts per histogram slot; ``T`` their total.
* ``Ssum`` (d,): Σ_k f(p_k, q_k) per feature, JSD_j = sqrt(Ssum_j).
* ``mean`` (d,), ``cov`` (d, d), ``sig`` (d,) = sqrt(diag(cov)); ``W`` = Σ w (constraint set).
* ``Ccur`` (d, d): current correlation; ``C0`` clean correlation; ``F2[0]`` = ‖Ccur − C0‖²_F.
* ``valid`` (d,) bool: features taking part in the correlation (zero-variance ones do not).

Every candidate costs O(1) after an O(d) preparation per (event, feature).  These kernels
are the only incremental implementation of the statistics in advsyst; the batch functions
:func:`advsyst.stats.jsd_per_feature`, :func:`advsyst.stats.pearson_correlation` and
:func:`advsyst.stats.delta_fn` recompute everything from scratch and are the independent
reference the tests compare against.

Closed forms
------------
*JSD.*  With clean and current weighted counts ``p_k = H0[j, k]/T`` and ``q_k = H[j, k]/T``
and ``f(p, q) = ½[p log2(2p/(p+q)) + q log2(2q/(p+q))]`` (0·log 0 = 0), the running sum is
``Ssum_j = Σ_k f(p_k, q_k)`` and ``JSD_j = sqrt(Ssum_j)``.  Moving a value of weight ``w``
from slot ``a`` to slot ``b`` changes two terms only::

    ΔS = f(p_a, q_a − w/T) − f(p_a, q_a) + f(p_b, q_b + w/T) − f(p_b, q_b)

*Moments.*  With ``W = Σ w``, ``μ = Σ w x / W`` and ``cov = Σ w (x − μ)(x − μ)ᵀ / W`` (no
Bessel correction), moving entry ``x_ij`` (weight ``w``, ``r = w/W``) by ``δ`` changes row
and column ``j`` only::

    cov_jk(δ) = cov_jk + δ r (x_ik − μ_k)                   (k ≠ j)
    var_j(δ)  = var_j + 2 δ r (x_ij − μ_j) + δ² r (1 − r)
    μ_j(δ)    = μ_j + δ r

*Correlation distance.*  With ``A_k = cov_jk/σ_k``, ``B_k = r (x_ik − μ_k)/σ_k`` and the
reference row ``c_k = Cref_jk`` (sums over valid ``k ≠ j``), ``ρ_jk(δ) = (A_k + δ B_k) /
sqrt(var_j(δ))`` and::

    rs(δ) = Σ_k (ρ_jk(δ) − c_k)²
          = (ΣA² + 2δ ΣAB + δ² ΣB²)/var_j(δ) − 2(ΣcA + δ ΣcB)/sqrt(var_j(δ)) + Σc²

so after the O(d) preparation of the five sums every candidate ``δ`` costs O(1).  The full
squared distance is ``‖C(δ) − Cref‖²_F = R + 2·rs(δ)`` where ``R`` is the part without row
and column ``j`` (``F2 − 2·Σ_k (Ccur_jk − Cref_jk)²``).  Under the cumulative budget
``Cref = C0`` and the limit is ``‖C − C0‖_F ≤ max_frob·‖C0‖_F``; under ``per_change``
``Cref = Ccur`` (``R = 0``) and the limit is ``‖C_after − C_before‖_F = sqrt(2·rs) ≤
max_frob`` for the single move.

Budget semantics
----------------
*cumulative*: every applied move leaves the whole data set within ``JSD_j ≤ max_jsd`` for
every feature and ``‖C − C0‖_F/‖C0‖_F ≤ max_frob``.  *per_change*: every applied move,
judged against the state immediately before it (all earlier moves applied), keeps the
moved feature's JSD (to its clean histogram) ≤ ``max_jsd`` and changes the correlation
matrix by ``‖C_after − C_before‖_F ≤ max_frob``.  Both methods enforce exactly this:
``exact`` scores each feature against the current state and applies it at once;
``fast`` scores a block against one snapshot and re-checks every move against the
current state when it is applied (undo and re-score if it no longer qualifies).  Moves
that ``use_no_change=False`` applies on purpose beyond the per-change limits (status 2)
are not re-checked.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from advsyst.attacks._jit import call, njit

MODE_CUMULATIVE = 0
MODE_PER_CHANGE = 1
_LOG2E = 1.4426950408889634


@njit(cache=True, inline="always")
def _f(p, q):
    # ½[p log2(2p/(p+q)) + q log2(2q/(p+q))], 0 log 0 = 0
    m = p + q
    out = 0.0
    if p > 0.0:
        out += p * np.log(2.0 * p / m)
    if q > 0.0:
        out += q * np.log(2.0 * q / m)
    return 0.5 * out * _LOG2E


@njit(cache=True, inline="always")
def _slot(x, edges_j, lo, inv_w, K):
    # 0 = underflow, 1..K inner bins, K+1 overflow; exact against the stored edges
    if x < edges_j[0]:
        return 0
    if x >= edges_j[K]:
        return K if x == edges_j[K] else K + 1
    b = int((x - lo) * inv_w) + 1
    if b < 1:
        b = 1
    if b > K:
        b = K
    while b > 1 and x < edges_j[b - 1]:
        b -= 1
    while b < K and x >= edges_j[b]:
        b += 1
    return b


@njit(cache=True, inline="always")
def _mix(z, v):
    z = z ^ (
        np.uint64(v) + np.uint64(0x9E3779B97F4A7C15) + (z << np.uint64(6)) + (z >> np.uint64(2))
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _uniform(seed, a, b, c, d):
    # counter-based splitmix64 hash -> uniform in [0, 1); deterministic for any threading
    z = _mix(np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15), a)
    z = _mix(_mix(_mix(z, b), c), d)
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def _step(cand, ev, j):
    """Grid step of feature ``j`` for event ``ev``: ``st[j]``, with ``randomize`` scaled by a
    uniform factor in [0.5, 1.5) drawn per (seed, iteration, event, feature)."""
    _, _, _, st, _, _, _, rseed, it, randomize = cand
    if randomize:
        return st[j] * (0.5 + _uniform(rseed, it, ev, j, 1 << 30))
    return st[j]


@njit(cache=True, inline="always")
def _n_candidates(is_int, ncand, mc, st, dist, maxc):
    """How many candidates a feature with ``dist`` to its bound gets (0: none)."""
    if is_int:
        n_c = int(np.floor(dist + 1e-12))
    elif ncand > 0:
        return ncand
    else:
        if mc > dist:
            return 0
        n_c = int((dist - mc) / st) + 1 if st > 0 else 1
    return n_c if n_c < maxc else maxc


@njit(cache=True, inline="always")
def _magnitude(c_i, is_int, ncand, mc, st, dist, rseed, it, ev, j):
    """|delta| of candidate ``c_i``: integer steps, seeded uniform draws in the reachable
    range, or the grid ``min_change + c_i * step``."""
    if is_int:
        return float(c_i + 1)
    if ncand > 0:
        lo_m = mc if mc < dist else 0.0
        return lo_m + (dist - lo_m) * (1.0 - _uniform(rseed, it, ev, j, c_i))
    return mc + c_i * st


@njit(cache=True)
def score_feature(x, w, j, s, ev, cand, stats, budget, constrained, allow_inadmissible):
    """Best move of feature ``j`` of one event (``ev``: its index, seeds the draws).

    Under the cumulative budget the correlation term is measured against ``C0``, under
    ``per_change`` against the current ``Ccur``.  Returns (delta, score, status): status 1 =
    admissible move found, 2 = inadmissible move returned (``allow_inadmissible``), 0 = no
    move.
    """
    lo, hi, mc_a, _, ncand, maxc, is_int_a, rseed, it, _ = cand
    edges, lo_e, inv_w, H0, H, T, Ssum, mean, cov, sig, Ccur, C0, valid, F2, W = stats
    mode, max_jsd, max_frob, norm0, alpha, beta = budget
    lo_j = lo[j]
    hi_j = hi[j]
    mc = mc_a[j]
    st = _step(cand, ev, j)
    is_int = is_int_a[j]
    Cref = C0 if mode == MODE_CUMULATIVE else Ccur
    xj = x[j]
    if s == 0.0:
        return 0.0, 0.0, 0
    # reachable distance in the gradient-sign direction
    dist = hi_j - xj if s > 0 else xj - lo_j
    if dist <= 0.0:
        return 0.0, 0.0, 0
    if not constrained:
        # moves of events outside the constraint set leave the monitored statistics alone:
        # take the smallest candidate (minimal perturbation)
        d0 = 1.0 if is_int else mc
        if d0 <= 0.0:
            d0 = st
        if d0 > dist:
            return 0.0, 0.0, 0
        return s * d0, 0.0, 1

    d = x.shape[0]
    K = edges.shape[1] - 1
    r = w / W
    # --- O(d) preparation of the five sums (row j of the correlation) ---
    corr_j = valid[j] and sig[j] > 0.0
    sAA = 0.0
    sAB = 0.0
    sBB = 0.0
    scA = 0.0
    scB = 0.0
    scc = 0.0
    rowsq = 0.0
    if corr_j:
        for k in range(d):
            if k == j or not valid[k]:
                continue
            sk = sig[k]
            A = cov[j, k] / sk
            B = r * (x[k] - mean[k]) / sk
            c = Cref[j, k]
            sAA += A * A
            sAB += A * B
            sBB += B * B
            scA += c * A
            scB += c * B
            scc += c * c
            e = Ccur[j, k] - Cref[j, k]
            rowsq += e * e
    R = F2[0] - 2.0 * rowsq
    varj = cov[j, j]
    dxj = xj - mean[j]
    # --- JSD pieces that do not depend on the candidate ---
    a = _slot(xj, edges[j], lo_e[j], inv_w[j], K)
    wT = w / T
    pa = H0[j, a] / T
    qa = H[j, a] / T
    dfa = _f(pa, qa - wT) - _f(pa, qa)
    Sj = Ssum[j]
    max_jsd2 = max_jsd * max_jsd
    maxF2 = (max_frob * norm0) ** 2 if mode == MODE_CUMULATIVE else 0.5 * max_frob * max_frob

    best_d = 0.0
    best_sc = np.inf
    found = 0
    any_d = 0.0
    any_sc = np.inf
    n_c = _n_candidates(is_int, ncand, mc, st, dist, maxc)
    last_b = -1
    jsd2 = 0.0
    jsd = 0.0
    skip_bad = not allow_inadmissible
    for c_i in range(n_c):
        mag = _magnitude(c_i, is_int, ncand, mc, st, dist, rseed, it, ev, j)
        if mag > dist:
            break
        if mag <= 0.0:  # min_change = 0: the zero move is no candidate
            continue
        delta = s * mag
        xn = xj + delta
        b = _slot(xn, edges[j], lo_e[j], inv_w[j], K)
        if b != last_b:  # the JSD part only changes when the candidate changes bin
            dS = 0.0
            if b != a:
                pb = H0[j, b] / T
                qb = H[j, b] / T
                dS = dfa + _f(pb, qb + wT) - _f(pb, qb)
            jsd2 = Sj + dS
            if jsd2 < 0.0:
                jsd2 = 0.0
            jsd = np.sqrt(jsd2)
            last_b = b
        if skip_bad and jsd2 > max_jsd2:  # inadmissible: the correlation term is not needed
            continue
        if corr_j:
            v = varj + 2.0 * delta * r * dxj + delta * delta * r * (1.0 - r)
            if v < 1e-300:
                v = 1e-300
            rs = (
                (sAA + 2.0 * delta * sAB + delta * delta * sBB) / v
                - 2.0 * (scA + delta * scB) / np.sqrt(v)
                + scc
            )
            if rs < 0.0:
                rs = 0.0
        else:
            rs = 0.0
        if mode == MODE_CUMULATIVE:
            F2n = R + 2.0 * rs
            if F2n < 0.0:
                F2n = 0.0
            corr_term = np.sqrt(F2n) / norm0
            ok = jsd2 <= max_jsd2 and F2n <= maxF2
        else:
            corr_term = np.sqrt(2.0 * rs)
            ok = jsd2 <= max_jsd2 and rs <= maxF2
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
def apply_move(x, w, j, xn, stats):
    """x[j] = xn and the exact O(d) update of every tracked statistic.

    Taking the new value (not a shift) makes an undo restore the old value and its
    histogram slot bit for bit.

    Returns the squared Frobenius norm of the change this move made to the correlation
    matrix (row and column j), the per-change quantity of ``budget="per_change"``.
    """
    edges, lo_e, inv_w, H0, H, T, Ssum, mean, cov, sig, Ccur, C0, valid, F2, W = stats
    d = x.shape[0]
    K = edges.shape[1] - 1
    xj = x[j]
    delta = xn - xj
    # histogram + running JS sum
    a = _slot(xj, edges[j], lo_e[j], inv_w[j], K)
    b = _slot(xn, edges[j], lo_e[j], inv_w[j], K)
    if a != b:
        pa = H0[j, a] / T
        pb = H0[j, b] / T
        qa = H[j, a] / T
        qb = H[j, b] / T
        Ssum[j] += _f(pa, qa - w / T) - _f(pa, qa) + _f(pb, qb + w / T) - _f(pb, qb)
        H[j, a] -= w
        H[j, b] += w
    # moments
    r = w / W
    old_rowsq = 0.0
    if valid[j]:
        for k in range(d):
            if k != j and valid[k]:
                e = Ccur[j, k] - C0[j, k]
                old_rowsq += e * e
    dvar = 2.0 * delta * r * (xj - mean[j]) + delta * delta * r * (1.0 - r)
    for k in range(d):
        if k != j:
            dk = delta * r * (x[k] - mean[k])
            cov[j, k] += dk
            cov[k, j] += dk
    cov[j, j] += dvar
    mean[j] += delta * r
    sig[j] = np.sqrt(cov[j, j]) if cov[j, j] > 0.0 else 0.0
    x[j] = xn
    dc2 = 0.0
    if valid[j]:
        new_rowsq = 0.0
        for k in range(d):
            if k != j and valid[k]:
                rho = cov[j, k] / (sig[j] * sig[k]) if sig[j] > 0.0 else 0.0
                c = rho - Ccur[j, k]
                dc2 += c * c
                Ccur[j, k] = rho
                Ccur[k, j] = rho
                e = rho - C0[j, k]
                new_rowsq += e * e
        F2[0] += 2.0 * (new_rowsq - old_rowsq)
        if F2[0] < 0.0:
            F2[0] = 0.0
    return 2.0 * dc2


@njit(cache=True, parallel=True)
def score_block(X, wts, cons, events, sign, movable, cand, stats, budget, allow_inadmissible):
    """Score every movable feature of every event in ``events`` against the current state."""
    m = events.shape[0]
    d = X.shape[1]
    deltas = np.zeros((m, d))
    status = np.zeros((m, d), dtype=np.int8)
    for t in prange(m):
        i = events[t]
        x = X[i]
        for j in range(d):
            if not movable[i, j]:
                continue
            dl, sc, stt = score_feature(
                x, wts[i], j, sign[t, j], i, cand, stats, budget, cons[i], allow_inadmissible
            )
            deltas[t, j] = dl
            status[t, j] = stt
    return deltas, status


@njit(cache=True, inline="always")
def _violates(mode, status, Sj, max_jsd2, F2, maxF2, dc2, max_frob):
    if status != 1:
        return False
    if Sj > max_jsd2:
        return True
    if mode == MODE_CUMULATIVE:
        return F2 > maxF2
    return dc2 > max_frob * max_frob


@njit(cache=True)
def apply_block(X, wts, cons, events, sign, deltas, status, cand, stats, budget, enforce):
    """Apply scored moves event by event with exact updates.

    With ``enforce`` a move that is no longer admissible against the current state - under
    the cumulative budget: the data set leaves the budget; under ``per_change``: the
    feature's JSD or this move's correlation change exceeds its limit - is undone at once
    and that feature is re-scored against the current state (the closed form is exact
    there, so the new choice is admissible or no move).  Moves applied on purpose beyond
    the per-change limits (status 2, ``use_no_change=False``) are kept.  Returns the
    number of moves that were undone.
    """
    edges, lo_e, inv_w, H0, H, T, Ssum, mean, cov, sig, Ccur, C0, valid, F2, W = stats
    mode, max_jsd, max_frob, norm0, alpha, beta = budget
    m = events.shape[0]
    d = X.shape[1]
    max_jsd2 = max_jsd * max_jsd
    maxF2 = (max_frob * norm0) ** 2
    undone = 0
    for t in range(m):
        i = events[t]
        for j in range(d):
            if status[t, j] == 0:
                continue
            dl = deltas[t, j]
            if not cons[i]:
                X[i, j] += dl
                continue
            old = X[i, j]
            dc2 = apply_move(X[i], wts[i], j, X[i, j] + dl, stats)
            if enforce and _violates(
                mode, status[t, j], Ssum[j], max_jsd2, F2[0], maxF2, dc2, max_frob
            ):
                apply_move(X[i], wts[i], j, old, stats)
                X[i, j] = old
                undone += 1
                dl2, sc2, stt2 = score_feature(
                    X[i], wts[i], j, sign[t, j], i, cand, stats, budget, True, False
                )
                status[t, j] = 0
                if stt2 == 1:
                    dc2 = apply_move(X[i], wts[i], j, X[i, j] + dl2, stats)
                    if _violates(mode, 1, Ssum[j], max_jsd2, F2[0], maxF2, dc2, max_frob):
                        apply_move(X[i], wts[i], j, old, stats)
                        X[i, j] = old
                        undone += 1
                    else:
                        deltas[t, j] = dl2
                        status[t, j] = 1
    return undone


@njit(cache=True)
def exact_pass(X, wts, cons, events, sign, movable, cand, stats, budget, allow_inadmissible):
    """The sequential oracle: events in order, features in index order; each feature is
    scored against the state left by every earlier move and applied at once (with the
    re-check of :func:`apply_block`), under both budgets."""
    m = events.shape[0]
    d = X.shape[1]
    moved = np.zeros(m, dtype=np.int8)
    undone = 0
    one = np.zeros(1, dtype=np.int64)
    dls = np.zeros((1, d))
    sts = np.zeros((1, d), dtype=np.int8)
    for t in range(m):
        i = events[t]
        one[0] = i
        sg = sign[t : t + 1]
        for j in range(d):
            if not movable[i, j]:
                continue
            dl, sc, stt = score_feature(
                X[i], wts[i], j, sign[t, j], i, cand, stats, budget, cons[i], allow_inadmissible
            )
            if stt == 0:
                continue
            dls[0, :] = 0.0
            sts[0, :] = 0
            dls[0, j] = dl
            sts[0, j] = stt
            undone += apply_block(X, wts, cons, one, sg, dls, sts, cand, stats, budget, True)
            if sts[0, j] != 0:
                moved[t] = 1
    return moved, undone


def kernel_pass(
    X,
    wts,
    cons,
    events,
    sign,
    movable,
    cand,
    stats,
    budget,
    allow_inadmissible,
    exact,
    block_size,
    enforce=True,
):
    """One pass over ``events`` (rows of ``sign``): :func:`exact_pass` if ``exact``, else
    blocks of ``block_size`` events scored by :func:`score_block` against one snapshot and
    applied by :func:`apply_block` (re-checking every move against the current state when
    ``enforce``).  Returns the number of undone moves."""
    if exact:
        _, undone = call(
            exact_pass, X, wts, cons, events, sign, movable, cand, stats, budget, allow_inadmissible
        )
        return int(undone)
    undone = 0
    for s in range(0, len(events), block_size):
        ev = events[s : s + block_size]
        sg = sign[s : s + block_size]
        deltas, status = call(
            score_block, X, wts, cons, ev, sg, movable, cand, stats, budget, allow_inadmissible
        )
        undone += int(
            call(apply_block, X, wts, cons, ev, sg, deltas, status, cand, stats, budget, enforce)
        )
    return undone
