"""Jensen–Shannon distance (base 2, in [0, 1]) between feature histograms.

:class:`HistogramTracker` keeps, per feature, the weighted counts of the current data
and the clean reference, together with the running sum

    S_j = Σ_k f(p_k, q_k),   f(p, q) = ½[p log2(2p/(p+q)) + q log2(2q/(p+q))]

so that JSD_j = sqrt(S_j).  Moving one value changes two slots only, so both the
update and the evaluation of a candidate move cost O(1).
"""

from __future__ import annotations

import numpy as np

from advsyst.errors import InputError
from advsyst.stats.binning import FeatureBinning, check_finite

__all__ = ["js_term", "jsd", "jsd_per_feature", "HistogramTracker"]


def js_term(p: np.ndarray | float, q: np.ndarray | float) -> np.ndarray:
    """Element-wise ½[p log2(2p/(p+q)) + q log2(2q/(p+q))] with 0·log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = p + q
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.where(p > 0, p * np.log2(np.where(p > 0, 2 * p / np.where(m > 0, m, 1), 1)), 0.0)
        tq = np.where(q > 0, q * np.log2(np.where(q > 0, 2 * q / np.where(m > 0, m, 1), 1)), 0.0)
    return 0.5 * (tp + tq)


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2) between two (unnormalised) histograms.

    Signed event weights can leave a slot with negative net content: such a slot counts
    as zero and both histograms are renormalised over what remains (the convention of
    the attack engine, :mod:`advsyst.attacks._kernels`).
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, None)
    sp, sq = p.sum(), q.sum()
    if sp <= 0 or sq <= 0:
        raise InputError(
            "Jensen-Shannon distance of a histogram without positive content is undefined"
        )
    return float(np.sqrt(max(js_term(p / sp, q / sq).sum(), 0.0)))


def jsd_per_feature(
    X_ref: np.ndarray,
    X: np.ndarray,
    num_bins: int = 200,
    weights: np.ndarray | None = None,
    binning: FeatureBinning | None = None,
) -> np.ndarray:
    """JSD of every feature of ``X`` to the same feature of ``X_ref`` (brute force).

    Bins come from ``X_ref`` (see :class:`FeatureBinning`) unless ``binning`` is given.
    ``weights`` apply to both sets (same events, moved values).
    """
    X_ref = check_finite(X_ref, "X_ref")
    X = check_finite(X, "X")
    if X.shape[1] != X_ref.shape[1]:
        raise InputError(f"feature counts differ: {X_ref.shape[1]} (reference) vs {X.shape[1]}")
    binning = binning or FeatureBinning.from_data(X_ref, num_bins)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    wr = w if (w is None or len(X_ref) == len(X)) else None
    H0 = binning.histogram(X_ref, wr)
    H = binning.histogram(X, w)
    return np.array([jsd(H0[j], H[j]) for j in range(X.shape[1])])


class HistogramTracker:
    """Weighted per-feature histograms with O(1) JSD updates.

    Parameters
    ----------
    binning
        Fixed edges (from the clean data).
    reference
        Clean counts, shape (d, slots).
    counts
        Current counts, shape (d, slots); equal totals per feature.
    """

    def __init__(self, binning: FeatureBinning, reference: np.ndarray, counts: np.ndarray):
        self.binning = binning
        self.reference = np.array(reference, dtype=np.float64)
        self.counts = np.array(counts, dtype=np.float64)
        self.total = float(self.reference[0].sum()) if len(self.reference) else 0.0
        self.resync()

    @classmethod
    def from_data(
        cls,
        X: np.ndarray,
        num_bins: int = 200,
        weights: np.ndarray | None = None,
        binning: FeatureBinning | None = None,
    ) -> HistogramTracker:
        X = check_finite(X)
        binning = binning or FeatureBinning.from_data(X, num_bins)
        H = binning.histogram(X, weights)
        return cls(binning, H, H)

    # -- state ----------------------------------------------------------------
    def resync(self) -> None:
        """Recompute the running sums S_j from the counts (drops rounding drift)."""
        if self.total <= 0:
            self.S = np.zeros(len(self.counts))
            return
        self.S = js_term(self.reference / self.total, self.counts / self.total).sum(axis=1)

    def jsd(self) -> np.ndarray:
        """Current JSD of every feature to its reference."""
        return np.sqrt(np.maximum(self.S, 0.0))

    def slot(self, j: int, x: float) -> int:
        """Slot index of value ``x`` of feature ``j`` (see :class:`FeatureBinning`)."""
        e = self.binning.edges[j]
        if x == e[-1]:
            return self.binning.num_bins
        return int(np.searchsorted(e, x, side="right"))

    def candidate_jsd(self, j: int, old: float, new: float, w: float = 1.0) -> float:
        """JSD of feature ``j`` if one value of weight ``w`` moved from ``old`` to ``new``."""
        dS = self._delta_S(j, self.slot(j, old), self.slot(j, new), w)
        return float(np.sqrt(max(self.S[j] + dS, 0.0)))

    def _delta_S(self, j: int, a: int, b: int, w: float) -> float:
        if a == b or self.total <= 0:
            return 0.0
        T = self.total
        p, q = self.reference[j], self.counts[j]
        old = js_term(p[a] / T, q[a] / T) + js_term(p[b] / T, q[b] / T)
        new = js_term(p[a] / T, (q[a] - w) / T) + js_term(p[b] / T, (q[b] + w) / T)
        return float(new - old)

    def move(self, j: int, old: float, new: float, w: float = 1.0) -> None:
        """Apply the move of one value of feature ``j`` (weight ``w``)."""
        a, b = self.slot(j, old), self.slot(j, new)
        self.S[j] += self._delta_S(j, a, b, w)
        self.counts[j, a] -= w
        self.counts[j, b] += w

    # -- merging --------------------------------------------------------------
    def merge(self, other: HistogramTracker) -> HistogramTracker:
        """Tracker of the union of both event sets (same binning required)."""
        if not np.array_equal(self.binning.edges, other.binning.edges):
            raise InputError("cannot merge histogram trackers with different binning")
        out = HistogramTracker.__new__(HistogramTracker)
        out.binning = self.binning
        out.reference = self.reference + other.reference
        out.counts = self.counts + other.counts
        out.total = self.total + other.total
        out.resync()
        return out

    __add__ = merge
