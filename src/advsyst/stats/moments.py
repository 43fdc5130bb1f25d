"""Weighted first and second moments with exact incremental updates.

Convention used everywhere in advsyst: with weights w_i and W = Σ w_i,

    μ = Σ w x / W,   cov = Σ w (x − μ)(x − μ)ᵀ / W   (no Bessel correction),
    ρ_jk = cov_jk / sqrt(cov_jj cov_kk).

Moving entry x_ij (weight w) by δ changes only row/column j:

    cov_jk(δ) = cov_jk + δ (w/W)(x_ik − μ_k)                       (k ≠ j)
    var_j(δ)  = var_j + 2δ (w/W)(x_ij − μ_j) + δ² (w/W)(1 − w/W)

so ‖C(δ) − C_ref‖²_F is a closed-form function of δ after an O(d) preparation
(:meth:`MomentTracker.candidate_frobenius_sq`).
"""

from __future__ import annotations

import numpy as np

from advsyst.errors import InputError
from advsyst.stats.binning import check_finite

__all__ = ["MomentTracker", "pearson_correlation", "delta_fn", "zero_variance_features"]


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
    """ΔFN = ‖C(X) − C(X_ref)‖_F / ‖C(X_ref)‖_F by direct recomputation."""
    C0 = pearson_correlation(X_ref, weights, valid)
    C = pearson_correlation(X, weights, valid)
    return float(np.linalg.norm(C - C0) / np.linalg.norm(C0))


class MomentTracker:
    """Σw, weighted mean and covariance (float64), mergeable and exactly updatable."""

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

    def move(self, x_row: np.ndarray, j: int, delta: float, w: float = 1.0) -> None:
        """Apply x_ij -> x_ij + delta for an event with features ``x_row`` (before the move)."""
        r = w / self.W
        dk = (x_row - self.mean) * (delta * r)
        dvar = 2.0 * delta * r * (x_row[j] - self.mean[j]) + delta * delta * r * (1.0 - r)
        self.cov[j, :] += dk
        self.cov[:, j] += dk
        self.cov[j, j] += dvar - 2.0 * dk[j]
        self.mean[j] += delta * r

    def candidate_frobenius_sq(
        self,
        x_row: np.ndarray,
        j: int,
        deltas: np.ndarray,
        C_ref: np.ndarray,
        w: float = 1.0,
        valid: np.ndarray | None = None,
    ) -> np.ndarray:
        """Σ_{k≠j} (ρ_jk(δ) − C_ref_jk)² for each δ, from the closed form (O(d) + O(1)/δ).

        The full ‖C(δ) − C_ref‖²_F is ``R + 2·this`` where R is the part without row j.
        """
        deltas = np.asarray(deltas, dtype=np.float64)
        d = self.n_features
        ok = np.ones(d, bool) if valid is None else np.asarray(valid, bool).copy()
        ok[j] = False
        sig = np.sqrt(np.where(ok, np.diag(self.cov), 1.0))
        r = w / self.W
        A = np.where(ok, self.cov[j] / sig, 0.0)
        B = np.where(ok, r * (x_row - self.mean) / sig, 0.0)
        c = np.where(ok, C_ref[j], 0.0)
        sAA, sAB, sBB = A @ A, A @ B, B @ B
        scA, scB, scc = c @ A, c @ B, c @ c
        v = self.cov[j, j] + 2 * deltas * r * (x_row[j] - self.mean[j]) + deltas**2 * r * (1 - r)
        v = np.maximum(v, 1e-300)
        return (
            (sAA + 2 * deltas * sAB + deltas**2 * sBB) / v
            - 2 * (scA + deltas * scB) / np.sqrt(v)
            + scc
        )
