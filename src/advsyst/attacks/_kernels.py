"""Numba kernels of CONSERVAttack: candidate scoring and exact state updates.

The kernels take their many inputs as three tuples (numba passes them natively; each kernel
unpacks what it reads at the top):

* ``stats = (edges, lo_e, inv_w, H0, H, hs, Ssum, mean, cov, sig, Ccur, C0, valid, F2, W)``,
  the tracked state of the constraint set (``_State.kernel_args()``); the arrays are
  mutated in place by :func:`apply_move`, the scalar ``W`` never changes;
* ``cand = (lo, hi, mc, st, ncand, maxc, kind, rseed, it, randomize, sup)``, candidate
  generation: bounds (``lo``/``hi`` of shape (1, d) per feature, or (n, d) per entry when
  uncertainty envelopes are set; indexed by event), minimal change, grid step, the kind
  of each feature (0 continuous, 1 integer steps, 2 discrete: moves only between the
  sorted observed values ``sup[j]``, NaN-padded), the number of random draws (0 = grid),
  the grid cap, the seed, the iteration and the step randomisation;
* ``budget = (mode, max_jsd, max_frob, norm0, alpha, beta)``: the limits and the score
  (the JSD limits themselves are per histogram row, ``hs[2]``).

Histograms (the JSD part).  Every feature j has ``R`` histogram rows ``row = r*d + j``
(``R = edges.shape[0] // d``): row ``j`` (r = 0) is the attack's own binning (the one the
score and the history use), the others are the extra binnings of the binning-robust budget
(other bin counts and offsets).  A candidate is admissible only if every row of its feature
stays within its limit.

* ``edges`` (R·d, Kmax+1) bin edges (row r has ``hs[3, row]`` inner bins, padded),
  ``lo_e = edges[:, 0]``, ``inv_w`` = K_row / (edges[row, K_row] − lo_e).
* ``H0, H`` (R·d, Kmax+2): clean and current weighted counts per slot (0 = underflow,
  K_row + 1 = overflow).  Weights are signed: a slot with negative net content counts as
  zero and each histogram is renormalised over the rest.
* ``hs`` (4, R·d): ``hs[0]`` = Σ_k max(H0, 0) (fixed), ``hs[1]`` = Σ_k max(H, 0) (tracked),
  ``hs[2]`` = the squared JSD limit of the row, ``hs[3]`` = its number of inner bins.
* ``Ssum`` (R·d,): Σ_k f(p_k, q_k) per row with p = max(H0, 0)/hs[0], q = max(H, 0)/hs[1];
  JSD = sqrt(Ssum).  A move changes two slots: O(1) while both slots stay non-negative
  (the normalisation does not change); O(slots) when a slot is or becomes negative.

Moments: ``mean`` (d,), ``cov`` (d, d), ``sig`` (d,) = sqrt(diag(cov)); ``W`` = Σ w
(constraint set, signed, > 0); ``Ccur`` (d, d): current correlation; ``C0`` clean
correlation; ``F2[0]`` = ‖Ccur − C0‖²_F; ``valid`` (d,) bool: features taking part in the
correlation (zero- or negative-variance ones do not).

After an O(d) preparation per (event, feature) every candidate costs O(1): the score uses
the own row and the correlation term only; the extra rows are admissibility checks, made
(O(R)) only for a candidate that would beat the best admissible one so far, and mostly
decided by log-free bounds (:func:`_row_bounds`); see :func:`_score`.  These kernels
are the only incremental implementation of the statistics in advsyst; the batch functions
:func:`advsyst.stats.jsd_per_feature`, :func:`advsyst.stats.pearson_correlation` and
:func:`advsyst.stats.delta_fn` recompute everything from scratch and are the independent
reference the tests compare against.

Closed forms
------------
*JSD.*  With clean and current weighted counts ``p_k = max(H0[row, k], 0)/T0`` and
``q_k = max(H[row, k], 0)/Tq`` (``T0 = hs[0, row]``, ``Tq = hs[1, row]``) and ``f(p, q) =
½[p log2(2p/(p+q)) + q log2(2q/(p+q))]`` (0·log 0 = 0), the running sum is ``Ssum_row =
Σ_k f(p_k, q_k)`` and ``JSD = sqrt(Ssum_row)``.  Moving a value of (signed) weight ``w``
from slot ``a`` to slot ``b`` changes two terms only while both slots stay non-negative
(then ``Tq`` does not change)::

    ΔS = f(p_a, q_a − w/Tq) − f(p_a, q_a) + f(p_b, q_b + w/Tq) − f(p_b, q_b)

otherwise ``Tq`` changes and the row is recomputed, O(slots) (:func:`_row_after`).

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
every feature (and every extra histogram row within its limit ``hs[2]``) and ``‖C − C0‖_F/‖C0‖_F ≤ max_frob``.  *per_change*: every applied move,
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
    st = cand[3]
    if cand[9]:
        return st[j] * (0.5 + _uniform(cand[7], cand[8], ev, j, 1 << 30))
    return st[j]


@njit(cache=True, inline="always")
def _reach(cand, ev, j, xj, s):
    """Distance from ``xj`` to the bound of entry (ev, j) in the direction ``s``."""
    lo = cand[0]
    hi = cand[1]
    r = ev if lo.shape[0] > 1 else 0
    return hi[r, j] - xj if s > 0 else xj - lo[r, j]


@njit(cache=True, inline="always")
def _disc_first(sup_j, xj, s, dist):
    """Observed values beyond ``xj`` in direction ``s`` within ``dist``: (index of the
    nearest in ``sup_j``, how many)."""
    V = 0
    while V < sup_j.shape[0] and not np.isnan(sup_j[V]):
        V += 1
    if s > 0:
        i0 = 0
        while i0 < V and sup_j[i0] <= xj:
            i0 += 1
        n = 0
        while i0 + n < V and sup_j[i0 + n] - xj <= dist:
            n += 1
        return i0, n
    i0 = V - 1
    while i0 >= 0 and sup_j[i0] >= xj:
        i0 -= 1
    n = 0
    while i0 - n >= 0 and xj - sup_j[i0 - n] <= dist:
        n += 1
    return i0, n


@njit(cache=True, inline="always")
def _n_candidates(cand, j, xj, s, st, dist):
    """How many candidates feature ``j`` with ``dist`` to its bound gets (0: none)."""
    mc = cand[2][j]
    ncand = cand[4]
    maxc = cand[5]
    kind = cand[6][j]
    if kind == 1:
        n_c = int(np.floor(dist + 1e-12))
    elif kind == 2:
        _, n_c = _disc_first(cand[10][j], xj, s, dist)
    elif ncand > 0:
        return ncand
    else:
        if mc > dist:
            return 0
        n_c = int((dist - mc) / st) + 1 if st > 0 else 1
    return n_c if n_c < maxc else maxc


@njit(cache=True, inline="always")
def _delta(c_i, cand, ev, j, xj, s, st, dist):
    """Signed move of candidate ``c_i`` (NaN: beyond the bound, stop): integer steps, the
    ``c_i``-th observed value beyond ``xj`` (landing on it exactly), seeded uniform draws in
    the reachable range, or the grid ``min_change + c_i * step``."""
    mc = cand[2][j]
    ncand = cand[4]
    kind = cand[6][j]
    if kind == 1:
        mag = float(c_i + 1)
    elif kind == 2:
        i0, n = _disc_first(cand[10][j], xj, s, dist)
        if c_i >= n:
            return np.nan
        v = cand[10][j, i0 + c_i if s > 0 else i0 - c_i]
        dl = v - xj
        for _ in range(4):  # x + (v - x) can miss v by an ulp: nudge the move onto v
            if xj + dl == v:
                return dl
            dl = np.nextafter(dl, np.inf if xj + dl < v else -np.inf)
        return np.nan
    elif ncand > 0:
        lo_m = mc if mc < dist else 0.0
        mag = lo_m + (dist - lo_m) * (1.0 - _uniform(cand[7], cand[8], ev, j, c_i))
    else:
        mag = mc + c_i * st
    if mag > dist:
        return np.nan
    return s * mag


# --------------------------------------------------------------------- histograms (JSD)
@njit(cache=True, inline="always")
def _slot_row(x, stats, row):
    return _slot(x, stats[0][row], stats[1][row], stats[2][row], int(stats[5][3, row]))


@njit(cache=True)
def _row_after(H0, H, hs, Ssum, row, a, b, w):
    """(Σ_k f, Σ_k max(H, 0)) of histogram row ``row`` after moving weight ``w`` (signed)
    from slot ``a`` to slot ``b``: O(1) while both slots stay non-negative, else an
    O(slots) recomputation with the new normalisation (inf if nothing positive is left)."""
    Tq = hs[1, row]
    if a == b:
        return Ssum[row], Tq
    T0 = hs[0, row]
    ha = H[row, a]
    hb = H[row, b]
    ha2 = ha - w
    hb2 = hb + w
    if ha >= 0.0 and ha2 >= 0.0 and hb >= 0.0 and hb2 >= 0.0:
        pa = H0[row, a] / T0 if H0[row, a] > 0.0 else 0.0
        pb = H0[row, b] / T0 if H0[row, b] > 0.0 else 0.0
        S = Ssum[row] + _f(pa, ha2 / Tq) - _f(pa, ha / Tq) + _f(pb, hb2 / Tq) - _f(pb, hb / Tq)
        return S, Tq
    Tq2 = Tq - max(ha, 0.0) + max(ha2, 0.0) - max(hb, 0.0) + max(hb2, 0.0)
    if Tq2 <= 0.0:
        return np.inf, Tq2
    S = 0.0
    for k in range(H.shape[1]):
        h = ha2 if k == a else (hb2 if k == b else H[row, k])
        p = H0[row, k] / T0 if H0[row, k] > 0.0 else 0.0
        S += _f(p, h / Tq2 if h > 0.0 else 0.0)
    return S, Tq2


@njit(cache=True, inline="always")
def _jsd_init(xj, j, d, stats, a_r, last_b):
    """Slots of the current value in every histogram row of feature ``j``."""
    for r in range(a_r.shape[0]):
        a_r[r] = _slot_row(xj, stats, r * d + j)
        last_b[r] = -1


@njit(cache=True, inline="always")
def _jsd_candidate(xn, w, j, d, stats, a_r, last_b, S_r, max_jsd2):
    """Σf of every row of feature ``j`` if its value became ``xn`` (cached per row while the
    slot does not change); returns (Σf of the attack's own row, admissible: that row within
    ``max_jsd2`` and every row within its own limit ``hs[2]``)."""
    H0 = stats[3]
    H = stats[4]
    hs = stats[5]
    Ssum = stats[6]
    ok = True
    for r in range(a_r.shape[0]):
        row = r * d + j
        b = _slot_row(xn, stats, row)
        if b != last_b[r]:
            S_r[r] = _row_after(H0, H, hs, Ssum, row, a_r[r], b, w)[0]
            last_b[r] = b
        if S_r[r] > hs[2, row]:
            ok = False
    S0 = S_r[0]
    if S0 > max_jsd2:
        ok = False
    return (S0 if S0 > 0.0 else 0.0), ok


@njit(cache=True, inline="always")
def jsd_over(stats, j, d, max_jsd2):
    """True if a histogram row of feature ``j`` is above its JSD limit (its own row also
    above ``max_jsd2``)."""
    hs = stats[5]
    Ssum = stats[6]
    if Ssum[j] > max_jsd2:
        return True
    for r in range(Ssum.shape[0] // d):
        if Ssum[r * d + j] > hs[2, r * d + j]:
            return True
    return False


@njit(cache=True, inline="always")
def _row_S(xj, b, w, row, r, stats, a_r, last_b, S_r, base_r):
    """Σf of histogram row ``row`` (the ``r``-th row of its feature) if its current value
    ``xj`` became one in slot ``b`` of that row (the caller has looked it up); bitwise the
    first value of :func:`_row_after`.

    Per-row caches, filled on first use (``last_b[r] == -2``: not yet; see
    :func:`_rows_reset`): ``a_r[r]`` the slot of ``xj``; ``base_r[r]`` the part of the
    O(1) update that depends on that slot only, ``Ssum + f(a after) - f(a before)`` (NaN
    when the slot is or becomes negative), so a new slot costs two terms instead of four;
    ``last_b[r]``, ``S_r[r]`` the last slot asked for and its value.
    """
    lb = last_b[r]
    if lb == -2:
        _row_first(xj, w, row, r, stats, a_r, base_r)
        last_b[r] = -1
    if b == lb:
        return S_r[r]
    last_b[r] = b
    a = a_r[r]
    H0 = stats[3]
    H = stats[4]
    hs = stats[5]
    Ssum = stats[6]
    if a == b:
        S_r[r] = Ssum[row]
        return S_r[r]
    hb = H[row, b]
    hb2 = hb + w
    base = base_r[r]
    if not np.isnan(base) and hb >= 0.0 and hb2 >= 0.0:
        Tq = hs[1, row]
        pb = H0[row, b] / hs[0, row] if H0[row, b] > 0.0 else 0.0
        S_r[r] = base + _f(pb, hb2 / Tq) - _f(pb, hb / Tq)
    else:
        S_r[r] = _row_after(H0, H, hs, Ssum, row, a, b, w)[0]
    return S_r[r]


@njit(cache=True, inline="always")
def _row_first(xj, w, row, r, stats, a_r, base_r):
    """Fill the caches of :func:`_row_S` that depend on the old value ``xj`` only."""
    H0 = stats[3]
    H = stats[4]
    hs = stats[5]
    Ssum = stats[6]
    a = _slot_row(xj, stats, row)
    a_r[r] = a
    ha = H[row, a]
    ha2 = ha - w
    if ha >= 0.0 and ha2 >= 0.0:
        Tq = hs[1, row]
        pa = H0[row, a] / hs[0, row] if H0[row, a] > 0.0 else 0.0
        base_r[r] = Ssum[row] + _f(pa, ha2 / Tq) - _f(pa, ha / Tq)
    else:
        base_r[r] = np.nan


@njit(cache=True, inline="always")
def _rows_reset(ib):
    """Empty the per-row caches of :func:`_row_S` and :func:`_extra_rows_ok` (for a new old
    value)."""
    for r in range(ib.shape[1]):
        ib[1, r] = -2
        ib[2, r] = -2


@njit(cache=True, inline="always")
def _row_work(nrow):
    """The per-row work arrays of :func:`_score` for ``nrow`` histogram rows per feature:
    ``ib`` (3, nrow) ints and ``rb`` (3, nrow) floats (their contents are set there)."""
    return np.empty((3, nrow), dtype=np.int64), np.empty((3, nrow))


@njit(cache=True, inline="always")
def _losing_slot(w, ha, a, row, stats):
    """The slot that loses weight ``w`` (content ``ha``) in the bounds of :func:`_row_bounds`
    and :func:`_row_upper`: ``(e, pa, qa, lo_a, hi_a)`` with ``e = w/Tq``, the slot's clean
    and current fractions and the lower and upper bound of its term's change."""
    H0 = stats[3]
    hs = stats[5]
    Tq = hs[1, row]
    c = 0.5 * _LOG2E
    e = w / Tq
    pa = H0[row, a] / hs[0, row] if H0[row, a] > 0.0 else 0.0
    qa = ha / Tq
    qa2 = (ha - w) / Tq
    lo_a = -c * e * (qa - pa) / (pa + qa)
    hi_a = -c * e * (qa2 - pa) / (2.0 * qa2)
    return e, pa, qa, lo_a, hi_a


