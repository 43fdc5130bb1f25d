"""Tagger-score histograms with process / region / systematic axes.

The histogram has four axes::

    process     StrCategory, growing     e.g. "ttbar", "ww"
    region      StrCategory              "control", "signal" (by default)
    systematic  StrCategory, growing     "nominal", "<name>Up", "<name>Down"
    score       Regular (20 bins in [0, 1] by default)

with ``Weight()`` storage (sum of weights and sum of squared weights per bin).

Score conventions
-----------------
* A score equal to the upper edge of the score axis (a probability of exactly 1) is
  filled into the last bin rather than the overflow; other out-of-range scores go to
  the flow bins as usual.
* When a variation gives no down features, the down score of each event is the mirror
  of its up shift, ``2 * nominal - up``, clipped to the score axis range
  (:func:`mirror_scores`).  Its predicted class is not defined, so fooling ratios use
  the up variation only.
* Region membership is decided on the *nominal* features (``region_masks``); the
  variations move events in score, not between regions.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np

from advsyst.attacks.model import as_adapter
from advsyst.errors import ConfigError, InputError, ModelOutputError
from advsyst.systematics.regions import Region, RegionSplit, masks_from
from advsyst.systematics.registry import (
    VariationContext,
    VariationResult,
    detector_scores,
    get,
    run_variation,
)

__all__ = [
    "evaluate_dataset",
    "LowStatisticsWarning",
    "VariationOutcome",
    "SystematicsBuilder",
    "make_hist",
    "fill_variations",
    "mirror_scores",
    "evaluate_variations",
    "model_scores",
    "NOMINAL",
    "DEFAULT_MIN_EVENTS",
]

NOMINAL = "nominal"
DEFAULT_MIN_EVENTS = 10


class LowStatisticsWarning(UserWarning):
    """A region of a process has fewer events than ``min_events`` (opt-in warning)."""


def make_hist(
    score_axis: hist.axis.AxesMixin | None = None,
    variable_label: str = "tagger score",
    regions: Sequence[str] = ("control", "signal"),
) -> hist.Hist:
    """An empty histogram with process / region / systematic / score axes.

    Parameters
    ----------
    score_axis
        A ``hist`` axis for the score; default ``Regular(20, 0, 1, name="score")``.
        Its name is forced to ``"score"``.
    variable_label
        Label of the score axis.
    regions
        Categories of the region axis.
    """
    if score_axis is None:
        score_axis = hist.axis.Regular(20, 0.0, 1.0, name="score", label=variable_label)
    elif score_axis.name != "score":
        edges = np.asarray(score_axis.edges)
        if isinstance(score_axis, hist.axis.Regular) and score_axis.transform is None:
            score_axis = hist.axis.Regular(
                len(edges) - 1, edges[0], edges[-1], name="score", label=variable_label
            )
        else:
            score_axis = hist.axis.Variable(edges, name="score", label=variable_label)
    return hist.Hist(
        hist.axis.StrCategory([], growth=True, name="process", label="process"),
        hist.axis.StrCategory(list(regions), name="region", label="region"),
        hist.axis.StrCategory([], growth=True, name="systematic", label="systematic"),
        score_axis,
        storage=hist.storage.Weight(),
    )


def _axis_range(h: hist.Hist) -> tuple[float, float]:
    edges = np.asarray(h.axes["score"].edges, dtype=np.float64)
    return float(edges[0]), float(edges[-1])


def _into_axis(score: np.ndarray, high: float) -> np.ndarray:
    """Put scores equal to the upper edge into the last bin."""
    return np.where(score == high, np.nextafter(high, -np.inf), score)


def mirror_scores(nominal: np.ndarray, up: np.ndarray, low: float, high: float) -> np.ndarray:
    """The mirrored down score ``clip(2 * nominal - up, low, high)``."""
    return np.clip(2.0 * np.asarray(nominal, float) - np.asarray(up, float), low, high)


def _check_scores(score: Any, n: int, what: str, process: str) -> np.ndarray:
    s = np.asarray(score, dtype=np.float64)
    if s.shape != (n,):
        raise InputError(
            f"{what} scores of process {process!r} have shape {s.shape}, expected ({n},)"
        )
    bad = ~np.isfinite(s)
    if bad.any():
        raise InputError(
            f"{what} scores of process {process!r} contain {int(bad.sum())} NaN/inf values"
        )
    return s


def _check_weights(weights: Any, n: int, process: str) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights of process {process!r} have shape {w.shape}, expected ({n},)")
    if not np.all(np.isfinite(w)):
        raise InputError(f"weights of process {process!r} contain NaN/inf")
    return w


def _check_masks(
    h: hist.Hist | None,
    region_masks: Mapping[str, Any],
    n: int,
    process: str,
    min_events: int,
    on_low_stats: str,
) -> dict[str, np.ndarray]:
    if on_low_stats not in ("raise", "warn"):
        raise ConfigError(f"on_low_stats must be 'raise' or 'warn', got {on_low_stats!r}")
    if not region_masks:
        raise InputError(f"no region masks given for process {process!r}")
    allowed = list(h.axes["region"]) if h is not None else None
    out: dict[str, np.ndarray] = {}
    for region, mask in region_masks.items():
        if allowed is not None and region not in allowed:
            raise InputError(
                f"region {region!r} is not a category of the histogram; known: {allowed}"
            )
        m = np.asarray(mask)
        if m.shape != (n,):
            raise InputError(
                f"mask of region {region!r} for process {process!r} has shape {m.shape}, expected ({n},)"
            )
        if m.dtype != bool:
            raise InputError(f"mask of region {region!r} for process {process!r} is not boolean")
        count = int(m.sum())
        if count < min_events:
            msg = (
                f"region {region!r} of process {process!r} has {count} events, fewer than "
                f"min_events={min_events}: too few for a meaningful histogram"
            )
            if on_low_stats == "raise":
                raise InputError(msg + " (pass on_low_stats='warn' to fill anyway)")
            warnings.warn(msg, LowStatisticsWarning, stacklevel=3)
        out[str(region)] = m
    return out


def _check_name(name: str, process: str) -> None:
    if not isinstance(name, str) or not name or name == NOMINAL or not name.isidentifier():
        raise ConfigError(f"invalid variation name {name!r} for process {process!r}")


def fill_variations(
    h: hist.Hist,
    *,
    process: str,
    region_masks: Mapping[str, np.ndarray],
    nominal_score: np.ndarray,
    varied_scores: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    weights: np.ndarray | None = None,
    min_events: int = DEFAULT_MIN_EVENTS,
    on_low_stats: str = "raise",
) -> hist.Hist:
    """Fill ``nominal``, ``<name>Up`` and ``<name>Down`` for one process.

    Parameters
    ----------
    h
        A histogram from :func:`make_hist` (filled in place and returned).
    process
        Process name (category of the process axis).
    region_masks
        ``{region: bool mask}``; each region must be a category of ``h``.
    nominal_score
        Nominal tagger score per event.
    varied_scores
        ``{name: (up_score, down_score)}``; ``down_score=None`` means mirrored
        (:func:`mirror_scores`).
    weights
        Event weights (default 1).
    min_events
        Regions with fewer (unweighted) events raise :class:`InputError`, or warn with
        :class:`LowStatisticsWarning` when ``on_low_stats="warn"``.
    """
    if not isinstance(process, str) or not process or any(c in process for c in "/; "):
        raise ConfigError(f"process name {process!r} must be non-empty without '/', ';', ' '")
    nominal = np.asarray(nominal_score)
    n = len(nominal)
    nominal = _check_scores(nominal, n, "nominal", process)
    w = _check_weights(weights, n, process)
    masks = _check_masks(h, region_masks, n, process, min_events, on_low_stats)
    low, high = _axis_range(h)
    templates: dict[str, np.ndarray] = {NOMINAL: nominal}
    for name, pair in varied_scores.items():
        _check_name(name, process)
        up, down = pair
        up = _check_scores(up, n, f"{name}Up", process)
        down = mirror_scores(nominal, up, low, high) if down is None else down
        templates[f"{name}Up"] = up
        templates[f"{name}Down"] = _check_scores(down, n, f"{name}Down", process)
    for syst, score in templates.items():
        score = _into_axis(score, high)
        for region, m in masks.items():
            h.fill(process=process, region=region, systematic=syst, score=score[m], weight=w[m])
    return h


def model_scores(
    model: Any, X: np.ndarray, score_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(score, predicted class)`` of a tagger on ``X``.

    Binary models: score = P(class 1), prediction = score >= the adapter threshold.
    Multi-class models: score = P(``score_class``) (required), prediction = argmax.
    """
    adapter = as_adapter(model, n_features=np.shape(X)[1])
    p = adapter.scores(np.asarray(X))
    if p.ndim == 1:
        if score_class not in (None, 1):
            raise ConfigError(f"binary model: score_class must be None or 1, got {score_class}")
        return p, (p >= adapter.threshold).astype(np.int64)
    if score_class is None:
        raise ModelOutputError(
            f"model has {p.shape[1]} classes: pass score_class to choose the histogrammed score"
        )
    return p[:, score_class], p.argmax(axis=1).astype(np.int64)


