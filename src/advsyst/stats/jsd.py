"""Jensen–Shannon distance (base 2, in [0, 1]) between feature histograms, by direct
recomputation.

With normalised histograms p, q and f(p, q) = ½[p log2(2p/(p+q)) + q log2(2q/(p+q))],
JSD = sqrt(Σ_k f(p_k, q_k)).  These functions are the batch reference; the attack keeps
the running sums and their O(1) updates in the numba kernels of
:mod:`advsyst.attacks._kernels` (the only incremental implementation), which the tests
compare with the functions here.
"""

from __future__ import annotations

import numpy as np

from advsyst.errors import InputError
from advsyst.stats.binning import FeatureBinning, check_finite

__all__ = ["js_term", "jsd", "histogram_jsd", "jsd_per_feature"]


def js_term(p: np.ndarray | float, q: np.ndarray | float) -> np.ndarray:
    """Element-wise ½[p log2(2p/(p+q)) + q log2(2q/(p+q))] with 0·log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = p + q
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.where(p > 0, p * np.log2(np.where(p > 0, 2 * p / np.where(m > 0, m, 1), 1)), 0.0)
        tq = np.where(q > 0, q * np.log2(np.where(q > 0, 2 * q / np.where(m > 0, m, 1), 1)), 0.0)
    return 0.5 * (tp + tq)


def histogram_jsd(H0: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance (base 2) along the last axis of two histogram arrays.

    Broadcasts (e.g. ``H0`` (d, S) against ``H`` (B, d, S)); slots with negative net content
    count as zero and each histogram is renormalised over the rest.
    """
    p = np.clip(np.asarray(H0, dtype=np.float64), 0.0, None)
    q = np.clip(np.asarray(H, dtype=np.float64), 0.0, None)
    sp = p.sum(axis=-1, keepdims=True)
    sq = q.sum(axis=-1, keepdims=True)
    if (sp <= 0).any() or (sq <= 0).any():
        raise InputError("Jensen-Shannon distance of a histogram without positive content")
    return np.sqrt(np.clip(js_term(p / sp, q / sq).sum(axis=-1), 0.0, None))


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2) between two (unnormalised) histograms.

    Signed event weights can leave a slot with negative net content: such a slot counts
    as zero and both histograms are renormalised over what remains (the convention of
    the attack engine, :mod:`advsyst.attacks._kernels`); see :func:`histogram_jsd`.
    """
    return float(histogram_jsd(p, q))


def jsd_per_feature(
    X_ref: np.ndarray,
    X: np.ndarray,
    num_bins: int = 200,
    weights: np.ndarray | None = None,
    binning: FeatureBinning | None = None,
    weights_ref: np.ndarray | None = None,
) -> np.ndarray:
    """JSD of every feature of ``X`` to the same feature of ``X_ref`` (brute force).

    Bins come from ``X_ref`` (see :class:`FeatureBinning`) unless ``binning`` is given.
    ``weights`` are the weights of the events of ``X``, ``weights_ref`` those of ``X_ref``.
    Without ``weights_ref``, ``weights`` apply to both sets, which must then hold the same
    events (same length; e.g. clean and moved values); for two different event sets pass
    both (or neither).
    """
    X_ref = check_finite(X_ref, "X_ref")
    X = check_finite(X, "X")
    if X.shape[1] != X_ref.shape[1]:
        raise InputError(f"feature counts differ: {X_ref.shape[1]} (reference) vs {X.shape[1]}")
    w = _weights(weights, len(X), "weights")
    if weights_ref is None:
        if w is not None and len(X_ref) != len(X):
            raise InputError(
                f"weights given for {len(X)} events but X_ref has {len(X_ref)}: pass "
                "weights_ref for the reference events"
            )
        wr = w
    else:
        wr = _weights(weights_ref, len(X_ref), "weights_ref")
    binning = binning or FeatureBinning.from_data(X_ref, num_bins)
    H0 = binning.histogram(X_ref, wr)
    H = binning.histogram(X, w)
    return np.array([jsd(H0[j], H[j]) for j in range(X.shape[1])])


def _weights(w: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    if w is None:
        return None
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"{name} must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all():
        raise InputError(f"{name} contain NaN/inf")
    return w