@njit(cache=True, inline="always")
def _row_bounds(w, a, b, row, stats):
    """Bounds, without logarithms, of the value :func:`_row_after` (and :func:`_row_S`)
    computes for moving weight ``w > 0`` from slot ``a`` to slot ``b != a`` of histogram
    row ``row``: (lower, upper), infinite where none is given.

    With ``q = H/Tq``, ``e = w/Tq`` and ``c = ½ log2(e)``, ``f(p, q)`` is convex in ``q``
    with ``df/dq = c ln(2q/(p + q))``; the tangent inequalities of convexity and ``1 - 1/y
    <= ln y <= y - 1`` give, for the slot that gains (``q = q_b``) and the one that loses
    (``q = q_a > e``)::

        c e (q - p)/(2q)       <= f(p, q + e) - f(p, q) <= c e (q + e - p)/(p + q + e)
        -c e (q - p)/(p + q)   <= f(p, q - e) - f(p, q) <= -c e (q - e - p)/(2(q - e))

    (the first lower bound needs ``q > 0``).  Both are within O(e·(q - p)²/q² + e²/q) of
    the value.  The margin of 1e-12 times the magnitudes involved is orders above the
    rounding of either side (a few units in the last place), so the bounds hold for the
    computed value too.
    """
    H = stats[4]
    ha = H[row, a]
    hb = H[row, b]
    if not (w > 0.0 and ha - w > 0.0 and hb >= 0.0):
        return -np.inf, np.inf  # not the O(1) case of _row_after, or a weight <= 0
    H0 = stats[3]
    hs = stats[5]
    c = 0.5 * _LOG2E
    e, pa, qa, lo_a, hi_a = _losing_slot(w, ha, a, row, stats)
    pb = H0[row, b] / hs[0, row] if H0[row, b] > 0.0 else 0.0
    qb = hb / hs[1, row]
    hi_b = c * e * (qb + e - pb) / (pb + qb + e)
    lo_b = c * e * (qb - pb) / (2.0 * qb) if qb > 0.0 else -np.inf
    S = stats[6][row]
    m = abs(S) + abs(lo_a) + abs(hi_a) + abs(hi_b) + 2.0 * (pa + qa + pb + qb + e)
    if qb > 0.0:
        m += abs(lo_b)
    m *= 1e-12
    return S + lo_a + lo_b - m, S + hi_a + hi_b + m


