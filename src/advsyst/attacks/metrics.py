"""Attack metrics: fooling ratio with its uncertainty, and an exact weighted AUROC.

The dataset-level distortion measures live in :mod:`advsyst.stats` and are re-exported
here for convenience: :func:`jsd_per_feature` (Jensen–Shannon distance of every feature
to its clean histogram) and :func:`delta_fn` (relative Frobenius change of the
correlation matrix).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advsyst.errors import InputError
from advsyst.stats import delta_fn, jsd_per_feature

__all__ = [
    "fooling_ratio",
    "fooling_ratio_with_error",
    "binomial_uncertainty",
    "effective_count",
    "weighted_fraction_uncertainty",
    "auroc",
    "jsd_per_feature",
    "delta_fn",
]


def _as_classes(pred: Any, name: str) -> np.ndarray:
    a = np.asarray(pred)
    if a.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of predicted classes, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise InputError(
                f"{name} holds non-integer values: pass predicted classes "
                "(e.g. ModelAdapter.predict), not scores"
            )
    return a


def _selection(
    n: int, mask: Any, weights: Any, mask_name: str = "mask"
) -> tuple[np.ndarray, np.ndarray]:
    if mask is None:
        sel = np.ones(n, dtype=bool)
    else:
        sel = np.asarray(mask)
        if sel.dtype != bool:
            raise InputError(f"{mask_name} must be a boolean array, got dtype {sel.dtype}")
        if sel.shape != (n,):
            raise InputError(f"{mask_name} has shape {sel.shape}, expected ({n},)")
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != n:
            raise InputError(f"weights have {len(w)} entries for {n} events")
        if not np.isfinite(w).all():
            raise InputError("weights contain NaN/inf")
    return sel, w


def _flips(
    pred_clean: Any, pred_adv: Any, mask: Any, weights: Any
) -> tuple[np.ndarray, np.ndarray]:
    a = _as_classes(pred_clean, "pred_clean")
    b = _as_classes(pred_adv, "pred_adv")
    if a.shape != b.shape:
        raise InputError(f"pred_clean has {len(a)} events but pred_adv has {len(b)}")
    sel, w = _selection(len(a), mask, weights)
    return (a != b)[sel], w[sel]


def fooling_ratio(pred_clean: Any, pred_adv: Any, mask: Any = None, weights: Any = None) -> float:
    """Fraction of events (in ``mask``) whose predicted class changed.

    With ``weights`` the fraction is ``sum(w * flipped) / sum(w)``.  Returns NaN when
    the selection is empty or its weights sum to zero.
    """
    flipped, w = _flips(pred_clean, pred_adv, mask, weights)
    total = w.sum()
    if len(w) == 0 or total == 0:
        return float("nan")
    return float((w * flipped).sum() / total)


def binomial_uncertainty(k: Any, n: Any) -> Any:
    """Normal-approximation standard error ``sqrt(p (1 - p) / n)`` of ``p = k / n``.

    Works element-wise on arrays; NaN where ``n <= 0``.  For a weighted selection pass
    ``n = effective_count(w)`` and ``k = p * n``.
    """
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if (k_arr < 0).any() or (k_arr > n_arr).any():
        raise InputError(f"binomial_uncertainty needs 0 <= k <= n, got k={k}, n={n}")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_arr / n_arr
        err = np.sqrt(p * (1.0 - p) / n_arr)
    err = np.where(n_arr > 0, err, np.nan)
    return float(err) if err.ndim == 0 else err


def effective_count(weights: Any) -> float:
    """Kish effective number of events ``(sum w)^2 / sum w^2`` (0 for no events)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    s2 = float((w * w).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def weighted_fraction_uncertainty(passed: Any, weights: Any) -> float:
    """Standard error of ``f = sum(w * passed) / sum(w)`` with the weights held fixed.

    ``sqrt(sum w^2 (passed - f)^2) / sum w``; for unit weights this is exactly the
    binomial ``sqrt(f (1 - f) / n)``.
    """
    t = np.asarray(passed, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if t.shape != w.shape:
        raise InputError(f"passed has {len(t)} entries but weights have {len(w)}")
    total = w.sum()
    if len(w) == 0 or total == 0:
        return float("nan")
    f = (w * t).sum() / total
    return float(np.sqrt((w * w * (t - f) ** 2).sum()) / abs(total))


def fooling_ratio_with_error(
    pred_clean: Any, pred_adv: Any, mask: Any = None, weights: Any = None
) -> tuple[float, float]:
    """:func:`fooling_ratio` and its statistical (binomial) standard error.

    Unweighted: ``sqrt(p (1 - p) / n)``.  Weighted: the same with the weights held
    fixed (:func:`weighted_fraction_uncertainty`), which for equal weights reduces to the
    binomial error with ``n`` events.
    """
    flipped, w = _flips(pred_clean, pred_adv, mask, weights)
    if len(w) == 0 or w.sum() == 0:
        return float("nan"), float("nan")
    ratio = float((w * flipped).sum() / w.sum())
    if weights is None:
        return ratio, binomial_uncertainty(int(flipped.sum()), len(flipped))
    return ratio, weighted_fraction_uncertainty(flipped, w)


def auroc(y: Any, score: Any, weights: Any = None) -> float:
    """Exact area under the ROC curve (weighted Mann–Whitney statistic).

    Ties in ``score`` count one half, so the result equals the trapezoidal area of the
    full ROC curve (scikit-learn's ``roc_auc_score`` with ``sample_weight``).

    Parameters
    ----------
    y
        Binary labels (0/1 or bool), class 1 is the positive class.
    score
        Higher means more positive.
    weights
        Optional per-event weights.

    Raises
    ------
    InputError
        On shape mismatch, NaN scores, non-binary labels, or a class with zero weight.
    """
    yy = np.asarray(y).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if yy.shape != s.shape:
        raise InputError(f"y has {len(yy)} entries but score has {len(s)}")
    if np.isnan(s).any():
        raise InputError("score contains NaN")
    yf = yy.astype(np.float64)
    if not np.isin(yf, (0.0, 1.0)).all():
        raise InputError("auroc needs binary labels (0/1)")
    pos = yf == 1.0
    _, w = _selection(len(s), None, weights)
    wp_tot, wn_tot = w[pos].sum(), w[~pos].sum()
    if wp_tot == 0 or wn_tot == 0:
        raise InputError("auroc needs both classes with non-zero total weight")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    wp = np.where(pos, w, 0.0)[order]
    wn = np.where(pos, 0.0, w)[order]
    # group tied scores
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    gp = np.add.reduceat(wp, starts)
    gn = np.add.reduceat(wn, starts)
    neg_below = np.cumsum(gn) - gn
    area = (gp * (neg_below + 0.5 * gn)).sum()
    return float(area / (wp_tot * wn_tot))
