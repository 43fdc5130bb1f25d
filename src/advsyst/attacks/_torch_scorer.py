"""Candidate scoring of a block in torch: the numba ``score_block`` vectorised over
(event, feature, candidate), on CUDA when there is a GPU and on the CPU otherwise.

:func:`score_block_torch` takes the same inputs and returns the same ``(deltas, status)``
as :func:`advsyst.attacks._kernels.score_block` (the ``stats``/``cand``/``budget`` tuples,
the histogram rows of the binning-robust budget, signed weights, discrete features,
per-entry bounds and both budgets are described in that module's docstring).  It is a
port of ``score_feature``, not a second method: every quantity is computed with the same
closed forms in float64 and, where the kernel accumulates a sum, in the same order, so
that the choice of every (event, feature) is the kernel's.

What is the same, and what is not
---------------------------------
* The candidates are the kernel's, bit for bit: the grid ``min_change + c*step``, integer
  steps, the observed values of discrete features (with the same ulp nudge onto the
  value), and the seeded draws of ``randomize_step`` / ``num_candidates``: the
  counter-based splitmix64 hash ``_uniform``/``_mix`` is ported in int64 arithmetic
  (two's-complement wrap-around is the uint64 arithmetic; right shifts are made logical
  by masking), tested value by value against the kernel's.
* The selection is the kernel's: the first candidate (lowest index) with the minimal score
  among the admissible ones (strict ``<`` in index order), the stop at the first candidate
  beyond the bound, the zero move skipped, ``allow_inadmissible`` (status 2) the first
  minimal score over every candidate.
* A move that makes a histogram slot negative, or that touches a negative slot, changes the
  normalisation of that row: those candidates (and only those) get the kernel's O(slots)
  recomputation (``_row_after``), vectorised over the candidates that need it and summed
  slot by slot in the kernel's order.
* Sums over features (the five correlation sums) are accumulated feature by feature, in
  the kernel's order; sqrt and division are correctly rounded on both sides.  The one
  difference is ``log``: torch's vectorised log (SLEEF on the CPU, CUDA's libdevice) and
  the C library's log the kernel calls may differ in the last bit for some arguments, so a
  JSD term can differ by ~1e-16 relative.  The chosen move is then the same unless two
  candidates' scores, or a candidate and its limit, are that close; the tests compare
  choice by choice on seeded inputs.

The ``ids`` argument (default: ``events``) is the id that seeds the per-event draws
(``ids[t]`` for event ``t`` of the block); per-entry bounds are indexed by the row
``events[t]`` of ``X``.

Memory is bounded by scoring the (event, feature) pairs in chunks of at most
``max_elements`` (pair, candidate) entries; torch is imported inside the functions, so
importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advsyst.errors import ConfigError, InputError

__all__ = ["SCORERS", "candidate_counts", "resolve_scorer", "score_block_torch", "uniform_torch"]

#: the values of the ``scorer`` option of the sharded attack
SCORERS = ("auto", "numba", "torch")

_LOG2E = 1.4426950408889634
_MODE_CUMULATIVE = 0  # == advsyst.attacks._kernels.MODE_CUMULATIVE (kept free of numba)
_M64 = (1 << 64) - 1


def _s64(c: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    c &= _M64
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLD = _s64(0x9E3779B97F4A7C15)
_C1 = _s64(0xBF58476D1CE4E5B9)
_C2 = _s64(0x94D049BB133111EB)


def resolve_scorer(scorer: str) -> tuple[str, str]:
    """``(implementation, device)`` of a ``scorer`` option: ``"numba"`` -> the numba kernel
    on the CPU; ``"torch"`` -> torch on CUDA when this process sees a GPU, else on the CPU;
    ``"auto"`` -> torch on CUDA when this process sees a GPU, else numba."""
    if scorer not in SCORERS:
        raise ConfigError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    if scorer == "numba":
        return "numba", "cpu"
    import torch

    cuda = torch.cuda.is_available()
    if scorer == "auto":
        return ("torch", "cuda") if cuda else ("numba", "cpu")
    return "torch", "cuda" if cuda else "cpu"


# --------------------------------------------------------------------- the seeded hash
def _srl(z, k: int):
    """Logical right shift of an int64 tensor (the uint64 ``>>``)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z, v):
    z = z ^ (v + _GOLD + (z << 6) + _srl(z, 2))
    z = (z ^ _srl(z, 30)) * _C1
    z = (z ^ _srl(z, 27)) * _C2
    return z ^ _srl(z, 31)