@njit(cache=True, inline="always")
def _row_upper(w, a, row, stats):
    """An upper bound, without logarithms, of the value of histogram row ``row`` after moving
    weight ``w`` out of slot ``a`` into any slot (``a`` itself included), valid where the row
    has no negative slot; inf where it does not apply (``w <= 0``, slot ``a`` would be
    emptied, a negative slot: an O(K) scan of the row, made once per score and row).

    The gaining slot's term is at most ``w/(2 Tq)`` (``df/dq = ½ log2(2q/(p + q)) <= ½``),
    the losing slot's at most the ``hi_a`` of :func:`_row_bounds`; the margin of 1e-12 times
    the magnitudes involved (the gaining slot's ``p``, ``q`` are at most 1, hence the 4) is
    orders above the rounding of the computed value."""
    H = stats[4]
    ha = H[row, a]
    if not (w > 0.0 and ha - w > 0.0):
        return np.inf
    hs = stats[5]
    for k in range(int(hs[3, row]) + 2):
        if H[row, k] < 0.0:
            return np.inf
    e, pa, qa, lo_a, hi_a = _losing_slot(w, ha, a, row, stats)
    S = stats[6][row]
    m = 1e-12 * (abs(S) + abs(lo_a) + abs(hi_a) + 2.0 * (pa + qa + e) + 4.0 + e)
    up = S + hi_a + 0.5 * e + m
    return up if up >= S else S  # S: the value if the slot does not change


