"""Weighted first and second moments and Pearson correlation by direct recomputation.

Convention used everywhere in advsyst: with weights w_i and W = Σ w_i,

    μ = Σ w x / W,   cov = Σ w (x − μ)(x − μ)ᵀ / W   (no Bessel correction),
    ρ_jk = cov_jk / sqrt(cov_jj cov_kk).

These functions are the batch reference.  The attack updates the same statistics
incrementally in the numba kernels of :mod:`advsyst.attacks._kernels` (the only
incremental implementation; its module docstring has the closed forms), and the tests
compare the kernels with the functions here.
"""

from __future__ import annotations

import numpy as np

from advsyst.errors import InputError
from advsyst.stats.binning import check_finite

__all__ = [
    "MomentTracker",
    "pearson_correlation",
    "delta_fn",
    "delta_fn_from_cov",
    "zero_variance_features",
]


def zero_variance_features(X: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Indices of features whose (weighted) variance is zero."""
    t = MomentTracker.from_data(X, weights)
    return np.nonzero(~(np.diag(t.cov) > 0))[0]


def pearson_correlation(
    X: np.ndarray, weights: np.ndarray | None = None, valid: np.ndarray | None = None
) -> np.ndarray:
    """Weighted Pearson correlation matrix by direct recomputation.

    Zero-variance features raise :class:`InputError` unless excluded through ``valid``
    (a boolean mask); excluded rows and columns are set to zero.
    """
    X = check_finite(X)
    w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64)
    W = w.sum()
    mu = (w[:, None] * X).sum(axis=0) / W
    Z = X - mu
    cov = (w[:, None] * Z).T @ Z / W
    return _corr_from_cov(cov, valid)


def _corr_from_cov(cov: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    var = np.diag(cov).copy()
    ok = var > 0 if valid is None else np.asarray(valid, dtype=bool) & (var > 0)
    if valid is None and not ok.all():
        raise InputError(
            f"zero-variance feature(s) {np.nonzero(~ok)[0].tolist()}: their correlation is "
            "undefined (exclude them, e.g. mark them immutable)"
        )
    if valid is not None and (np.asarray(valid, bool) & ~(var > 0)).any():
        raise InputError(
            f"feature(s) {np.nonzero(np.asarray(valid, bool) & ~(var > 0))[0].tolist()} "
            "have zero variance but are marked valid"
        )
    s = np.where(ok, np.sqrt(np.where(ok, var, 1.0)), 1.0)
    C = cov / s[:, None] / s[None, :]
    C[~ok, :] = 0.0
    C[:, ~ok] = 0.0
    return C


def delta_fn(
    X_ref: np.ndarray,
    X: np.ndarray,
    weights: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> float:
    """ΔFN = ‖C(X) − C(X_ref)‖_F / ‖C(X_ref)‖_F by direct recomputation.

    The reference norm is zero only when ``valid`` excludes every feature; then both
    matrices are zero and ΔFN is defined as 0 (nothing is monitored), as in the attack.
    """
    C0 = pearson_correlation(X_ref, weights, valid)
    C = pearson_correlation(X, weights, valid)
    return _delta_fn_corr(C0, C)


def delta_fn_from_cov(
    cov_ref: np.ndarray, cov: np.ndarray, valid: np.ndarray | None = None
) -> float:
    """:func:`delta_fn` from the two weighted covariance matrices (e.g. summed from
    per-shard partial covariances about the global means and divided by Σw)."""
    return _delta_fn_corr(_corr_from_cov(cov_ref, valid), _corr_from_cov(cov, valid))


def _delta_fn_corr(C0: np.ndarray, C: np.ndarray) -> float:
    norm0 = float(np.linalg.norm(C0))
    diff = float(np.linalg.norm(C - C0))
    if norm0 > 0:
        return diff / norm0
    if diff == 0:
        return 0.0
    raise InputError("delta_fn: the reference correlation matrix is zero but the other is not")


class MomentTracker:
    """Σw, weighted mean and covariance (float64) of a set of events, mergeable with ``+``
    (e.g. over chunks).  Not updated per move: the attack's incremental statistics are the
    kernels of :mod:`advsyst.attacks._kernels`."""

    def __init__(self, W: float, mean: np.ndarray, cov: np.ndarray):
        self.W = float(W)
        self.mean = np.array(mean, dtype=np.float64)
        self.cov = np.array(cov, dtype=np.float64)

    @classmethod
    def from_data(cls, X: np.ndarray, weights: np.ndarray | None = None) -> MomentTracker:
        X = check_finite(X)
        w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64)
        if len(w) != len(X):
            raise InputError(f"{len(w)} weights for {len(X)} events")
        W = float(w.sum())
        if len(X) == 0 or W <= 0:
            return cls(0.0, np.zeros(X.shape[1]), np.zeros((X.shape[1], X.shape[1])))
        mu = (w[:, None] * X).sum(axis=0) / W
        Z = X - mu
        return cls(W, mu, (w[:, None] * Z).T @ Z / W)

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def merge(self, other: MomentTracker) -> MomentTracker:
        """Moments of the union (Chan et al.'s pairwise combination)."""
        if other.n_features != self.n_features:
            raise InputError("cannot merge moment trackers of different feature counts")
        W = self.W + other.W
        if W <= 0:
            return MomentTracker(0.0, self.mean.copy(), self.cov.copy())
        d = other.mean - self.mean
        mean = self.mean + d * (other.W / W)
        M = self.cov * self.W + other.cov * other.W + np.outer(d, d) * (self.W * other.W / W)
        return MomentTracker(W, mean, M / W)

    __add__ = merge

    def correlation(self, valid: np.ndarray | None = None) -> np.ndarray:
        return _corr_from_cov(self.cov, valid)