def uniform_torch(seed: int, a: int, b, c, d):
    """The kernels' ``_uniform(seed, a, b, c, d)`` for int64 tensors ``b``, ``c``, ``d``
    (broadcast): a float64 tensor in [0, 1), bit for bit the kernel's value."""
    import torch

    b, c, d = torch.broadcast_tensors(b, c, d)
    z0 = _s64((int(seed) & _M64) * 0x9E3779B97F4A7C15)
    z = torch.full_like(b, z0)
    z = _mix(z, _s64(int(a)))
    z = _mix(_mix(_mix(z, b), c), d)
    return _srl(z, 11).to(torch.float64) * (1.0 / 9007199254740992.0)


# --------------------------------------------------------------------- histograms
def _f(p, q):
    """½[p log2(2p/(p+q)) + q log2(2q/(p+q))], 0 log 0 = 0 (the kernel's ``_f``)."""
    import torch

    m = p + q
    out = torch.where(p > 0.0, p * torch.log(2.0 * p / m), 0.0)
    out = out + torch.where(q > 0.0, q * torch.log(2.0 * q / m), 0.0)
    return 0.5 * out * _LOG2E


class _Hist:
    """The histogram rows on the device, flat, with the per-slot terms that do not depend
    on the candidate."""

    def __init__(self, stats: tuple, T):
        import torch

        edges, lo_e, inv_w, H0, H, hs = stats[:6]
        self.Ke = edges.shape[1]  # Kmax + 1 edges per row
        self.Ks = H.shape[1]  # Kmax + 2 slots per row
        self.edges = T(edges).reshape(-1)
        self.lo_e = T(lo_e)
        self.inv_w = T(inv_w)
        self.K = T(hs[3]).to(torch.int64)
        self.H = T(H)
        self.H0 = T(H0)
        self.T0 = T(hs[0])
        self.Tq = T(hs[1])
        self.lim = T(hs[2])
        self.Ssum = T(stats[6])
        # p_k = max(H0, 0)/T0 as the kernel computes it, and f(p_k, H_k/Tq) per slot (used
        # only where H_k >= 0: the O(1) update)
        self.P0 = torch.where(self.H0 > 0.0, self.H0 / self.T0[:, None], 0.0)
        self.F1 = _f(self.P0, self.H / self.Tq[:, None]).reshape(-1)
        self.Hf = self.H.reshape(-1)
        self.P0f = self.P0.reshape(-1)

    def slot(self, x, row):
        """The kernel's ``_slot`` of ``x`` in histogram ``row`` (int64 tensors that
        broadcast, e.g. (P, C) values and (P, 1) rows)."""
        import torch

        K = self.K[row]
        base = row * self.Ke
        e0 = self.edges[base]
        eK = self.edges[base + K]
        b = ((x - self.lo_e[row]) * self.inv_w[row]).to(torch.int64) + 1
        b = torch.minimum(torch.clamp(b, min=1), K)
        base, K = torch.broadcast_tensors(base, K)
        base, K = base.expand_as(b), K.expand_as(b)
        inside = (x >= e0) & (x < eK)
        # the estimate is the slot unless x lies beyond one of its two edges: the kernel's
        # two walks, run only where one of them moves
        fix = inside & (
            ((b > 1) & (x < torch.take(self.edges, base + b - 1)))
            | ((b < K) & (x >= torch.take(self.edges, base + b)))
        )
        if bool(fix.any()):
            ix = torch.nonzero(fix, as_tuple=True)
            xb, bb, Kb, bs = x.expand_as(b)[ix], b[ix], K[ix], base[ix]
            while True:
                dec = (bb > 1) & (xb < torch.take(self.edges, bs + bb - 1))
                if not bool(dec.any()):
                    break
                bb = bb - dec.to(torch.int64)
            while True:
                inc = (bb < Kb) & (xb >= torch.take(self.edges, bs + bb))
                if not bool(inc.any()):
                    break
                bb = bb + inc.to(torch.int64)
            b = b.index_put(ix, bb)
        return torch.where(x < e0, 0, torch.where(x >= eK, torch.where(x == eK, K, K + 1), b))

    def row_slow(self, row, a, b, ha2, hb2, Tq2, max_elements: int):
        """Σ_k f(p_k, q_k) of ``row`` with slots ``a``/``b`` set to ``ha2``/``hb2`` and the
        new normalisation ``Tq2`` (> 0): the kernel's O(slots) branch of ``_row_after``,
        summed slot by slot in the kernel's order."""
        import torch

        Q = row.shape[0]
        out = torch.empty(Q, dtype=torch.float64, device=row.device)
        step = max(1, max_elements // self.Ks)
        for s0 in range(0, Q, step):
            sl = slice(s0, s0 + step)
            h = self.H[row[sl]].clone()
            h.scatter_(1, a[sl, None], ha2[sl, None])
            h.scatter_(1, b[sl, None], hb2[sl, None])
            q = torch.where(h > 0.0, h / Tq2[sl, None], 0.0)
            F = _f(self.P0[row[sl]], q).T.contiguous()  # (slots, Q): rows contiguous
            S = torch.zeros(F.shape[1], dtype=torch.float64, device=row.device)
            for k in range(self.Ks):
                S += F[k]
            out[sl] = S
        return out


# --------------------------------------------------------------------- candidates
class _Pairs:
    """Per (event, feature) pair: the quantities of ``score_feature`` that do not depend on
    the candidate (bound distance, step, number of candidates, discrete support)."""

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    def take(self, sel) -> _Pairs:
        return _Pairs(**{k: (v[sel] if hasattr(v, "shape") else v) for k, v in vars(self).items()})


def _cand_delta(p: _Pairs, c, g: dict[str, Any]):
    """The signed move of candidate ``c`` (int64, broadcast against the pairs as (P, C)) of
    every pair; NaN: beyond the bound (the kernel's ``_delta``)."""
    import torch

    c2 = c[None, :]
    cf = c2.to(torch.float64)
    dist, xj, s = p.dist[:, None], p.xj[:, None], p.s[:, None]
    mc = p.mc[:, None]
    # kind 0: the grid, or seeded draws
    if g["ncand"] > 0:
        lo_m = torch.where(mc < dist, mc, 0.0)
        u = uniform_torch(g["rseed"], g["it"], p.ev[:, None], p.j[:, None], c2)
        mag = lo_m + (dist - lo_m) * (1.0 - u)
    else:
        mag = mc + cf * p.st[:, None]
    mag = torch.where(p.kind[:, None] == 1, cf + 1.0, mag)
    delta = torch.where(mag > dist, torch.nan, s * mag)
    disc = p.kind == 2
    if bool(disc.any()):
        V = g["sup"].shape[1]
        pos = torch.where(s > 0, p.i0[:, None] + c2, p.i0[:, None] - c2)
        inrange = (c2 < p.nd[:, None]) & (pos >= 0) & (pos < V)
        v = g["sup"][p.j[:, None], pos.clamp(0, V - 1)]
        dl = v - xj
        res = torch.full_like(dl, torch.nan)
        done = ~inrange
        for _ in range(4):  # x + (v - x) can miss v by an ulp: nudge the move onto v
            hit = ~done & (xj + dl == v)
            res = torch.where(hit, dl, res)
            done = done | hit
            toward = torch.where(xj + dl < v, torch.inf, -torch.inf)
            dl = torch.where(done, dl, torch.nextafter(dl, toward))
        delta = torch.where(disc[:, None], res, delta)
    return delta


def _prepare_pairs(Xe, lo_r, hi_r, tt, jj, rows_b, ev, sign_t, cand, T, torch):
    lo, hi, mc, st, ncand, maxc, kind, rseed, it, randomize, sup = cand
    xj = Xe[tt, jj]
    s = sign_t[tt, jj]
    st_p = T(st)[jj]
    if randomize:
        st_p = st_p * (0.5 + uniform_torch(rseed, it, ev, jj, torch.full_like(jj, 1 << 30)))
    dist = torch.where(s > 0, hi_r[rows_b, jj] - xj, xj - lo_r[rows_b, jj])
    kind_p = T(kind).to(torch.int64)[jj]
    mc_p = T(mc)[jj]
    # discrete support: (index of the nearest observed value beyond x, how many within dist)
    supt = T(sup)
    V = supt.shape[1]
    sv = supt[jj]  # (P, V)
    ok_v = torch.cumprod((~torch.isnan(sv)).to(torch.int64), dim=1).bool()
    up = s[:, None] > 0
    i0 = torch.where(
        s > 0,
        (ok_v & (sv <= xj[:, None])).sum(1),
        (ok_v & (sv < xj[:, None])).sum(1) - 1,
    )
    cv = torch.arange(V, device=xj.device)[None, :]
    posv = torch.where(up, i0[:, None] + cv, i0[:, None] - cv)
    inb = (posv >= 0) & (posv < V)
    vv = torch.gather(sv, 1, posv.clamp(0, V - 1))
    okc = inb & torch.gather(ok_v, 1, posv.clamp(0, V - 1))
    within = torch.where(up, vv - xj[:, None] <= dist[:, None], xj[:, None] - vv <= dist[:, None])
    nd = torch.cumprod((okc & within).to(torch.int64), dim=1).sum(1)
    # number of candidates (the kernel's ``_n_candidates``)
    big = 2.0**62
    grid = torch.where(
        st_p > 0,
        torch.clamp(torch.trunc((dist - mc_p) / st_p), max=big).to(torch.int64) + 1,
        torch.ones_like(jj),
    )
    grid = torch.where(mc_p > dist, 0, grid)
    if ncand > 0:
        grid = torch.full_like(jj, ncand)
    n1 = torch.clamp(torch.floor(dist + 1e-12), max=big).to(torch.int64)
    nc = torch.where(kind_p == 1, n1, torch.where(kind_p == 2, nd, grid))
    capped = (kind_p != 0) | (ncand <= 0)
    nc = torch.where(capped, torch.clamp(nc, max=maxc), nc)
    return _Pairs(
        xj=xj, s=s, st=st_p, dist=dist, kind=kind_p, mc=mc_p, i0=i0, nd=nd, nc=nc, ev=ev, j=jj
    )


# --------------------------------------------------------------------- the scorer
def _check(X, wts, cons, events, sign, movable, cand, stats, budget):
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype != np.float64:
        raise InputError(f"X must be a 2-D float64 array, got {X.dtype} {X.shape}")
    n, d = X.shape
    events = np.asarray(events)
    if events.ndim != 1 or not np.issubdtype(events.dtype, np.integer):
        raise InputError(f"events must be a 1-D integer array, got {events.dtype} {events.shape}")
    if len(events) and (events.min() < 0 or events.max() >= n):
        raise InputError(f"events index rows outside X (n={n})")
    m = len(events)
    for name, a, shape in (("wts", wts, (n,)), ("cons", cons, (n,)), ("sign", sign, (m, d)),
                           ("movable", movable, (n, d))):  # fmt: skip
        if np.shape(a) != shape:
            raise InputError(f"{name} must have shape {shape}, got {np.shape(a)}")
    lo, hi = cand[0], cand[1]
    for name, b in (("lo", lo), ("hi", hi)):
        if b.ndim != 2 or b.shape[1] != d or b.shape[0] not in (1, n):
            raise InputError(f"bounds {name} must have shape (1, {d}) or ({n}, {d}), got {b.shape}")
        if not np.isfinite(b).all():
            raise InputError(f"bounds {name} contain NaN/inf (the torch scorer needs finite ones)")
    if len(stats) != 15 or len(budget) != 6 or len(cand) != 11:
        raise InputError("stats/cand/budget must be the kernels' 15-, 11- and 6-tuples")
    if int(np.asarray(stats[0]).shape[0]) % d:
        raise InputError(f"{stats[0].shape[0]} histogram rows is not a multiple of d={d}")
    return X, events


def score_block_torch(
    X: np.ndarray,
    wts: np.ndarray,
    cons: np.ndarray,
    events: np.ndarray,
    sign: np.ndarray,
    movable: np.ndarray,
    cand: tuple,
    stats: tuple,
    budget: tuple,
    allow_inadmissible: bool,
    device: Any = "cpu",
    ids: np.ndarray | None = None,
    max_elements: int | None = None,
    top: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every movable feature of every event in ``events`` against the current state.

    Parameters
    ----------
    X, wts, cons, events, sign, movable, cand, stats, budget, allow_inadmissible
        As :func:`advsyst.attacks._kernels.score_block` (nothing is modified).
    device
        Where to compute (``"cpu"``, ``"cuda"``, a ``torch.device``).
    ids
        (m,) int64 ids seeding the per-event draws (``randomize_step``,
        ``num_candidates``); default ``events``.
    max_elements
        At most this many (pair, candidate) entries per chunk (default 2**20 on the CPU,
        2**24 on CUDA).
    top
        The extra histogram rows (binning-robust budget) are evaluated for the ``top`` best
        candidates of each (event, feature) by own-binning JSD and correlation score, and
        for every candidate where none of those is admissible (any ``top`` >= 1 gives the
        same result; it only changes the work).

    Returns
    -------
    deltas, status
        (m, d) float64 and int8 NumPy arrays: the chosen move of every (event, feature) and
        its status (1 admissible, 2 inadmissible returned under ``allow_inadmissible``, 0
        no move), as ``score_block``.
    """
    import torch

    X, events = _check(X, wts, cons, events, sign, movable, cand, stats, budget)
    m, d = len(events), X.shape[1]
    deltas = np.zeros((m, d))
    status = np.zeros((m, d), dtype=np.int8)
    if ids is not None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (m,):
            raise InputError(f"ids must have shape ({m},), got {ids.shape}")
    if m == 0:
        return deltas, status
    dev = torch.device(device)
    if max_elements is None:
        max_elements = 2**24 if dev.type == "cuda" else 2**20
    f64, i64 = torch.float64, torch.int64

    def T(a, dt=f64):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)

    lo, hi, mc, st, ncand, maxc, kind, rseed, it, randomize, sup = cand
    mode, max_jsd, max_frob, norm0, alpha, beta = budget
    sign = np.asarray(sign, dtype=np.float64)
    mv = np.asarray(movable)[events] & (sign != 0.0)
    t_np, j_np = np.nonzero(mv)
    if len(t_np) == 0:
        return deltas, status
    per_entry = lo.shape[0] > 1
    Xe = T(X[events])
    tt, jj = T(t_np, i64), T(j_np, i64)
    lo_r = T(lo[events] if per_entry else lo)
    hi_r = T(hi[events] if per_entry else hi)
    rows_b = tt if per_entry else torch.zeros_like(tt)
    ev = T(events if ids is None else ids, i64)[tt]
    p = _prepare_pairs(Xe, lo_r, hi_r, tt, jj, rows_b, ev, T(sign), cand, T, torch)
    p.t = tt
    p.w = T(np.asarray(wts, dtype=np.float64)[events])[tt]
    cons_p = T(np.asarray(cons)[events], torch.bool)[tt]
    reach = p.dist > 0.0
    g = {"ncand": int(ncand), "rseed": rseed, "it": it, "sup": T(sup)}
    out_d = torch.zeros(len(t_np), dtype=f64, device=dev)
    out_s = torch.zeros(len(t_np), dtype=torch.int8, device=dev)

    # events outside the constraint set: the smallest candidate (minimal perturbation)
    un = torch.nonzero(reach & ~cons_p).squeeze(1)
    if len(un):
        q = p.take(un)
        d0 = torch.where(q.kind == 1, 1.0, q.mc)
        d0 = torch.where(d0 <= 0.0, q.st, d0)
        ok = d0 <= q.dist
        dl = q.s * d0
        disc = q.kind == 2
        if bool(disc.any()):
            dd = _cand_delta(q, torch.zeros(1, dtype=i64, device=dev), g)[:, 0]
            dd = torch.where(q.nc > 0, dd, torch.nan)
            ok = torch.where(disc, ~torch.isnan(dd), ok)
            dl = torch.where(disc, dd, dl)
        out_d[un] = torch.where(ok, dl, 0.0)
        out_s[un] = ok.to(torch.int8)

    # constrained pairs with at least one candidate
    co = torch.nonzero(reach & cons_p & (p.nc > 0)).squeeze(1)
    if len(co):
        _score_constrained(p.take(co), co, stats, budget, allow_inadmissible, g, Xe, T,
                           max_elements, out_d, out_s, max(1, int(top)))  # fmt: skip
    deltas[t_np, j_np] = out_d.cpu().numpy()
    status[t_np, j_np] = out_s.cpu().numpy()
    return deltas, status


def candidate_counts(
    X: np.ndarray,
    cons: np.ndarray,
    events: np.ndarray,
    sign: np.ndarray,
    movable: np.ndarray,
    cand: tuple,
    ids: np.ndarray | None = None,
) -> tuple[int, int]:
    """(candidate evaluations, event-features) of scoring ``events``: the number of
    candidates the kernel enumerates, summed over the (event, feature) pairs of events in
    the constraint set, and the number of movable pairs with a non-zero sign (for
    throughput figures)."""
    import torch

    events = np.asarray(events, dtype=np.int64)
    sign = np.asarray(sign, dtype=np.float64)
    t_np, j_np = np.nonzero(np.asarray(movable)[events] & (sign != 0.0))
    if len(t_np) == 0:
        return 0, 0
    lo, hi = cand[0], cand[1]
    per_entry = lo.shape[0] > 1

    def T(a, dt=torch.float64):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dt)

    tt, jj = T(t_np, torch.int64), T(j_np, torch.int64)
    ev = T(events if ids is None else ids, torch.int64)[tt]
    p = _prepare_pairs(T(X[events]), T(lo[events] if per_entry else lo),
                       T(hi[events] if per_entry else hi),
                       tt, jj, tt if per_entry else torch.zeros_like(tt), ev, T(sign), cand, T,
                       torch)  # fmt: skip
    live = (p.dist > 0.0) & T(np.asarray(cons)[events], torch.bool)[tt]
    return int(torch.where(live, p.nc.clamp(min=0), 0).sum()), len(t_np)


def _score_constrained(p, where, stats, budget, allow_inadmissible, g, Xe, T, max_elements,
                       out_d, out_s, top=8) -> None:  # fmt: skip
    import torch

    f64 = torch.float64
    dev = Xe.device
    d = Xe.shape[1]
    mode, max_jsd, max_frob, norm0, alpha, beta = budget
    mean, cov, sig, Ccur, C0, valid, F2, W = (stats[k] for k in range(7, 15))
    valid = np.asarray(valid, dtype=bool)
    mean_t, cov_t, sig_t, Ccur_t = T(mean), T(cov), T(sig), T(Ccur)
    Cref_t = T(C0) if mode == _MODE_CUMULATIVE else Ccur_t
    hist = _Hist(stats, T)
    R = hist.Ssum.shape[0] // d
    P = len(where)
    r = p.w / float(W)
    # --- the five sums of row j of the correlation, feature by feature (kernel order)
    corr_j = T(valid, torch.bool)[p.j] & (sig_t[p.j] > 0.0)
    z = torch.zeros(P, dtype=f64, device=dev)
    sAA, sAB, sBB, scA, scB, scc, rowsq = (z.clone() for _ in range(7))
    for k in range(d):
        if not valid[k]:
            continue
        mk = corr_j & (p.j != k)
        sk = sig_t[k]
        A = cov_t[p.j, k] / sk
        B = r * (Xe[p.t, k] - mean_t[k]) / sk
        c = Cref_t[p.j, k]
        e = Ccur_t[p.j, k] - c
        sAA = torch.where(mk, sAA + A * A, sAA)
        sAB = torch.where(mk, sAB + A * B, sAB)
        sBB = torch.where(mk, sBB + B * B, sBB)
        scA = torch.where(mk, scA + c * A, scA)
        scB = torch.where(mk, scB + c * B, scB)
        scc = torch.where(mk, scc + c * c, scc)
        rowsq = torch.where(mk, rowsq + e * e, rowsq)
    Rres = float(F2[0]) - 2.0 * rowsq
    varj = cov_t[p.j, p.j]
    dxj = p.xj - mean_t[p.j]
    # --- the JSD pieces that do not depend on the candidate, every row of feature j
    rows = torch.arange(R, device=dev)[None, :] * d + p.j[:, None]  # (P, R)
    a = hist.slot(p.xj[:, None], rows)
    ha = hist.H[rows, a]
    ha2 = ha - p.w[:, None]
    Tq = hist.Tq[rows]
    pa = hist.P0[rows, a]
    base = hist.Ssum[rows] + _f(pa, ha2 / Tq) - _f(pa, ha / Tq)
    fastA = (ha >= 0.0) & (ha2 >= 0.0)
    max_jsd2 = max_jsd * max_jsd
    maxF2 = (max_frob * norm0) ** 2 if mode == _MODE_CUMULATIVE else 0.5 * max_frob * max_frob
    lim0 = hist.lim[rows[:, 0]][:, None]

    def row_sum(sel, rr, xn, live):
        """Σf of histogram row ``rr`` of the pairs ``sel`` if their value became ``xn``
        ((P, K) candidates; the O(slots) branch only where ``live``): the kernel's
        ``_row_after``."""
        row = rows[sel, rr][:, None]
        ar = a[sel, rr][:, None]
        wq = p.w[sel][:, None]
        b = hist.slot(xn, row)
        k = row * hist.Ks + b
        hb = hist.Hf[k]
        hb2 = hb + wq
        S = base[sel, rr][:, None] + _f(hist.P0f[k], hb2 / Tq[sel, rr][:, None]) - hist.F1[k]
        same = b == ar
        S = torch.where(same, hist.Ssum[row], S)
        slow = live & ~same & ~(fastA[sel, rr][:, None] & (hb >= 0.0) & (hb2 >= 0.0))
        if bool(slow.any()):
            ix = torch.nonzero(slow, as_tuple=True)
            rq, aq, bq = row.expand_as(b)[ix], ar.expand_as(b)[ix], b[ix]
            haq = ha[sel, rr][:, None].expand_as(b)[ix]
            ha2q = ha2[sel, rr][:, None].expand_as(b)[ix]
            hbq, hb2q = hb[ix], hb2[ix]
            Tq2 = (
                hist.Tq[rq]
                - haq.clamp(min=0.0)
                + ha2q.clamp(min=0.0)
                - hbq.clamp(min=0.0)
                + hb2q.clamp(min=0.0)
            )
            # the row sum depends on (pair, slot b) only: once per distinct pair (the
            # kernel's per-row cache of the last slot does the same)
            key = ix[0] * hist.Ks + bq
            uk, inv = torch.unique(key, return_inverse=True)
            first = torch.full_like(uk, len(key)).scatter_reduce(
                0, inv, torch.arange(len(key), device=dev), reduce="amin"
            )
            Tq2u = Tq2[first]
            pos = Tq2u > 0.0
            Su = torch.full_like(Tq2u, torch.inf)
            if bool(pos.any()):
                fp = first[pos]
                Su[pos] = hist.row_slow(
                    rq[fp], aq[fp], bq[fp], ha2q[fp], hb2q[fp], Tq2u[pos], max_elements
                )
            S = S.index_put(ix, Su[inv])
        return S, hist.lim[row]

    def extra_rows_bad(sel, xn, live):
        bad = torch.zeros_like(live)
        for rr in range(1, R):
            S, lim = row_sum(sel, rr, xn, live)
            bad = bad | (S > lim)
        return bad

    # --- candidates, in chunks of pairs with similar counts.  The score needs the own
    # binning (row 0) only; the extra rows of the binning-robust budget are checked for the
    # best TOP candidates of each pair in (score, index) order, and for every candidate of
    # the pairs where none of those is admissible (the kernel's choice either way)
    order = torch.argsort(p.nc, descending=True)
    nc_sorted = p.nc[order].cpu().numpy()
    s0 = 0
    while s0 < P:
        C = int(nc_sorted[s0])
        step = max(1, max_elements // max(C, 1))
        sel = order[s0 : s0 + step]
        s0 += step
        q = p.take(sel)
        c = torch.arange(C, device=dev)
        delta = _cand_delta(q, c, g)
        stop = torch.isnan(delta) | (c[None, :] >= q.nc[:, None])
        live = torch.cumsum(stop.to(torch.int64), dim=1) == 0  # the kernel stops at a NaN
        delta = torch.where(live, delta, 0.0)
        xn = q.xj[:, None] + delta
        S0, _ = row_sum(sel, 0, xn, live)
        jsd_ok0 = ~(S0 > lim0[sel]) & ~(S0 > max_jsd2)
        jsd = torch.sqrt(torch.where(S0 > 0.0, S0, 0.0))
        rq_ = r[sel][:, None]
        v = varj[sel][:, None] + 2.0 * delta * rq_ * dxj[sel][:, None]
        v = v + delta * delta * rq_ * (1.0 - rq_)
        v = torch.where(v < 1e-300, 1e-300, v)
        num = sAA[sel][:, None] + 2.0 * delta * sAB[sel][:, None]
        num = num + delta * delta * sBB[sel][:, None]
        rs = num / v - 2.0 * (scA[sel][:, None] + delta * scB[sel][:, None]) / torch.sqrt(v)
        rs = rs + scc[sel][:, None]
        rs = torch.where(rs < 0.0, 0.0, rs)
        rs = torch.where(corr_j[sel][:, None], rs, 0.0)
        if mode == _MODE_CUMULATIVE:
            F2n = Rres[sel][:, None] + 2.0 * rs
            F2n = torch.where(F2n < 0.0, 0.0, F2n)
            corr_term = torch.sqrt(F2n) / norm0
            corr_ok = F2n <= maxF2
        else:
            corr_term = torch.sqrt(2.0 * rs)
            corr_ok = rs <= maxF2
        sc = alpha * jsd + beta * corr_term
        consider = live & (delta != 0.0)
        key = torch.where(consider & jsd_ok0 & corr_ok, sc, torch.inf)
        if R == 1:
            best_d, found = _first_min(key, delta)
        else:
            kt = min(top, C)
            o = torch.argsort(key, dim=1, stable=True)[:, :kt]
            lt = torch.gather(key, 1, o) < torch.inf
            adm = lt & ~extra_rows_bad(sel, torch.gather(xn, 1, o), lt)
            found = adm.any(dim=1)
            ia = torch.where(adm, torch.arange(kt, device=dev)[None, :], kt).min(dim=1).values
            pick = torch.gather(o, 1, ia.clamp(max=kt - 1)[:, None])
            best_d = torch.gather(delta, 1, pick)[:, 0]
            rest = torch.nonzero(~found & ((key < torch.inf).sum(dim=1) > kt)).squeeze(1)
            if len(rest):
                lr = live[rest]
                bad = extra_rows_bad(sel[rest], xn[rest], lr & (key[rest] < torch.inf))
                d2, f2 = _first_min(torch.where(bad, torch.inf, key[rest]), delta[rest])
                best_d[rest] = d2
                found[rest] = f2
        res_d = torch.where(found, best_d, 0.0)
        res_s = found.to(torch.int8)
        if allow_inadmissible:
            any_d, any_f = _first_min(torch.where(consider, sc, torch.inf), delta)
            two = ~found & any_f
            res_d = torch.where(two, any_d, res_d)
            res_s = torch.where(two, 2, res_s).to(torch.int8)
        out_d[where[sel]] = res_d
        out_s[where[sel]] = res_s


def _first_min(sc, delta):
    """(delta of the first candidate with the minimal finite score, whether there is one):
    the kernel's strict ``<`` in index order (NaN and inf never win)."""
    import torch

    sc = torch.where(sc < torch.inf, sc, torch.inf)
    mn = sc.min(dim=1).values
    C = sc.shape[1]
    idx = torch.where(sc == mn[:, None], torch.arange(C, device=sc.device)[None, :], C)
    idx = idx.min(dim=1).values
    found = mn < torch.inf
    pick = torch.gather(delta, 1, idx.clamp(max=C - 1)[:, None])[:, 0]
    return pick, found