@njit(cache=True, inline="always")
def _extra_rows_ok(xj, xn, w, j, d, stats, ib, rb, first):
    """True if every extra histogram row (r >= 1) of feature ``j`` stays within its limit
    ``hs[2]`` if the value became ``xn``.  A row is decided by the bounds of
    :func:`_row_bounds` where they settle it, else by its value (:func:`_row_S`).  The rows
    are checked from ``first`` on (the row that failed last, cyclically) and the check stops
    at the first failing row; returns (ok, the failing row or ``first``).  The order does
    not change the answer.

    Each row remembers its last decision (``ib[2, r]``: the slot, ``rb[2, r]``: the bound or
    value that decided it), so a candidate in the same slot of that row as the previous one
    checked costs one slot look-up: the decision is a function of the slot only (the state
    does not change during a score).  ``ib[2, r] == -2``: nothing known yet, not even the
    slot of ``xj`` in that row (:func:`_rows_reset`); ``-3``: the row stays within its limit
    whatever the slot (:func:`_row_upper`), it is not looked at again."""
    hs = stats[5]
    a_r = ib[0]
    last_b = ib[1]
    dec_b = ib[2]
    dec_S = rb[2]
    nrow = a_r.shape[0]
    r = first
    for _ in range(nrow - 1):
        row = r * d + j
        lim = hs[2, row]
        if dec_b[r] == -2:
            if last_b[r] == -2:  # else _row_S has filled it
                a_r[r] = _slot_row(xj, stats, row)
            dec_b[r] = -3 if _row_upper(w, a_r[r], row, stats) <= lim else -1
        if dec_b[r] != -3:
            b = _slot_row(xn, stats, row)
            if b == dec_b[r]:
                S = dec_S[r]
            else:
                a = a_r[r]
                if a == b:
                    S = stats[6][row]
                else:
                    lo, hi = _row_bounds(w, a, b, row, stats)
                    if hi <= lim:
                        S = hi
                    elif lo > lim:
                        S = lo
                    else:
                        S = _row_S(xj, b, w, row, r, stats, a_r, last_b, rb[0], rb[1])
                dec_b[r] = b
                dec_S[r] = S
            if S > lim:
                return False, r
        r += 1
        if r == nrow:
            r = 1
    return True, first