@dataclass
class VariationOutcome:
    """Everything needed to recompute a variation's numbers for one process.

    Attributes
    ----------
    name, process
        Variation and process names.
    result
        The variation's :class:`VariationResult` (features, flags, info).
    nominal_score, up_score, down_score
        Tagger scores per event (``down_score`` mirrored when ``down_mirrored``).
    nominal_pred, up_pred, down_pred
        Predicted classes (``down_pred`` is None when mirrored).
    detected
        Per-event detector decision on the up features (None without a detector).
    weights, region_masks
        Event weights and nominal region masks used to fill.
    """

    name: str
    process: str
    result: VariationResult
    nominal_score: np.ndarray
    up_score: np.ndarray
    down_score: np.ndarray
    down_mirrored: bool
    nominal_pred: np.ndarray
    up_pred: np.ndarray
    down_pred: np.ndarray | None
    detected: np.ndarray | None
    weights: np.ndarray
    region_masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def flipped(self) -> np.ndarray:
        """Events whose predicted class changes under the up variation."""
        return self.nominal_pred != self.up_pred


def evaluate_variations(
    X: np.ndarray,
    model: Any,
    variations: Sequence[str],
    context: VariationContext | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    process: str,
    region_masks: RegionSplit | Sequence[Region] | Mapping[str, np.ndarray],
    weights: np.ndarray | None = None,
    h: hist.Hist | None = None,
    score_axis: hist.axis.AxesMixin | None = None,
    score_class: int | None = None,
    min_events: int = DEFAULT_MIN_EVENTS,
    on_low_stats: str = "raise",
) -> tuple[hist.Hist, dict[str, VariationOutcome]]:
    """Run registered variations on one process and fill a histogram.

    The same as :func:`evaluate_dataset` with every event in ``process``; returns
    ``(hist, {variation name: VariationOutcome})``.
    """
    n = len(np.asarray(X))
    h, out = evaluate_dataset(
        X,
        model,
        variations,
        context,
        options,
        processes=np.full(n, process, dtype=object),
        region_masks=region_masks,
        weights=weights,
        h=h,
        score_axis=score_axis,
        score_class=score_class,
        min_events=min_events,
        on_low_stats=on_low_stats,
    )
    return h, out[process]


