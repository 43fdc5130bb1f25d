"""Distance correlation between features on a (sub)sample of events."""

from __future__ import annotations

import numpy as np

from advsyst.errors import InputError
from advsyst.stats.binning import check_finite

__all__ = ["distance_correlation", "distance_correlation_matrix"]


def _centered_distances(x: np.ndarray) -> np.ndarray:
    D = np.abs(x[:, None] - x[None, :])
    return D - D.mean(axis=0)[None, :] - D.mean(axis=1)[:, None] + D.mean()


def distance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Székely's (biased, V-statistic) distance correlation of two 1-D samples, O(m²)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    A, B = _centered_distances(x), _centered_distances(y)
    dxy, dxx, dyy = (A * B).mean(), (A * A).mean(), (B * B).mean()
    if dxx <= 0 or dyy <= 0:
        return 0.0
    return float(np.sqrt(max(dxy, 0.0) / np.sqrt(dxx * dyy)))


def distance_correlation_matrix(
    X: np.ndarray,
    subsample: int | None = 2000,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """(d, d) matrix of pairwise distance correlations between the columns of ``X``.

    ``subsample`` events are drawn without replacement (probability ∝ weight when given)
    with a seeded generator; ``None`` uses every event (memory O(n²)).
    """
    X = check_finite(X)
    n, d = X.shape
    if n < 2:
        raise InputError("distance correlation needs at least 2 events")
    if subsample is not None and subsample < n:
        rng = np.random.default_rng(seed)
        p = None
        if weights is not None:
            w = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
            p = w / w.sum()
        X = X[rng.choice(n, size=subsample, replace=False, p=p)]
    cents = [_centered_distances(X[:, j]) for j in range(d)]
    norms = np.array([(c * c).mean() for c in cents])
    R = np.eye(d)
    for j in range(d):
        for k in range(j + 1, d):
            den = np.sqrt(norms[j] * norms[k])
            v = 0.0 if den <= 0 else np.sqrt(max((cents[j] * cents[k]).mean(), 0.0) / den)
            R[j, k] = R[k, j] = v
    return R