@njit(cache=True, inline="always")
def _fill_deltas(cand, ev, j, xj, s, st, dist, n_c, dl):
    """The candidate moves into ``dl[:n]``; returns ``n``, the candidates before the first
    one beyond the bound (where the candidate loop stops)."""
    if cand[6][j] == 0 and cand[4] == 0:
        # the grid min_change + c_i*step: its magnitudes do not decrease with c_i, so the
        # first one beyond the bound ends it (as _delta would)
        mc = cand[2][j]
        n = n_c
        for c_i in range(n_c):
            mag = mc + c_i * st
            if mag > dist:
                n = c_i
                break
        for c_i in range(n):
            dl[c_i] = s * (mc + c_i * st)
        return n
    for c_i in range(n_c):
        delta = _delta(c_i, cand, ev, j, xj, s, st, dist)
        if np.isnan(delta):
            return c_i
        dl[c_i] = delta
    return n_c


@njit(cache=True)
def score_feature(x, w, j, s, ev, cand, stats, budget, constrained, allow_inadmissible):
    """Best move of feature ``j`` of one event (``ev``: its index, seeds the draws).

    Under the cumulative budget the correlation term is measured against ``C0``, under
    ``per_change`` against the current ``Ccur``.  Returns (delta, score, status): status 1 =
    admissible move found, 2 = inadmissible move returned (``allow_inadmissible``), 0 = no
    move.

    The move is the admissible candidate of minimal score, the first in candidate order
    among equal scores (status 1); else, with ``allow_inadmissible``, the candidate of
    minimal score among all (status 2).  See :func:`_score` for how this is computed.
    """
    nrow = stats[0].shape[0] // x.shape[0]
    fb = np.empty((3, max(cand[4], cand[5], 1)))
    ib, rb = _row_work(nrow)
    return _score(x, w, j, s, ev, cand, stats, budget, constrained, allow_inadmissible, fb, ib, rb)


