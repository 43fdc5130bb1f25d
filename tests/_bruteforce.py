"""Plain-numpy recomputations of the attack's statistics, independent of advsyst.stats and
of the kernels (np.histogram, np.cov): what the tests compare the engine with."""

from __future__ import annotations

import numpy as np


def hist(x: np.ndarray, w: np.ndarray | None, edges: np.ndarray) -> np.ndarray:
    """Weighted counts with under- and overflow; values on the top edge in the last bin."""
    w = np.ones(len(x)) if w is None else w
    inner, _ = np.histogram(x, bins=edges, weights=w)
    return np.concatenate([[w[x < edges[0]].sum()], inner, [w[x > edges[-1]].sum()]])


def jsd(h0: np.ndarray, h: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2, of two unnormalised histograms."""
    p, q = h0 / h0.sum(), h / h.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(np.sqrt(max(0.5 * (kl_p + kl_q), 0.0)))


def edges(x0: np.ndarray, num_bins: int) -> np.ndarray:
    """The attack's bin edges of one feature (:class:`advsyst.stats.FeatureBinning`: equal
    width over the clean range).  Taken from the engine because values that sit exactly on
    an edge fall on either side with the rounding of the edge: the binning is a definition,
    the recount and the distance below are recomputed independently."""
    from advsyst.stats import FeatureBinning

    return FeatureBinning.from_data(np.asarray(x0, dtype=np.float64)[:, None], num_bins).edges[0]


def jsd_per_feature(X0, X, w=None, num_bins=25) -> np.ndarray:
    out = []
    for j in range(X0.shape[1]):
        e = edges(X0[:, j], num_bins)
        out.append(jsd(hist(X0[:, j], w, e), hist(X[:, j], w, e)))
    return np.array(out)


def corr(X, w=None, valid=None) -> np.ndarray:
    cov = np.cov(X.T, aweights=w, bias=True)
    C = np.zeros_like(cov)
    v = np.ones(len(cov), bool) if valid is None else np.asarray(valid, bool)
    s = np.sqrt(np.diag(cov)[v])
    C[np.ix_(v, v)] = cov[np.ix_(v, v)] / np.outer(s, s)
    return C


def corr_raw(X, w) -> np.ndarray:
    """Weighted Pearson from raw moments, any signed weights (``np.cov`` refuses negative
    ones; not the engine's centred form)."""
    W = w.sum()
    m1 = (w[:, None] * X).sum(0) / W
    m2 = (w[:, None, None] * X[:, :, None] * X[:, None, :]).sum(0) / W
    cov = m2 - np.outer(m1, m1)
    s = np.sqrt(np.diag(cov))
    return cov / np.outer(s, s)


def dfn(X0, X, w=None, valid=None) -> float:
    C0 = corr(X0, w, valid)
    return float(np.linalg.norm(corr(X, w, valid) - C0) / np.linalg.norm(C0))
