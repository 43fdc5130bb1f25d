"""The final recheck of CONSERVAttack's budgets from per-part reductions.

The final metrics of an attack (fooling ratio, per-feature JSD at the attack's binning and
at every binning the binning-robust budget tracks, ΔFN, signed-weight slots, envelope
usage, counts, AUROC) are computed here from small pieces that every *part* of the data
computes on its own rows, so that a sharded run never brings its events together:

1. :func:`final_part`: the clean and adversarial stacked histograms of the constraint set
   at every tracked binning (Σw), Σw and Σw·x of both, the fooling sums, counts, the
   envelope counts and the bound check (entries moved outside their bounds), and with
   ``keep_order`` the events whose group is out of order (:func:`order_violations`).
2. :func:`final_covs`: Σw·(x−mean)(x−mean)ᵀ of both, at the global means of step 1.
3. The envelope quantiles are exact order statistics of the parts' sorted ratios
   (:func:`envelope_ratios`), found by :func:`order_statistics`: a k-ary search on the
   float64 bit patterns, each step one :func:`count_le` per part (about 11 round trips of
   ``O(#quantiles · fanout)`` numbers, whatever the number of events).
4. AUROC: a rank statistic has no fixed-size exact reduction, so :func:`auroc_part` sends
   the clean and the adversarial score of every event with its label (and its weight
   unless all are 1): 2 floats and a byte per event, the only piece whose size grows with
   the data; :func:`auroc_from_parts` evaluates :func:`advsyst.attacks.metrics.auroc` on
   the union, exactly.

:meth:`advsyst.attacks.ConservAttack.run` uses the same functions with its whole data set
as one part; the sharded attack sums the parts of its shards.  The statistics themselves
are those of :mod:`advsyst.stats` (``FeatureBinning.histogram``, ``histogram_jsd``,
``delta_fn_from_cov``), the tests compare them with brute-force recomputations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from advsyst.stats import FeatureBinning

__all__ = [
    "stacked_histograms",
    "partial_sums",
    "partial_cov",
    "fooling_sums",
    "final_part",
    "final_covs",
    "envelope_ratios",
    "count_le",
    "order_statistics",
    "quantiles",
    "auroc_part",
    "auroc_from_parts",
    "sum_parts",
    "order_violations",
]

#: the envelope-usage quantiles reported in ``metrics["envelope"]``
ENVELOPE_QUANTILES = (0.5, 0.9, 0.99, 1.0)
_INF_KEY = int(np.float64(np.inf).view(np.int64))


def stacked_histograms(binnings: Sequence[FeatureBinning], Xc: np.ndarray, wc: np.ndarray):
    """The Σw histograms of ``Xc`` at every binning, stacked (binning r, feature j) on row
    ``r·d + j``, slots padded with zeros to the widest binning (+2: under/overflow)."""
    d = binnings[0].n_features
    kmax = max(b.num_bins for b in binnings)
    H = np.zeros((len(binnings) * d, kmax + 2))
    for r, b in enumerate(binnings):
        H[r * d : (r + 1) * d, : b.n_slots] = b.histogram(Xc, wc)
    return H


def partial_sums(X: np.ndarray, w: np.ndarray, cons: np.ndarray, binnings):
    """One part's first-pass sums over its constraint events: (stacked histograms of every
    binning, Σw, Σw·x)."""
    Xc, wc = X[cons], w[cons]
    return (stacked_histograms(binnings, Xc, wc), *_moments1(Xc, wc))


def _moments1(Xc: np.ndarray, wc: np.ndarray) -> tuple[float, np.ndarray]:
    return float(wc.sum()), (wc[:, None] * Xc).sum(axis=0)


def partial_cov(X: np.ndarray, w: np.ndarray, cons: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """One part's Σw·(x−mean)(x−mean)ᵀ over its constraint events."""
    Xc, wc = X[cons], w[cons]
    Z = Xc - mean
    return (wc[:, None] * Z).T @ Z


