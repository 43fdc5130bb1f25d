"""Fooling ratios, yield bands and detector efficiencies.

All fractions are weighted, ``p = sum(w[pass]) / sum(w)``, with the binomial
uncertainty computed on the effective number of events
``n_eff = (sum w)^2 / sum(w^2)``::

    err = sqrt(p (1 - p) / n_eff)

Fooling ratio (paper eq. 5, weighted): the fraction of the events of a region whose
predicted class differs between nominal and varied (up) features.  The
*detector-corrected* fooling ratio counts only flipped events the detector does not
flag, over the same denominator, so ``corrected = FR * (1 - detector efficiency on the
flipped events)``.

Yield band: the tagged yield (events of the region and process with nominal score >=
the working point) times ``1 +- FR_tagged``, where ``FR_tagged`` is the fooling ratio
*of those tagged events* -- the weighted fraction of the tagged events of that region and
process whose predicted class differs between nominal and varied (up) features -- not
the fooling ratio of all events of the region (:func:`tagged_fooling_ratio`).

Detector clean-event efficiency at threshold t: the fraction of clean events *not*
flagged, i.e. with P(adversarial) < t.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from advsyst.errors import InputError

if TYPE_CHECKING:
    from advsyst.systematics.histograms import VariationOutcome

__all__ = [
    "Fraction",
    "FoolingRatio",
    "YieldBand",
    "DetectorEfficiency",
    "effective_entries",
    "weighted_fraction",
    "fooling_ratio",
    "fooling_ratios",
    "tagged_fooling_ratio",
    "band_limits",
    "tagged_yield",
    "yield_bands",
    "detector_efficiency_curve",
    "detector_efficiency",
    "compare_data_mc",
]


def effective_entries(weights: np.ndarray) -> float:
    """``(sum w)^2 / sum(w^2)`` (0 for an empty or all-zero selection)."""
    w = np.asarray(weights, dtype=np.float64)
    s2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


@dataclass(frozen=True)
class Fraction:
    """A weighted fraction with its binomial uncertainty.

    Attributes
    ----------
    value, error
        ``p`` and ``sqrt(p (1 - p) / n_eff)`` (NaN for an empty selection).
    sum_w, sum_w_pass
        Denominator and numerator weights.
    n_eff
        Effective number of events of the denominator.
    n_events, n_pass
        Raw event counts.
    """

    value: float
    error: float
    sum_w: float
    sum_w_pass: float
    n_eff: float
    n_events: int
    n_pass: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weights(weights: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"{what}: weights have shape {w.shape}, expected ({n},)")
    if not np.all(np.isfinite(w)):
        raise InputError(f"{what}: weights contain NaN/inf")
    return w


def _mask(mask: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    m = np.asarray(mask)
    if m.shape != (n,):
        raise InputError(f"{what}: mask has shape {m.shape}, expected ({n},)")
    return m.astype(bool)


def weighted_fraction(
    passed: np.ndarray, weights: np.ndarray | None = None, select: np.ndarray | None = None
) -> Fraction:
    """Weighted fraction of ``passed`` events among the ``select`` ones (default: all)."""
    passed = np.asarray(passed).astype(bool)
    n = len(passed)
    w = _weights(weights, n, "weighted_fraction")[_mask(select, n, "weighted_fraction")]
    p_sel = passed[_mask(select, n, "weighted_fraction")]
    sum_w = float(w.sum())
    sum_pass = float(w[p_sel].sum())
    n_eff = effective_entries(w)
    if sum_w == 0 or n_eff == 0:
        value = error = float("nan")
    else:
        value = sum_pass / sum_w
        error = float(np.sqrt(max(value * (1.0 - value), 0.0) / n_eff))
    return Fraction(
        value=value,
        error=error,
        sum_w=sum_w,
        sum_w_pass=sum_pass,
        n_eff=n_eff,
        n_events=int(len(w)),
        n_pass=int(p_sel.sum()),
    )


@dataclass(frozen=True)
class FoolingRatio:
    """Fooling ratio of one variation in one region of one process.

    ``corrected`` is None when no detector decision is available.
    """

    region: str
    process: str
    variation: str
    fooling_ratio: Fraction
    corrected: Fraction | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "process": self.process,
            "variation": self.variation,
            "fooling_ratio": self.fooling_ratio.to_dict(),
            "corrected": None if self.corrected is None else self.corrected.to_dict(),
        }


def fooling_ratio(
    nominal_pred: np.ndarray,
    varied_pred: np.ndarray,
    weights: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    detected: np.ndarray | None = None,
) -> tuple[Fraction, Fraction | None]:
    """``(FR, corrected FR)`` among the ``mask`` events.

    FR: weighted fraction with ``varied_pred != nominal_pred``; corrected: flipped and
    not ``detected`` (None if ``detected`` is None), same denominator.
    """
    a = np.asarray(nominal_pred)
    b = np.asarray(varied_pred)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(
            f"prediction arrays have shapes {a.shape} and {b.shape}; expected equal (n,)"
        )
    flipped = a != b
    fr = weighted_fraction(flipped, weights, mask)
    if detected is None:
        return fr, None
    det = _mask(detected, len(a), "fooling_ratio(detected)")
    return fr, weighted_fraction(flipped & ~det, weights, mask)


def fooling_ratios(outcome: VariationOutcome) -> dict[str, FoolingRatio]:
    """Fooling ratios of one evaluated variation, per region."""
    out: dict[str, FoolingRatio] = {}
    for region, m in outcome.region_masks.items():
        fr, corr = fooling_ratio(
            outcome.nominal_pred, outcome.up_pred, outcome.weights, m, outcome.detected
        )
        out[region] = FoolingRatio(region, outcome.process, outcome.name, fr, corr)
    return out


def tagged_yield(
    score: np.ndarray,
    working_point: float,
    weights: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> tuple[float, float]:
    """``(sum w, sqrt(sum w^2))`` of the ``mask`` events with ``score >= working_point``."""
    s = np.asarray(score, dtype=np.float64)
    n = len(s)
    w = _weights(weights, n, "tagged_yield")
    sel = _mask(mask, n, "tagged_yield") & (s >= working_point)
    return float(w[sel].sum()), float(np.sqrt(np.sum(w[sel] ** 2)))


def tagged_fooling_ratio(
    nominal_score: np.ndarray,
    nominal_pred: np.ndarray,
    varied_pred: np.ndarray,
    working_point: float,
    weights: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    detected: np.ndarray | None = None,
) -> tuple[Fraction, Fraction | None]:
    """``(FR, corrected FR)`` of the *tagged* ``mask`` events: those with
    ``nominal_score >= working_point`` (see :func:`fooling_ratio`)."""
    s = np.asarray(nominal_score, dtype=np.float64)
    tagged = _mask(mask, len(s), "tagged_fooling_ratio") & (s >= working_point)
    return fooling_ratio(nominal_pred, varied_pred, weights, tagged, detected)


def band_limits(nominal: float, fr: float) -> tuple[float, float]:
    """``(nominal * (1 + fr), nominal * (1 - fr))``; ``(0, 0)`` for an empty tagged set
    (``nominal == 0``, where the fooling ratio is undefined)."""
    if nominal == 0.0 and not np.isfinite(fr):
        return 0.0, 0.0
    return nominal * (1.0 + fr), nominal * (1.0 - fr)


@dataclass(frozen=True)
class YieldBand:
    """Tagged yield with its adversarial band ``nominal * (1 +- FR_tagged)``.

    ``fooling_ratio`` is the fooling ratio of the tagged events of the region and process
    (:func:`tagged_fooling_ratio`), detector-corrected when ``corrected``.  ``varied`` is
    the tagged yield actually obtained with the up features, for reference.
    """

    region: str
    process: str
    variation: str
    working_point: float
    nominal: float
    nominal_error: float
    up: float
    down: float
    varied: float
    fooling_ratio: float
    corrected: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def yield_bands(
    outcome: VariationOutcome, working_point: float = 0.5, *, use_corrected: bool = False
) -> dict[str, YieldBand]:
    """Per-region tagged-yield bands of one variation.

    The band is ``nominal * (1 +- FR_tagged)`` with the fooling ratio of the tagged
    events of the region (:func:`tagged_fooling_ratio`).  ``use_corrected=True`` uses
    its detector-corrected version (requires a detector decision in the outcome).
    """
    if use_corrected and outcome.detected is None:
        raise InputError(
            f"variation {outcome.name!r} of process {outcome.process!r} has no detector "
            "decision: no corrected fooling ratio"
        )
    out: dict[str, YieldBand] = {}
    for region, m in outcome.region_masks.items():
        nom, err = tagged_yield(outcome.nominal_score, working_point, outcome.weights, m)
        varied, _ = tagged_yield(outcome.up_score, working_point, outcome.weights, m)
        frt, corr = tagged_fooling_ratio(
            outcome.nominal_score,
            outcome.nominal_pred,
            outcome.up_pred,
            working_point,
            outcome.weights,
            m,
            outcome.detected,
        )
        fr = corr.value if use_corrected and corr is not None else frt.value
        up, down = band_limits(nom, fr)
        out[region] = YieldBand(
            region=region,
            process=outcome.process,
            variation=outcome.name,
            working_point=float(working_point),
            nominal=nom,
            nominal_error=err,
            up=up,
            down=down,
            varied=varied,
            fooling_ratio=fr,
            corrected=use_corrected,
        )
    return out


def _check_p(p_adv: np.ndarray, what: str) -> np.ndarray:
    p = np.asarray(p_adv, dtype=np.float64)
    if p.ndim != 1:
        raise InputError(f"{what}: P(adversarial) must be 1-D, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{what}: P(adversarial) contains {int((~np.isfinite(p)).sum())} NaN/inf")
    return p


def detector_efficiency_curve(
    p_adv: np.ndarray,
    weights: np.ndarray | None = None,
    thresholds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean-event efficiency of a detector versus threshold.

    Parameters
    ----------
    p_adv
        Detector P(adversarial) of *clean* events.
    weights
        Event weights (default 1).
    thresholds
        Thresholds t (default ``np.linspace(0, 1, 101)``).

    Returns
    -------
    (thresholds, eff, err)
        ``eff[k]`` = weighted fraction with ``p_adv < thresholds[k]``; ``err`` its
        binomial uncertainty on ``n_eff``.
    """
    p = _check_p(p_adv, "detector_efficiency_curve")
    w = _weights(weights, len(p), "detector_efficiency_curve")
    t = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(thresholds, float)
    if len(p) == 0:
        raise InputError("detector_efficiency_curve: no events")
    sum_w = w.sum()
    n_eff = effective_entries(w)
    order = np.argsort(p, kind="stable")
    cw = np.concatenate([[0.0], np.cumsum(w[order])])
    idx = np.searchsorted(p[order], t, side="left")  # number of events with p < t
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(idx == len(p), 1.0, cw[idx] / sum_w)  # exact 1 when all pass
        err = np.sqrt(np.clip(eff * (1.0 - eff), 0.0, None) / n_eff)
    return t, eff, err