def _slice_result(res: VariationResult, sel: np.ndarray) -> VariationResult:
    return VariationResult(
        up=res.up[sel],
        down=None if res.down is None else res.down[sel],
        flags={k: np.asarray(v)[sel] for k, v in res.flags.items()},
        info=res.info,
    )


def evaluate_dataset(
    X: np.ndarray,
    model: Any,
    variations: Sequence[str],
    context: VariationContext | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    processes: Sequence[str] | np.ndarray,
    region_masks: RegionSplit | Sequence[Region] | Mapping[str, np.ndarray],
    weights: np.ndarray | None = None,
    h: hist.Hist | None = None,
    score_axis: hist.axis.AxesMixin | None = None,
    score_class: int | None = None,
    min_events: int = DEFAULT_MIN_EVENTS,
    on_low_stats: str = "raise",
) -> tuple[hist.Hist, dict[str, dict[str, VariationOutcome]]]:
    """Run each variation once on the whole data set, then fill per process.

    Dataset-level variations (CONSERVAttack) must see every event that defines the
    monitored statistics - all processes together, as in a real control region - so
    they run once on ``X`` here; the outcomes and histogram entries are then split by
    the per-event ``processes`` labels.

    Parameters
    ----------
    X
        Nominal features (n, d) of all processes.
    model
        The tagger (torch module or ModelAdapter).
    variations
        Registered variation names (see :func:`advsyst.systematics.available`).
    context
        Shared :class:`VariationContext`; ``weights`` here override ``context.weights``.
    options
        ``{variation name: options dict}`` passed to each variation.
    processes
        Process name of every event, shape (n,).
    region_masks
        A :class:`RegionSplit`, a list of :class:`Region`, or ``{region: mask}`` over all
        events.
    weights
        Event weights (default ``context.weights``, else 1).
    h
        Histogram to fill (default: a new one from :func:`make_hist` with ``score_axis``).
    score_class
        Column of a multi-class model's probabilities to histogram.
    min_events, on_low_stats
        See :func:`fill_variations` (checked per process and region).

    Returns
    -------
    (hist.Hist, dict[str, dict[str, VariationOutcome]])
        The filled histogram and ``{process: {variation: outcome}}``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"features must be a 2-D (events, features) array, got shape {X.shape}")
    n = len(X)
    procs = np.asarray(processes, dtype=object)
    if procs.shape != (n,):
        raise InputError(f"processes must have shape ({n},), got {procs.shape}")
    proc_names = [str(p) for p in dict.fromkeys(procs.tolist())]
    options = dict(options or {})
    unknown = set(options) - set(variations)
    if unknown:
        raise ConfigError(f"options given for variations not requested: {sorted(unknown)}")
    for name in variations:
        get(name)  # unknown names fail before any work
    if len(set(variations)) != len(variations):
        raise ConfigError(f"duplicate variation names in {list(variations)}")
    context = VariationContext() if context is None else context
    if weights is not None:
        context = dataclasses.replace(context, weights=np.asarray(weights, dtype=np.float64))
    context.check(n)
    w = _check_weights(context.weights, n, ",".join(proc_names))
    if h is None:
        h = make_hist(score_axis)
    all_masks = masks_from(region_masks, X, context.feature_names)
    sels = {p: procs == p for p in proc_names}
    masks = {
        p: _check_masks(
            h,
            {r: np.asarray(m)[sel] if np.shape(m) == (n,) else m for r, m in all_masks.items()},
            int(sel.sum()),
            p,
            min_events,
            on_low_stats,
        )
        for p, sel in sels.items()
    }
    low, high = _axis_range(h)
    nominal_score, nominal_pred = model_scores(model, X, score_class)
    _check_scores(nominal_score, n, "nominal", ",".join(proc_names))
    outcomes: dict[str, dict[str, VariationOutcome]] = {p: {} for p in proc_names}
    varied: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {p: {} for p in proc_names}
    for name in variations:
        res = run_variation(name, X, model, context=context, **dict(options.get(name, {})))
        up_score, up_pred = model_scores(model, res.up, score_class)
        _check_scores(up_score, n, f"{name}Up", ",".join(proc_names))
        if res.down is None:
            down_score, down_pred = mirror_scores(nominal_score, up_score, low, high), None
        else:
            down_score, down_pred = model_scores(model, res.down, score_class)
            _check_scores(down_score, n, f"{name}Down", ",".join(proc_names))
        if "detected" in res.flags:
            detected = np.asarray(res.flags["detected"], bool)
        elif context.detector is not None:
            detected = detector_scores(context.detector, res.up) >= float(
                context.detector_threshold
            )
        else:
            detected = None
        for p, sel in sels.items():
            outcomes[p][name] = VariationOutcome(
                name=name,
                process=p,
                result=_slice_result(res, sel),
                nominal_score=nominal_score[sel],
                up_score=up_score[sel],
                down_score=down_score[sel],
                down_mirrored=res.down is None,
                nominal_pred=nominal_pred[sel],
                up_pred=up_pred[sel],
                down_pred=None if down_pred is None else down_pred[sel],
                detected=None if detected is None else detected[sel],
                weights=w[sel],
                region_masks=masks[p],
            )
            varied[p][name] = (up_score[sel], down_score[sel])
    for p, sel in sels.items():
        fill_variations(
            h,
            process=p,
            region_masks=masks[p],
            nominal_score=nominal_score[sel],
            varied_scores=varied[p],
            weights=w[sel],
            min_events=0,
        )
    return h, outcomes


class SystematicsBuilder:
    """Accumulate several processes into one histogram.

    Example
    -------
    ::

        builder = SystematicsBuilder(model, ["conservattack"], {"conservattack": {"seed": 1}})
        builder.add_process("ttbar", X_tt, region_masks=split, weights=w_tt)
        builder.add_process("ww", X_ww, region_masks=split, weights=w_ww)
        h = builder.hist
        table = builder.table(budget=0.05)
    """

    def __init__(
        self,
        model: Any,
        variations: Sequence[str],
        options: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        score_axis: hist.axis.AxesMixin | None = None,
        variable_label: str = "tagger score",
        regions: Sequence[str] = ("control", "signal"),
        score_class: int | None = None,
        min_events: int = DEFAULT_MIN_EVENTS,
        on_low_stats: str = "raise",
    ) -> None:
        for name in variations:
            get(name)
        self.model = model
        self.variations = list(variations)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.score_class = score_class
        self.min_events = min_events
        self.on_low_stats = on_low_stats
        self.hist = make_hist(score_axis, variable_label, regions)
        self.outcomes: dict[str, dict[str, VariationOutcome]] = {}

    def add_process(
        self,
        process: str,
        X: np.ndarray,
        *,
        region_masks: RegionSplit | Sequence[Region] | Mapping[str, np.ndarray],
        context: VariationContext | None = None,
        weights: np.ndarray | None = None,
    ) -> dict[str, VariationOutcome]:
        """Run all variations on one process and fill the shared histogram."""
        if process in self.outcomes:
            raise ConfigError(f"process {process!r} was already added")
        _, out = evaluate_variations(
            X,
            self.model,
            self.variations,
            context,
            self.options,
            process=process,
            region_masks=region_masks,
            weights=weights,
            h=self.hist,
            score_class=self.score_class,
            min_events=self.min_events,
            on_low_stats=self.on_low_stats,
        )
        self.outcomes[process] = out
        return out

    def table(self, **kwargs: Any) -> Any:
        """An :class:`~advsyst.systematics.tables.UncertaintyTable` of everything added.

        Keyword arguments go to :func:`~advsyst.systematics.tables.build_uncertainty_table`.
        """
        from advsyst.systematics.tables import build_uncertainty_table

        return build_uncertainty_table(self.outcomes, **kwargs)