@njit(cache=True)
def _score(x, w, j, s, ev, cand, stats, budget, constrained, allow_inadmissible, fb, ib, rb):
    """:func:`score_feature` with its work arrays passed in (``fb`` (3, >= candidates)
    floats, ``ib``, ``rb`` from :func:`_row_work`; R histogram rows per feature), so that
    a caller scoring many features allocates them once.

    How the choice is computed (none of it changes which move is chosen):

    * the correlation term of every candidate first, in one branch-free loop over the
      candidates (the closed form is O(1) each; the compiler vectorises it);
    * then, in candidate order, the attack's own histogram row (O(1), cached while the
      candidate stays in one bin) for the candidates within the correlation limit (all of
      them with ``allow_inadmissible``), and the score ``alpha*JSD + beta*corr``;
    * the extra rows of the binning-robust budget are admissibility checks only (O(R),
      stopping at the first failing row): made only for a candidate that would beat the
      best fully admissible one so far.
    """
    edges, lo_e, inv_w, H0, H, hs, Ssum, mean, cov, sig, Ccur, C0, valid, F2, W = stats
    mode, max_jsd, max_frob, norm0, alpha, beta = budget
    st = _step(cand, ev, j)
    Cref = C0 if mode == MODE_CUMULATIVE else Ccur
    xj = x[j]
    if s == 0.0:
        return 0.0, 0.0, 0
    # reachable distance in the gradient-sign direction (feature or per-entry bounds)
    dist = _reach(cand, ev, j, xj, s)
    if dist <= 0.0:
        return 0.0, 0.0, 0
    n_c = _n_candidates(cand, j, xj, s, st, dist)
    if not constrained:
        # moves of events outside the constraint set leave the monitored statistics alone:
        # take the smallest candidate (minimal perturbation)
        if cand[6][j] == 2:
            d0 = _delta(0, cand, ev, j, xj, s, st, dist) if n_c > 0 else np.nan
            if np.isnan(d0):
                return 0.0, 0.0, 0
            return d0, 0.0, 1
        d0 = 1.0 if cand[6][j] == 1 else cand[2][j]
        if d0 <= 0.0:
            d0 = st
        if d0 > dist:
            return 0.0, 0.0, 0
        return s * d0, 0.0, 1

    d = x.shape[0]
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
    maxF2 = (max_frob * norm0) ** 2 if mode == MODE_CUMULATIVE else 0.5 * max_frob * max_frob
    # --- the candidates and their correlation terms (branch-free loops) ---
    dl = fb[0]
    ct = fb[1]
    okc = fb[2]
    n = _fill_deltas(cand, ev, j, xj, s, st, dist, n_c, dl)
    if corr_j:
        for k in range(n):
            delta = dl[k]
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
            ct[k] = rs
    else:
        for k in range(n):
            ct[k] = 0.0
    if mode == MODE_CUMULATIVE:
        for k in range(n):
            F2n = R + 2.0 * ct[k]
            if F2n < 0.0:
                F2n = 0.0
            okc[k] = 1.0 if F2n <= maxF2 else 0.0
            ct[k] = np.sqrt(F2n) / norm0
    else:
        for k in range(n):
            rs = ct[k]
            okc[k] = 1.0 if rs <= maxF2 else 0.0
            ct[k] = np.sqrt(2.0 * rs)
    # --- JSD pieces that do not depend on the candidate (every histogram row) ---
    nrow = stats[0].shape[0] // d
    a_r = ib[0]
    last_b = ib[1]
    S_r = rb[0]
    base_r = rb[1]
    _rows_reset(ib)
    max_jsd2 = max_jsd * max_jsd
    lim0 = hs[2, j]

    best_d = 0.0
    best_sc = np.inf
    found = 0
    any_d = 0.0
    any_sc = np.inf
    skip_bad = not allow_inadmissible
    first = 1
    S_last = np.nan
    jsd = 0.0
    # the log-free lower bound of a bin's own-row value (_row_bounds, needs w > 0): the bin
    # it was last computed for, whether it breaks the row's limits and its JSD part of the
    # score (a lower bound of the score while alpha >= 0 keeps alpha*sqrt(S) monotone)
    prune = alpha >= 0.0
    bound = w > 0.0
    lb_b = -1
    lb_j = 0.0
    lb_bad = False
    a0 = -1
    e0 = edges[j]  # the own row's binning, looked up once (not per candidate)
    lo0 = lo_e[j]
    iw0 = inv_w[j]
    K0 = int(hs[3, j])
    for k in range(n):
        delta = dl[k]
        if delta == 0.0:  # min_change = 0: the zero move is no candidate
            continue
        ok = okc[k] != 0.0
        if skip_bad and not ok:  # inadmissible: the JSD is not needed
            continue
        xn = xj + delta
        b0 = _slot(xn, e0, lo0, iw0, K0)
        if bound:
            # a candidate in a bin whose own-row value is not known yet: skip it when a
            # lower bound of that value already breaks the row's limit, or when the lower
            # bound of its score already reaches the best score (the value is then never
            # computed)
            if b0 != last_b[0]:
                if b0 != lb_b:
                    lb_b = b0
                    if a0 < 0:
                        a0 = _slot_row(xj, stats, j)
                    lbS = Ssum[j] if b0 == a0 else _row_bounds(w, a0, b0, j, stats)[0]
                    lb_bad = lbS > lim0 or lbS > max_jsd2
                    lb_j = alpha * np.sqrt(lbS if lbS > 0.0 else 0.0)
                if skip_bad and lb_bad:
                    continue
                if prune and lb_j + beta * ct[k] >= best_sc:
                    continue
        S0 = _row_S(xj, b0, w, j, 0, stats, a_r, last_b, S_r, base_r)
        if S0 > lim0 or S0 > max_jsd2:
            if skip_bad:
                continue
            ok = False
        if S0 != S_last:  # one square root per bin, not per candidate
            S_last = S0
            jsd = np.sqrt(S0 if S0 > 0.0 else 0.0)
        sc = alpha * jsd + beta * ct[k]
        if ok and sc < best_sc:
            if nrow > 1:
                ok, first = _extra_rows_ok(xj, xn, w, j, d, stats, ib, rb, first)
            if ok:
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
    _, _, _, H0, H, hs, Ssum, mean, cov, sig, Ccur, C0, valid, F2, W = stats
    d = x.shape[0]
    xj = x[j]
    delta = xn - xj
    # histograms (every row of feature j) + running JS sums
    for rr in range(Ssum.shape[0] // d):
        row = rr * d + j
        a = _slot_row(xj, stats, row)
        b = _slot_row(xn, stats, row)
        if a != b:
            S, Tq = _row_after(H0, H, hs, Ssum, row, a, b, w)
            Ssum[row] = S
            hs[1, row] = Tq
            H[row, a] -= w
            H[row, b] += w
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


@njit(cache=True, inline="always")
def _row_cand(cand, i):
    """``cand`` holding only row ``i`` of per-entry bounds (row 0 of per-feature ones), so
    that :func:`score_feature` can take the event's id, not its row, as ``ev``."""
    r = i if cand[0].shape[0] > 1 else 0
    return (cand[0][r : r + 1], cand[1][r : r + 1]) + cand[2:]


@njit(cache=True, parallel=True)
def score_block(X, wts, cons, events, ids, sign, movable, cand, stats, budget, allow_inadmissible):
    """Score every movable feature of every event in ``events`` (rows of ``X``) against the
    current state; ``ids[i]`` is the id of row ``i`` that seeds its random draws (the
    global event index: ``arange(n)`` on one machine, a shard's global rows when sharded)."""
    m = events.shape[0]
    d = X.shape[1]
    deltas = np.zeros((m, d))
    status = np.zeros((m, d), dtype=np.int8)
    nrow = stats[0].shape[0] // d
    for t in prange(m):
        i = events[t]
        x = X[i]
        ci = _row_cand(cand, i)
        fb = np.empty((3, max(cand[4], cand[5], 1)))  # work arrays, one set per event
        ib, rb = _row_work(nrow)
        for j in range(d):
            if not movable[i, j]:
                continue
            dl, sc, stt = _score(
                x, wts[i], j, sign[t, j], ids[i], ci, stats, budget, cons[i], allow_inadmissible,
                fb, ib, rb,
            )  # fmt: skip
            deltas[t, j] = dl
            status[t, j] = stt
    return deltas, status


@njit(cache=True, inline="always")
def _violates(mode, status, jsd_bad, F2, maxF2, dc2, max_frob):
    if status != 1:
        return False
    if jsd_bad:
        return True
    if mode == MODE_CUMULATIVE:
        return F2 > maxF2
    return dc2 > max_frob * max_frob


@njit(cache=True)
def apply_block(X, wts, cons, events, ids, sign, deltas, status, cand, stats, budget, enforce):
    """Apply scored moves event by event with exact updates.

    With ``enforce`` a move that is no longer admissible against the current state - under
    the cumulative budget: the data set leaves the budget; under ``per_change``: the
    feature's JSD or this move's correlation change exceeds its limit - is undone at once
    and that feature is re-scored against the current state (the closed form is exact
    there, so the new choice is admissible or no move).  Moves applied on purpose beyond
    the per-change limits (status 2, ``use_no_change=False``) are kept.  ``ids`` as in
    :func:`score_block`.  Returns the number of moves that were undone.
    """
    F2 = stats[13]
    mode, max_jsd, max_frob, norm0, alpha, beta = budget
    m = events.shape[0]
    d = X.shape[1]
    max_jsd2 = max_jsd * max_jsd
    maxF2 = (max_frob * norm0) ** 2
    undone = 0
    nrow = stats[0].shape[0] // d
    fb = np.empty((3, 0))  # work arrays of the re-scores, allocated at the first one
    ib, rb = _row_work(nrow)
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
                mode, status[t, j], jsd_over(stats, j, d, max_jsd2), F2[0], maxF2, dc2, max_frob
            ):
                apply_move(X[i], wts[i], j, old, stats)
                X[i, j] = old
                undone += 1
                if fb.shape[1] == 0:
                    fb = np.empty((3, max(cand[4], cand[5], 1)))
                dl2, sc2, stt2 = _score(
                    X[i], wts[i], j, sign[t, j], ids[i], _row_cand(cand, i), stats, budget, True,
                    False, fb, ib, rb,
                )  # fmt: skip
                status[t, j] = 0
                if stt2 == 1:
                    dc2 = apply_move(X[i], wts[i], j, X[i, j] + dl2, stats)
                    bad = jsd_over(stats, j, d, max_jsd2)
                    if _violates(mode, 1, bad, F2[0], maxF2, dc2, max_frob):
                        apply_move(X[i], wts[i], j, old, stats)
                        X[i, j] = old
                        undone += 1
                    else:
                        deltas[t, j] = dl2
                        status[t, j] = 1
    return undone