@dataclass(frozen=True)
class DetectorEfficiency:
    """Detector clean-event efficiency at one threshold on simulation and on data.

    ``pull = (data - mc) / sqrt(err_mc^2 + err_data^2)``; ``data`` may be None.
    """

    threshold: float
    mc: Fraction
    data: Fraction | None

    @property
    def pull(self) -> float:
        if self.data is None:
            return float("nan")
        return float(
            compare_data_mc(self.mc.value, self.mc.error, self.data.value, self.data.error)["pull"]
        )

    def consistent(self, max_abs_pull: float = 2.0) -> bool | None:
        """``|pull| < max_abs_pull``; None when there is no data efficiency."""
        if self.data is None or not np.isfinite(self.pull):
            return None
        return bool(abs(self.pull) < max_abs_pull)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "mc": self.mc.to_dict(),
            "data": None if self.data is None else self.data.to_dict(),
            "pull": self.pull,
        }


def detector_efficiency(
    p_adv_mc: np.ndarray,
    threshold: float = 0.5,
    weights_mc: np.ndarray | None = None,
    p_adv_data: np.ndarray | None = None,
    weights_data: np.ndarray | None = None,
) -> DetectorEfficiency:
    """Clean-event efficiency (``p_adv < threshold``) on simulation and, if given, data."""
    pm = _check_p(p_adv_mc, "detector_efficiency(mc)")
    mc = weighted_fraction(pm < threshold, weights_mc)
    data = None
    if p_adv_data is not None:
        pd_ = _check_p(p_adv_data, "detector_efficiency(data)")
        data = weighted_fraction(pd_ < threshold, weights_data)
    return DetectorEfficiency(threshold=float(threshold), mc=mc, data=data)


