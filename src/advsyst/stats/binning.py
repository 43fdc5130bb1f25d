"""Fixed per-feature binning taken from the clean data.

Each feature gets ``num_bins`` equal-width bins spanning its clean [min, max], plus an
underflow bin (index 0) and an overflow bin (index ``num_bins + 1``), so that mass moved
outside the clean range is still seen by the Jensen–Shannon distance.  A value equal to
the upper edge falls in the last inner bin (the NumPy ``histogram`` convention); every
other value ``x`` falls in the bin ``k`` with ``edges[k-1] <= x < edges[k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advsyst.errors import InputError

__all__ = ["FeatureBinning", "check_finite"]


def check_finite(X: np.ndarray, name: str = "X") -> np.ndarray:
    """Return ``X`` as float64 (n, d); raise :class:`InputError` naming NaN/inf columns."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"{name} must be a 2-D (events, features) array, got shape {X.shape}")
    bad = ~np.isfinite(X)
    if bad.any():
        cols = np.unique(np.nonzero(bad)[1])
        raise InputError(
            f"{name} contains {int(bad.sum())} NaN/inf values in feature column(s) "
            f"{cols[:10].tolist()}{' ...' if len(cols) > 10 else ''}"
        )
    return X


@dataclass(frozen=True)
class FeatureBinning:
    """Edges of every feature: ``edges`` has shape (d, num_bins + 1)."""

    edges: np.ndarray

    @property
    def num_bins(self) -> int:
        return self.edges.shape[1] - 1

    @property
    def n_features(self) -> int:
        return self.edges.shape[0]

    @property
    def n_slots(self) -> int:
        """Inner bins plus under- and overflow."""
        return self.num_bins + 2

    @classmethod
    def from_data(cls, X: np.ndarray, num_bins: int = 200) -> FeatureBinning:
        X = check_finite(X)
        if num_bins < 1:
            raise InputError(f"num_bins must be >= 1, got {num_bins}")
        if len(X) == 0:
            raise InputError("cannot define histogram bins from zero events")
        lo, hi = X.min(axis=0), X.max(axis=0)
        hi = np.where(hi > lo, hi, lo + 1.0)  # constant feature: one unit-wide range
        t = np.linspace(0.0, 1.0, num_bins + 1)
        edges = lo[:, None] + (hi - lo)[:, None] * t[None, :]
        edges[:, -1] = hi  # exact upper edge
        return cls(edges=np.ascontiguousarray(edges))

    @classmethod
    def equal_width(
        cls, lo: np.ndarray, hi: np.ndarray, num_bins: int, offset: float = 0.0
    ) -> FeatureBinning:
        """``num_bins`` equal-width bins per feature over [lo, hi], shifted by ``offset``.

        ``offset`` is a fraction of the bin width in [0, 1): the edges are
        ``lo + (k - offset) * width``; with a non-zero offset one more bin is added so that
        the shifted bins still cover the whole [lo, hi] (``num_bins + 1`` inner bins).
        ``offset=0`` gives exactly :meth:`from_data`'s edges for the same range.
        """
        lo = np.atleast_1d(np.asarray(lo, dtype=np.float64))
        hi = np.atleast_1d(np.asarray(hi, dtype=np.float64))
        if num_bins < 1:
            raise InputError(f"num_bins must be >= 1, got {num_bins}")
        if not 0.0 <= offset < 1.0:
            raise InputError(f"offset must be a fraction of a bin in [0, 1), got {offset}")
        hi = np.where(hi > lo, hi, lo + 1.0)
        if offset == 0.0:
            t = np.linspace(0.0, 1.0, num_bins + 1)
            edges = lo[:, None] + (hi - lo)[:, None] * t[None, :]
            edges[:, -1] = hi
        else:
            width = (hi - lo) / num_bins
            k = np.arange(num_bins + 2) - offset
            edges = lo[:, None] + width[:, None] * k[None, :]
        return cls(edges=np.ascontiguousarray(edges))

    def index(self, X: np.ndarray) -> np.ndarray:
        """Slot index (0 = underflow, 1..num_bins, num_bins+1 = overflow), shape like X."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty(X.shape, dtype=np.int64)
        K = self.num_bins
        for j in range(self.n_features):
            e = self.edges[j]
            b = np.searchsorted(e, X[..., j], side="right")
            b[X[..., j] == e[-1]] = K
            out[..., j] = b
        return out

    def histogram(self, X: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Weighted counts per feature and slot, shape (d, num_bins + 2), by direct recount."""
        idx = self.index(X)
        w = np.ones(len(idx)) if weights is None else np.asarray(weights, dtype=np.float64)
        H = np.zeros((self.n_features, self.n_slots))
        for j in range(self.n_features):
            H[j] = np.bincount(idx[:, j], weights=w, minlength=self.n_slots)
        return H
