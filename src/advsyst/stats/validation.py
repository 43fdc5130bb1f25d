"""Validation of an adversarial set under binnings the attack never saw.

A physicist checks an adversarial data set with her own histograms, not with the attack's
bin edges.  This module measures what she would see:

* :func:`resolution`: the statistical resolution of a binning, the ``quantile`` (95 %) of
  the Jensen–Shannon distance between the clean histogram and the histogram of a
  bootstrap resample of the clean events, per feature.  The bootstrap is the Poisson
  bootstrap (every event's weight multiplied by an independent Poisson(1) count), seeded.
  ``method="bins"`` (default) draws it per histogram slot: with unit weights the slot
  content of a Poisson bootstrap is exactly Poisson(content); with weights it is drawn as
  a scaled Poisson with the slot's mean Σw and variance Σw² (exact in the first two
  moments).  ``method="events"`` draws the Poisson counts per event (the literal
  definition; cost O(n · n_bootstrap) per binning).
* :func:`binning_scan`: the JSD between clean and adversarial histograms of every feature
  at a grid of equal-width binnings (bin counts × offsets, over the clean range) next to
  the resolution at the same binning, and the worst ratio.

Negative net slot contents (signed weights) count as zero, as in :func:`advsyst.stats.jsd`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advsyst.errors import InputError
from advsyst.stats.binning import FeatureBinning, check_finite
from advsyst.stats.jsd import histogram_jsd

__all__ = [
    "DEFAULT_SCAN_BINS",
    "DEFAULT_SCAN_OFFSETS",
    "BinningScan",
    "binning_scan",
    "histogram_jsd",
    "resolution",
    "resolution_from_histograms",
]

#: bin counts of the default validation scan (unseen by the attack's default binnings)
DEFAULT_SCAN_BINS: tuple[int, ...] = (50, 63, 80, 110, 130, 160, 190, 200)
#: offsets (fractions of a bin width) of the default validation scan
DEFAULT_SCAN_OFFSETS: tuple[float, ...] = (0.0, 0.17, 0.39, 0.5, 0.73, 0.91)


def _weights(w: Any, n: int) -> np.ndarray:
    if w is None:
        return np.ones(n)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all():
        raise InputError("weights contain NaN/inf")
    if w.sum() <= 0:
        raise InputError(f"the total event weight is not positive ({w.sum():.6g})")
    return w


def _bootstrap_bins(
    H: np.ndarray, H2: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot, *H.shape) Poisson-bootstrap draws of slot contents ``H`` with Σw² ``H2``."""
    H = np.asarray(H, dtype=np.float64)
    out = np.broadcast_to(H, (n_boot, *H.shape)).copy()
    nz = H2 > 0
    lam = np.zeros_like(H)
    lam[nz] = H[nz] ** 2 / H2[nz]
    scale = np.zeros_like(H)
    scale[nz] = H2[nz] / np.where(H[nz] != 0, H[nz], 1.0)
    pois = nz & (lam > 1e-9)
    if pois.any():
        out[:, pois] = scale[pois] * rng.poisson(lam[pois], size=(n_boot, int(pois.sum())))
    gauss = nz & ~pois  # weights cancel in the slot: no Poisson with that mean and variance
    if gauss.any():
        out[:, gauss] = H[gauss] + np.sqrt(H2[gauss]) * rng.standard_normal(
            (n_boot, int(gauss.sum()))
        )
    return out


def resolution(
    X: np.ndarray,
    binning: FeatureBinning,
    weights: np.ndarray | None = None,
    n_bootstrap: int = 200,
    quantile: float = 0.95,
    seed: int = 0,
    method: str = "bins",
) -> np.ndarray:
    """Per-feature ``quantile`` of JSD(clean, bootstrap resample of clean) at ``binning``.

    Parameters
    ----------
    X
        Clean events (n, d).
    binning
        The binning whose resolution is wanted.
    weights
        Signed event weights (total must be positive).
    n_bootstrap, quantile, seed
        Number of resamples, the quantile (0.95 = 95th percentile), the seed.
    method
        ``"bins"`` (per-slot Poisson bootstrap, cost O(slots · n_bootstrap)) or ``"events"``
        (per-event Poisson counts, O(n · n_bootstrap)); see the module docstring.
    """
    X = check_finite(X)
    w = _weights(weights, len(X))
    if n_bootstrap < 1 or not 0.0 < quantile < 1.0:
        raise InputError("n_bootstrap must be >= 1 and quantile in (0, 1)")
    if method == "bins":
        H0, H2 = binning.histogram(X, w), binning.histogram(X, w * w)
        return resolution_from_histograms(H0, H2, n_bootstrap, quantile, seed)
    rng = np.random.default_rng(seed)
    H0 = binning.histogram(X, w)
    if method == "events":
        idx = binning.index(X)
        S = binning.n_slots
        Hb = np.empty((n_bootstrap, *H0.shape))
        for b in range(n_bootstrap):
            wb = w * rng.poisson(1.0, size=len(w))
            for j in range(X.shape[1]):
                Hb[b, j] = np.bincount(idx[:, j], weights=wb, minlength=S)
    else:
        raise InputError(f"method must be 'bins' or 'events', got {method!r}")
    return np.quantile(histogram_jsd(H0[None], Hb), quantile, axis=0)