def fooling_sums(pred_clean, pred_adv, am, w) -> tuple[float, float]:
    """(Σw over the attacked events, Σw over the attacked events whose prediction flipped):
    the fooling ratio is their quotient (0 when the first is not positive)."""
    wa = w[am]
    return float(wa.sum()), float((wa * (pred_clean[am] != pred_adv[am])).sum())


def final_part(
    X0: np.ndarray,
    X: np.ndarray,
    w: np.ndarray,
    am: np.ndarray,
    cm: np.ndarray,
    pred_clean: np.ndarray,
    pred_adv: np.ndarray,
    binnings: Sequence[FeatureBinning],
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    env: np.ndarray | None = None,
    y: np.ndarray | None = None,
    groups: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """One part's first reductions for the final recheck (size O(Σ_r d·bins_r), whatever
    the number of rows): ``H0``/``H`` the clean and adversarial Σw histograms of the
    constraint set at every binning (one (d, slots) array per binning).  ``lo``/``hi``: the bounds ((1, d) or per entry) that moved entries
    which started inside them must respect; ``env``: the per-entry envelope widths (None without an envelope);
    ``groups``: the ``keep_order`` groups (then ``events_out_of_order``: :func:`order_violations`)."""
    Xc0, Xc, wc = X0[cm], X[cm], w[cm]
    W, swx0 = _moments1(Xc0, wc)
    moved = X != X0
    out: dict[str, Any] = {
        "H0": [b.histogram(Xc0, wc) for b in binnings],
        "H": [b.histogram(Xc, wc) for b in binnings],
        "W": W,
        "swx0": swx0,
        "swx": _moments1(Xc, wc)[1],
        "fooling": np.array(fooling_sums(pred_clean, pred_adv, am, w)),
        "n_fooled": int((am & (pred_adv != pred_clean)).sum()),
        "n_events": len(X),
        "n_attacked": int(am.sum()),
        "n_constraint": int(cm.sum()),
        "n_moved_attacked": int(moved.any(axis=1)[am].sum()),
        "n_out_of_bounds": 0,
        "labels": None if y is None else np.unique(y),
    }
    if lo is not None:  # entries that start outside user bounds may move (not out)
        inside0 = (X0 >= lo) & (X0 <= hi)
        out["n_out_of_bounds"] = int((moved & inside0 & ((X < lo) | (X > hi))).sum())
    if env is not None:
        fin = np.isfinite(env)
        out["n_moved_entries"] = int((moved & fin).sum())
        out["n_entries_with_envelope"] = int(fin.sum())
    if groups:
        out["events_out_of_order"] = order_violations(X, groups)
    return out


def order_violations(X: np.ndarray, groups: Sequence[np.ndarray]) -> int:
    """Events of ``X`` in which a ``keep_order`` group (from
    :func:`advsyst.attacks.conservattack.resolve_order_groups`, each non-increasing along
    its columns) is not non-increasing, recomputed from scratch."""
    bad = np.zeros(len(X), dtype=bool)
    for g in groups:
        bad |= (np.diff(X[:, g], axis=1) > 0).any(axis=1)
    return int(bad.sum())


def final_covs(X0, X, w, cm, mean0, mean) -> tuple[np.ndarray, np.ndarray]:
    """One part's second reductions: the partial covariances of the clean and the
    adversarial constraint set at the global means."""
    return partial_cov(X0, w, cm, mean0), partial_cov(X, w, cm, mean)


def envelope_ratios(X0: np.ndarray, X: np.ndarray, env: np.ndarray) -> np.ndarray:
    """|x − x0| / envelope of every moved entry with an envelope, sorted (kept by the
    part, queried with :func:`count_le`)."""
    moved = (X != X0) & np.isfinite(env)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(X - X0)[moved] / env[moved]
    return np.sort(r)


def count_le(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` are <= each threshold."""
    return np.searchsorted(sorted_values, thresholds, side="right").astype(np.int64)


def _key_value(k: int) -> float:
    return float(np.int64(k).view(np.float64))


def order_statistics(
    count_fn: Callable[[np.ndarray], np.ndarray], ranks: Sequence[int], fanout: int = 64
) -> list[float]:
    """The values of rank ``ranks`` (0-based) of a multiset of non-negative floats (+inf
    allowed) spread over parts, exactly: ``count_fn(t)`` returns, summed over the parts, how
    many values are <= each threshold of ``t``.  A ``fanout``-ary search on the float64 bit
    patterns (monotone for non-negative floats): at most ⌈63 / log2(fanout)⌉ + 1 calls."""
    ranks = [int(r) for r in ranks]
    lo = [0] * len(ranks)
    hi = [_INF_KEY] * len(ranks)
    while True:
        todo = [i for i in range(len(ranks)) if lo[i] < hi[i]]
        if not todo:
            break
        keys: list[list[int]] = []
        for i in todo:
            span = hi[i] - lo[i]
            keys.append(sorted({lo[i] + span * j // fanout for j in range(fanout)}))
        flat = np.array([_key_value(k) for ks in keys for k in ks])
        counts = count_fn(flat)
        pos = 0
        for i, ks in zip(todo, keys):
            c = counts[pos : pos + len(ks)]
            pos += len(ks)
            need = ranks[i] + 1
            above = [k for k, n in zip(ks, c) if n >= need]
            below = [k for k, n in zip(ks, c) if n < need]
            if above:
                hi[i] = min(above)
            if below:
                lo[i] = max(below) + 1
    return [_key_value(k) for k in lo]


def quantiles(
    count_fn: Callable[[np.ndarray], np.ndarray], n: int, qs: Sequence[float]
) -> list[float]:
    """``np.quantile(values, q)`` (linear interpolation) of the ``n`` values that
    ``count_fn`` counts (see :func:`order_statistics`), for every ``q`` of ``qs``; 0.0
    when ``n == 0``."""
    if n == 0:
        return [0.0 for _ in qs]
    pairs = []
    for q in qs:
        h = (n - 1) * q  # numpy's virtual index for method="linear"
        f = int(np.floor(h))
        pairs.append((f, min(f + 1, n - 1), h - f))
    ranks = sorted({r for a, b, _ in pairs for r in (a, b)})
    vals = dict(zip(ranks, order_statistics(count_fn, ranks)))
    # numpy's own interpolation between the two order statistics
    return [float(np.quantile(np.array([vals[a], vals[b]]), g)) for a, b, g in pairs]


def auroc_part(y: np.ndarray, w: np.ndarray, scores: Sequence[np.ndarray]) -> dict[str, Any]:
    """One part's AUROC piece: its labels (int8), its weights (None when all are 1) and
    every score array (float64) — 2 floats and a byte per event for the clean and the
    adversarial scores (+ 1 float when weighted).  A rank statistic has no fixed-size
    exact reduction; :func:`auroc_from_parts` evaluates
    :func:`advsyst.attacks.metrics.auroc` on the union."""
    w = np.asarray(w, dtype=np.float64)
    return {
        "y": np.asarray(y).astype(np.int8),
        "w": None if bool(np.all(w == 1.0)) else w,
        "scores": [np.asarray(s, dtype=np.float64) for s in scores],
    }


def auroc_from_parts(parts: Sequence[dict[str, Any]]) -> list[float]:
    """:func:`advsyst.attacks.metrics.auroc` of every score on the union of the parts'
    :func:`auroc_part` pieces."""
    from advsyst.attacks.metrics import auroc

    y = np.concatenate([p["y"] for p in parts])
    w = np.concatenate([np.ones(len(p["y"])) if p["w"] is None else p["w"] for p in parts])
    k = len(parts[0]["scores"])
    return [auroc(y, np.concatenate([p["scores"][i] for p in parts]), w) for i in range(k)]


def sum_parts(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The parts' :func:`final_part` dictionaries added key by key (labels: union)."""
    out: dict[str, Any] = {}
    for k, v in parts[0].items():
        vals = [p[k] for p in parts]
        if k == "labels":
            out[k] = None if v is None else np.unique(np.concatenate(vals))
            continue
        if isinstance(v, list):  # per binning
            out[k] = [_add([p[r] for p in vals]) for r in range(len(v))]
        else:
            out[k] = _add(vals)
    return out


def _add(vals: list) -> Any:
    acc = vals[0]
    for x in vals[1:]:
        acc = acc + x
    return acc