def compare_data_mc(
    eff_mc: np.ndarray | float,
    err_mc: np.ndarray | float,
    eff_data: np.ndarray | float,
    err_data: np.ndarray | float,
) -> dict[str, Any]:
    """Consistency of data and simulation efficiencies (point by point).

    Returns
    -------
    dict
        ``ratio`` = data / mc and ``ratio_err`` (uncorrelated propagation; NaN where
        mc = 0), ``pull`` = (data - mc) / sqrt(err_mc^2 + err_data^2) (0 where both
        the difference and the uncertainty vanish, +-inf where only the uncertainty
        does), ``chi2`` = sum of squared finite pulls with non-zero uncertainty,
        ``ndf`` their number, ``p_value`` = P(chi2_ndf >= chi2) and ``max_abs_pull``.

    Notes
    -----
    Points of one efficiency curve at different thresholds share events (the curve is
    cumulative), so they are correlated and the chi2 / p-value over a whole curve are
    only indicative; decide at a single threshold.
    """
    em, sm, ed, sd = (np.asarray(a, dtype=np.float64) for a in (eff_mc, err_mc, eff_data, err_data))
    scalar = em.ndim == 0
    em, sm, ed, sd = np.broadcast_arrays(*(np.atleast_1d(a) for a in (em, sm, ed, sd)))
    sigma = np.hypot(sm, sd)
    diff = ed - em
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(em != 0, ed / em, np.nan)
        ratio_err = np.where(em != 0, np.hypot(sd / em, ed * sm / em**2), np.nan)
        pull = np.where(sigma > 0, diff / sigma, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    use = (sigma > 0) & np.isfinite(pull)
    chi2 = float(np.sum(pull[use] ** 2))
    ndf = int(use.sum())
    p_value = float(stats.chi2.sf(chi2, ndf)) if ndf > 0 else float("nan")
    max_abs = float(np.max(np.abs(pull))) if pull.size else float("nan")

    def out(a: np.ndarray) -> Any:
        return float(a[0]) if scalar else a

    return {
        "ratio": out(ratio),
        "ratio_err": out(ratio_err),
        "pull": out(pull),
        "chi2": chi2,
        "ndf": ndf,
        "p_value": p_value,
        "max_abs_pull": max_abs,
    }