@njit(cache=True)
def exact_pass(X, wts, cons, events, ids, sign, movable, cand, stats, budget, allow_inadmissible):
    """The sequential oracle: events in order, features in index order; each feature is
    scored against the state left by every earlier move and applied at once (with the
    re-check of :func:`apply_block`), under both budgets; ``ids`` as in
    :func:`score_block`."""
    m = events.shape[0]
    d = X.shape[1]
    moved = np.zeros(m, dtype=np.int8)
    undone = 0
    one = np.zeros(1, dtype=np.int64)
    dls = np.zeros((1, d))
    sts = np.zeros((1, d), dtype=np.int8)
    nrow = stats[0].shape[0] // d
    fb = np.empty((3, max(cand[4], cand[5], 1)))  # work arrays of _score
    ib, rb = _row_work(nrow)
    for t in range(m):
        i = events[t]
        one[0] = i
        sg = sign[t : t + 1]
        ci = _row_cand(cand, i)
        for j in range(d):
            if not movable[i, j]:
                continue
            dl, sc, stt = _score(
                X[i], wts[i], j, sign[t, j], ids[i], ci, stats, budget, cons[i], allow_inadmissible,
                fb, ib, rb,
            )  # fmt: skip
            if stt == 0:
                continue
            dls[0, :] = 0.0
            sts[0, :] = 0
            dls[0, j] = dl
            sts[0, j] = stt
            undone += apply_block(X, wts, cons, one, ids, sg, dls, sts, cand, stats, budget, True)
            if sts[0, j] != 0:
                moved[t] = 1
    return moved, undone


