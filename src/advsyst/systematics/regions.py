"""Control and signal regions.

A :class:`Region` is a cut on one feature (``x < threshold`` or ``x >= threshold``) or
any callable ``X -> bool mask``.  :func:`optimal_cut_regions` reproduces the default
split of the CONSERVAttack paper: an exhaustive search over all features and all cut
positions for the single cut that best separates signal (label 1) from background
(label 0); the background-enriched side is the **control** region, the other side the
**signal** region.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from advsyst.errors import ConfigError, InputError

__all__ = [
    "Region",
    "RegionSplit",
    "optimal_cut_regions",
    "region_masks",
    "weighted_auroc",
    "masks_from",
]

Side = Literal["below", "above"]
Criterion = Literal["balanced_accuracy", "accuracy"]


def _feature_index(feature: int | str, feature_names: Sequence[str] | None, n_features: int) -> int:
    if isinstance(feature, str):
        if feature_names is None or feature not in list(feature_names):
            raise InputError(
                f"feature {feature!r} not found; known feature names: {list(feature_names or [])}"
            )
        return list(feature_names).index(feature)
    idx = int(feature)
    if not -n_features <= idx < n_features:
        raise InputError(f"feature index {idx} out of range for {n_features} features")
    return idx % n_features


def _check_x(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"features must be a 2-D (events, features) array, got shape {X.shape}")
    return X


@dataclass(frozen=True)
class Region:
    """A named selection of events.

    Parameters
    ----------
    name
        Region name (a histogram category and part of ROOT histogram names).
    feature, threshold, side
        A cut: ``side="below"`` selects ``X[:, feature] < threshold``, ``"above"``
        selects ``X[:, feature] >= threshold``.  ``feature`` is an index or a name.
    selector
        Alternatively a callable ``X -> bool mask`` (then the cut fields are unused).
    """

    name: str
    feature: int | str | None = None
    threshold: float | None = None
    side: Side = "below"
    selector: Callable[[np.ndarray], np.ndarray] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/; "):
            raise ConfigError(f"region name {self.name!r} must be non-empty without '/', ';', ' '")
        if self.selector is None:
            if self.feature is None or self.threshold is None:
                raise ConfigError(
                    f"region {self.name!r}: give either a selector or a feature and a threshold"
                )
            if self.side not in ("below", "above"):
                raise ConfigError(f"region {self.name!r}: side must be 'below' or 'above'")

    @classmethod
    def from_cut(
        cls, name: str, feature: int | str, threshold: float, side: Side = "below"
    ) -> Region:
        """A region from a single cut on one feature."""
        return cls(name=name, feature=feature, threshold=float(threshold), side=side)

    @classmethod
    def from_callable(cls, name: str, selector: Callable[[np.ndarray], np.ndarray]) -> Region:
        """A region from a callable returning a boolean mask per event."""
        return cls(name=name, selector=selector)

    def mask(self, X: np.ndarray, feature_names: Sequence[str] | None = None) -> np.ndarray:
        """Boolean mask of the events of ``X`` in this region."""
        X = _check_x(X)
        if self.selector is not None:
            m = np.asarray(self.selector(X))
            if m.shape != (len(X),):
                raise InputError(
                    f"region {self.name!r}: selector returned shape {m.shape}, expected ({len(X)},)"
                )
            return m.astype(bool)
        j = _feature_index(self.feature, feature_names, X.shape[1])  # type: ignore[arg-type]
        col = X[:, j]
        return col < self.threshold if self.side == "below" else col >= self.threshold


def region_masks(
    regions: Sequence[Region], X: np.ndarray, feature_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """``{region.name: mask}`` for several regions (names must be unique)."""
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise ConfigError(f"region names must be unique, got {names}")
    return {r.name: r.mask(X, feature_names) for r in regions}


def weighted_auroc(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted area under the ROC curve of the score ``x`` for label 1 against label 0.

    Equals ``P(x_s > x_b) + 0.5 P(x_s = x_b)`` for a weighted signal/background pair.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    uniq, inv = np.unique(x, return_inverse=True)
    ws = np.bincount(inv, weights=w * y, minlength=len(uniq))
    wb = np.bincount(inv, weights=w * ~y, minlength=len(uniq))
    below_b = np.cumsum(wb) - wb  # background weight strictly below each value
    num = float(np.sum(ws * (below_b + 0.5 * wb)))
    den = float(ws.sum() * wb.sum())
    return num / den if den != 0 else float("nan")


@dataclass(frozen=True)
class RegionSplit:
    """The control/signal split from one cut.

    ``signal_side == "above"``: signal region ``x >= threshold``, control ``x < threshold``;
    ``"below"``: signal region ``x < threshold``, control ``x >= threshold``.

    Attributes
    ----------
    feature, feature_name, threshold, signal_side
        The cut.
    criterion, score
        The figure of merit maximised and its value at the cut.
    auroc
        Weighted AUROC of every feature (signal vs background), for reference.
    best_per_feature
        The best criterion value reachable with each feature.
    """

    feature: int
    feature_name: str | None
    threshold: float
    signal_side: Side
    criterion: str
    score: float
    auroc: np.ndarray = field(compare=False)
    best_per_feature: np.ndarray = field(compare=False)

    @property
    def control(self) -> Region:
        """The control region as a :class:`Region`."""
        side: Side = "below" if self.signal_side == "above" else "above"
        return Region.from_cut("control", self.feature, self.threshold, side)

    @property
    def signal(self) -> Region:
        """The signal region as a :class:`Region`."""
        return Region.from_cut("signal", self.feature, self.threshold, self.signal_side)

    def masks(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """``{"control": mask, "signal": ~mask}`` for the events of ``X``."""
        sig = self.signal.mask(X)
        return {"control": ~sig, "signal": sig}

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "feature_name": self.feature_name,
            "threshold": self.threshold,
            "signal_side": self.signal_side,
            "criterion": self.criterion,
            "score": self.score,
            "auroc": self.auroc.tolist(),
            "best_per_feature": self.best_per_feature.tolist(),
        }


def _best_cut(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, criterion: str
) -> tuple[float, float, Side]:
    """Best (score, threshold, signal_side) of one feature; thresholds at midpoints."""
    uniq, inv = np.unique(x, return_inverse=True)
    if len(uniq) < 2:
        return -np.inf, float("nan"), "above"
    ws = np.bincount(inv, weights=w * y, minlength=len(uniq))
    wb = np.bincount(inv, weights=w * ~y, minlength=len(uniq))
    Ws, Wb = ws.sum(), wb.sum()
    # cut k (k = 1..m-1) between uniq[k-1] and uniq[k]: "below" holds values < cut
    s_below = np.cumsum(ws)[:-1]
    b_below = np.cumsum(wb)[:-1]
    if criterion == "balanced_accuracy":
        # signal above: TPR = 1 - s_below/Ws, TNR = b_below/Wb
        above = 0.5 * ((1 - s_below / Ws) + b_below / Wb)
        below = 0.5 * (s_below / Ws + (1 - b_below / Wb))
    else:
        above = ((Ws - s_below) + b_below) / (Ws + Wb)
        below = (s_below + (Wb - b_below)) / (Ws + Wb)
    cuts = 0.5 * (uniq[:-1] + uniq[1:])
    ka, kb = int(np.argmax(above)), int(np.argmax(below))
    if above[ka] >= below[kb]:
        return float(above[ka]), float(cuts[ka]), "above"
    return float(below[kb]), float(cuts[kb]), "below"


def optimal_cut_regions(
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    *,
    criterion: Criterion = "balanced_accuracy",
    features: Sequence[int | str] | None = None,
) -> RegionSplit:
    """The single cut on one feature that best separates signal from background.

    Every feature (or only ``features``) and every cut between consecutive distinct
    values is tried, both orientations.  The figure of merit is the weighted
    ``"balanced_accuracy"`` (default; the mean of signal and background efficiency,
    equivalent to Youden's J = TPR + TNR - 1, so the cut is the optimum of the
    weighted ROC curve) or the weighted ``"accuracy"`` (the paper's wording, which
    coincides for equal class weights but can pick a degenerate cut for imbalanced
    samples).  Ties go to the lowest feature index, then to ``signal_side="above"``,
    then to the lowest cut.  The side
    where label 1 dominates is the signal region, the other the (background-enriched)
    control region.

    Parameters
    ----------
    X
        Features (n, d).
    y
        Binary labels, 1 = signal.
    weights
        Event weights (default 1); each class needs a positive total weight.
    feature_names
        Names of the columns, stored in the result.
    criterion
        ``"balanced_accuracy"`` or ``"accuracy"``.
    features
        Restrict the search to these columns (indices or names).

    Returns
    -------
    RegionSplit
    """
    X = _check_x(X)
    n, d = X.shape
    y = np.asarray(y)
    if y.shape != (n,):
        raise InputError(f"labels have shape {y.shape}, expected ({n},)")
    if not np.all(np.isin(y, (0, 1))):
        raise InputError("labels must be 0 (background) or 1 (signal)")
    y = y.astype(bool)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights have shape {w.shape}, expected ({n},)")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(w))):
        raise InputError("features or weights contain NaN/inf")
    if w[y].sum() <= 0 or w[~y].sum() <= 0:
        raise InputError("both signal (1) and background (0) need a positive total weight")
    if criterion not in ("balanced_accuracy", "accuracy"):
        raise ConfigError(f"criterion must be 'balanced_accuracy' or 'accuracy', got {criterion!r}")
    if feature_names is not None and len(feature_names) != d:
        raise InputError(f"{len(feature_names)} feature names for {d} features")
    cols = range(d) if features is None else [_feature_index(f, feature_names, d) for f in features]
    best = np.full(d, -np.inf)
    cut: dict[int, tuple[float, Side]] = {}
    for j in cols:
        s, t, side = _best_cut(X[:, j], y, w, criterion)
        best[j] = s
        cut[j] = (t, side)
    if not np.any(np.isfinite(best)):
        raise InputError("no feature takes two distinct values: no cut is possible")
    j = int(np.argmax(best))
    auroc = np.array([weighted_auroc(X[:, k], y, w) for k in range(d)])
    return RegionSplit(
        feature=j,
        feature_name=None if feature_names is None else str(feature_names[j]),
        threshold=cut[j][0],
        signal_side=cut[j][1],
        criterion=criterion,
        score=float(best[j]),
        auroc=auroc,
        best_per_feature=best,
    )


def masks_from(
    spec: RegionSplit | Sequence[Region] | Mapping[str, np.ndarray],
    X: np.ndarray,
    feature_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Region masks from a split, a list of regions, or a ready mapping of masks."""
    if isinstance(spec, RegionSplit):
        return spec.masks(X)
    if isinstance(spec, Mapping):
        return {str(k): np.asarray(v) for k, v in spec.items()}
    return region_masks(spec, X, feature_names)