def resolution_from_histograms(
    H0: np.ndarray, H2: np.ndarray, n_bootstrap: int = 200, quantile: float = 0.95, seed: int = 0
) -> np.ndarray:
    """:func:`resolution` with ``method="bins"`` from the histograms alone: ``H0`` the
    weighted slot contents (d, slots), ``H2`` the slot sums of the squared weights (summed
    per-shard histograms give the resolution of the union without its events)."""
    if n_bootstrap < 1 or not 0.0 < quantile < 1.0:
        raise InputError("n_bootstrap must be >= 1 and quantile in (0, 1)")
    Hb = _bootstrap_bins(H0, H2, n_bootstrap, np.random.default_rng(seed))
    return np.quantile(histogram_jsd(np.asarray(H0, dtype=np.float64)[None], Hb), quantile, axis=0)


@dataclass
class BinningScan:
    """Result of :func:`binning_scan`.

    ``jsd`` and ``floor`` have shape (len(bins), len(offsets), d): JSD(clean, adversarial)
    and the resolution at each binning; ``ratio = jsd / floor``.  ``features`` are the
    scanned feature indices (others are NaN).
    """

    bins: list[int]
    offsets: list[float]
    jsd: np.ndarray
    floor: np.ndarray
    features: list[int]
    n_bootstrap: int
    quantile: float
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.jsd / self.floor

    def worst(self) -> dict[str, Any]:
        """The binning and feature with the largest JSD / resolution."""
        if not self.features:
            return {"ratio": 0.0, "jsd": 0.0, "floor": float("nan"), "feature": None}
        r = np.where(np.isnan(self.ratio), -np.inf, self.ratio)
        b, o, j = np.unravel_index(int(np.argmax(r)), r.shape)
        return {
            "ratio": float(self.ratio[b, o, j]),
            "jsd": float(self.jsd[b, o, j]),
            "floor": float(self.floor[b, o, j]),
            "feature": int(j),
            "bins": int(self.bins[b]),
            "offset": float(self.offsets[o]),
        }

    def worst_per_feature(self) -> np.ndarray:
        """(d,) largest JSD / resolution of every feature over the scan (NaN if unscanned)."""
        r = self.ratio.reshape(-1, self.ratio.shape[-1])
        out = np.full(r.shape[1], np.nan)
        out[self.features] = np.nanmax(r[:, self.features], axis=0)
        return out

    def passed(self) -> bool:
        """True when every scanned feature stays below its resolution at every binning."""
        return bool(self.worst()["ratio"] < 1.0)

    def to_dict(self, feature_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready summary (the worst binning, per-feature worst ratios, the grid)."""
        w = self.worst()
        if feature_names is not None and w.get("feature") is not None:
            w["feature_name"] = str(feature_names[w["feature"]])
        return {
            "worst": w,
            "passed": self.passed(),
            "worst_ratio_per_feature": [
                None if np.isnan(v) else float(v) for v in self.worst_per_feature()
            ],
            "bins": list(self.bins),
            "offsets": list(self.offsets),
            "n_bootstrap": self.n_bootstrap,
            "quantile": self.quantile,
            "seed": self.seed,
            "features": list(self.features),
            **self.meta,
        }


def binning_scan(
    X_clean: np.ndarray,
    X_adv: np.ndarray,
    weights: np.ndarray | None = None,
    bins: Sequence[int] = DEFAULT_SCAN_BINS,
    offsets: Sequence[float] = DEFAULT_SCAN_OFFSETS,
    features: Sequence[int] | np.ndarray | None = None,
    n_bootstrap: int = 200,
    quantile: float = 0.95,
    seed: int = 0,
    method: str = "bins",
) -> BinningScan:
    """JSD(clean, adversarial) per feature at every equal-width binning of the grid
    ``bins × offsets`` over the clean range, next to the resolution (:func:`resolution`) at
    the same binning.

    ``X_clean`` and ``X_adv`` are the same events before and after the attack (``weights``
    apply to both).  ``features`` restricts the scan (e.g. to the continuous features);
    default all.  Each binning gets its own bootstrap seed derived from ``seed``.
    """
    X0 = check_finite(X_clean, "X_clean")
    X1 = check_finite(X_adv, "X_adv")
    if X0.shape != X1.shape:
        raise InputError(f"clean {X0.shape} and adversarial {X1.shape} shapes differ")
    n, d = X0.shape
    w = _weights(weights, n)
    feats = list(range(d)) if features is None else [int(j) for j in np.ravel(features)]
    if any(not 0 <= j < d for j in feats):
        raise InputError(f"features {feats} out of range for {d} features")
    bins = [int(b) for b in bins]
    offsets = [float(o) for o in offsets]
    jsd = np.full((len(bins), len(offsets), d), np.nan)
    floor = np.full_like(jsd, np.nan)
    if feats:
        A, B = X0[:, feats], X1[:, feats]
        lo, hi = A.min(axis=0), A.max(axis=0)
        for ib, K in enumerate(bins):
            for io, off in enumerate(offsets):
                fb = FeatureBinning.equal_width(lo, hi, K, off)
                H0 = fb.histogram(A, w)
                jsd[ib, io, feats] = histogram_jsd(H0, fb.histogram(B, w))
                floor[ib, io, feats] = resolution(
                    A, fb, w, n_bootstrap, quantile, seed + 1000 * ib + io, method
                )
    return BinningScan(bins, offsets, jsd, floor, feats, n_bootstrap, quantile, seed)