def make_cand(lo, hi, mc, st, ncand, maxc, kind, rseed, it, randomize, sup=None):
    """The ``cand`` tuple with normalised types: ``lo``/``hi`` per feature (d,) or per entry
    (n, d), ``kind`` as int8 (a boolean ``is_int`` mask gives 1 = integer steps), ``sup``
    the (d, V) NaN-padded sorted observed values of discrete features (None: none)."""
    lo = np.ascontiguousarray(np.atleast_2d(np.asarray(lo, dtype=np.float64)))
    hi = np.ascontiguousarray(np.atleast_2d(np.asarray(hi, dtype=np.float64)))
    kind = np.ascontiguousarray(np.asarray(kind).astype(np.int8))
    d = kind.shape[0]
    sup = np.full((d, 1), np.nan) if sup is None else np.asarray(sup, dtype=np.float64)
    return (lo, hi, np.asarray(mc, dtype=np.float64), np.asarray(st, dtype=np.float64),
            int(ncand), int(maxc), kind, int(rseed), int(it), bool(randomize),
            np.ascontiguousarray(sup))  # fmt: skip


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
    ids=None,
):
    """One pass over ``events`` (rows of ``sign``): :func:`exact_pass` if ``exact``, else
    blocks of ``block_size`` events scored by :func:`score_block` against one snapshot and
    applied by :func:`apply_block` (re-checking every move against the current state when
    ``enforce``).  ``ids``: the id of every row of ``X`` seeding its draws (default: the
    row index).  Returns the number of undone moves."""
    if ids is None:
        ids = np.arange(len(X), dtype=np.int64)
    if exact:
        _, undone = call(exact_pass, X, wts, cons, events, ids, sign, movable, cand, stats, budget,
                         allow_inadmissible)  # fmt: skip
        return int(undone)
    undone = 0
    for s in range(0, len(events), block_size):
        ev = events[s : s + block_size]
        sg = sign[s : s + block_size]
        deltas, status = call(score_block, X, wts, cons, ev, ids, sg, movable, cand, stats, budget,
                              allow_inadmissible)  # fmt: skip
        undone += int(call(apply_block, X, wts, cons, ev, ids, sg, deltas, status, cand, stats,
                           budget, enforce))  # fmt: skip
    return undone
