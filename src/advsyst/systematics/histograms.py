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
* When a variation gives no down features, the ``<name>Down`` template is, by default,
  the *template* mirror of the up template around the nominal, bin by bin
  (:func:`mirror_templates`, ``down="template"``): cabinetry's one-sided convention
  (its ``Symmetrize`` option) -- the normalisation effect ``r = sum(up) / sum(nominal)``
  is mirrored to ``2 - r`` and the shape of the normalised up template is mirrored,
  ``2 * nominal - up / r``, per bin.  When the up template keeps the total yield
  (``r = 1``, always the case for a score of the same jets with the same weights) this
  is simply ``down = 2 * nominal - up`` per bin.  Bins that come out negative are
  floored at 0 and the floored shape is rescaled to the nominal total, so that the down
  normalisation stays exactly ``2 - r``; the down template carries the nominal's
  ``sum(w^2)``.
* ``down="per-jet"`` instead mirrors each jet's score, ``clip(2 * nominal - up, low,
  high)`` (:func:`mirror_scores`), and fills that.  Caveat: a jet's score is bounded,
  so every jet the attack pushes away from an edge is mirrored *onto* that edge -- the
  per-jet down template piles up in the first and last bins and is not the mirror image
  of the up template's effect.  Use it only to compare with older results.
* Either way a mirrored variation has no down *prediction*, so fooling ratios use the
  up variation only.
* Region membership is decided on the *nominal* features (``region_masks``); the
  variations move events in score, not between regions.
"""

from __future__ import annotations

import dataclasses
import itertools
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
    "mirror_templates",
    "template_axes",
    "DOWN_MODES",
    "evaluate_variations",
    "model_scores",
    "NOMINAL",
    "DEFAULT_MIN_EVENTS",
]

NOMINAL = "nominal"
DEFAULT_MIN_EVENTS = 10
#: How a variation without down features gets its ``<name>Down`` template.
DOWN_MODES = ("template", "per-jet")


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


def template_axes(h: hist.Hist) -> tuple[list[str], str]:
    """``(channel axes, observable axis)`` of a template histogram.

    A template histogram has StrCategory axes ``process`` and ``systematic``, any number
    of further category axes (``region``, a year, a lepton flavour...: the *channel*
    axes, ``region`` first) and exactly one non-category axis, the observable (a score,
    a jet mass...), with ``Weight()`` storage.

    Raises
    ------
    InputError
        Naming what is missing or extra.
    """
    if not isinstance(h, hist.Hist):
        raise InputError(f"expected a hist.Hist, got {type(h).__name__}")
    names = [ax.name for ax in h.axes]
    for need in ("process", "systematic"):
        if need not in names:
            raise InputError(f"the histogram needs a '{need}' category axis; it has axes {names}")
        if not isinstance(h.axes[need], hist.axis.StrCategory):
            raise InputError(f"axis '{need}' must be a StrCategory axis")
    cats = [
        ax.name
        for ax in h.axes
        if isinstance(ax, hist.axis.StrCategory | hist.axis.IntCategory)
        and ax.name not in ("process", "systematic")
    ]
    obs = [
        ax.name
        for ax in h.axes
        if not isinstance(ax, hist.axis.StrCategory | hist.axis.IntCategory)
    ]
    if len(obs) != 1:
        raise InputError(
            f"a template histogram has exactly one observable (non-category) axis; this one "
            f"has {len(obs)}: {obs}. Project the others out first, e.g. "
            f"h.project({', '.join(repr(n) for n in names if n not in obs[1:])})"
            if obs
            else f"a template histogram needs one observable axis; axes are {names}"
        )
    if h.storage_type is not hist.storage.Weight:
        raise InputError("the histogram needs Weight() storage (sum of squared weights)")
    cats.sort(key=lambda n: n != "region")  # region first, the others in axis order
    return cats, obs[0]


def _category_index(h: hist.Hist, name: str, value: Any) -> int:
    ax = h.axes[name]
    i = int(ax.index(value))
    if i >= len(ax) or ax[i] != value:
        raise InputError(f"{value!r} is not a category of axis {name!r}")
    return i


def _flow_index(h: hist.Hist, obs: str, pos: Mapping[str, int], isyst: int) -> tuple[Any, ...]:
    """Index into ``h.view(flow=True)``: categories at ``pos``, the whole observable axis."""
    idx = dict(pos, systematic=isyst)
    return tuple(
        slice(None) if ax.name == obs else idx[ax.name] + int(ax.traits.underflow) for ax in h.axes
    )


def _with_categories(h: hist.Hist, axis: str, names: Sequence[str]) -> hist.Hist:
    """``h`` with the categories ``names`` appended to its StrCategory ``axis`` (empty).

    A growing axis grows in place (``h`` is returned); otherwise a copy with the longer
    axis is returned, holding the same contents (flow bins included)."""
    ax = h.axes[axis]
    if ax.traits.growth:
        for name in names:  # a zero-weight entry adds the category, contents unchanged
            h.fill(
                **{
                    a.name: (name if a.name == axis else a[0])
                    if isinstance(a, hist.axis.StrCategory | hist.axis.IntCategory)
                    else np.asarray([a.edges[0]])
                    for a in h.axes
                },
                weight=np.zeros(1),
            )
        return h
    new_ax = hist.axis.StrCategory(
        [str(c) for c in ax] + list(names),
        name=ax.name,
        label=ax.label,
        growth=False,
        overflow=ax.traits.overflow,
    )
    i = [a.name for a in h.axes].index(axis)
    out = hist.Hist(*h.axes[:i], new_ax, *h.axes[i + 1 :], storage=h.storage_type())
    old, new = h.view(flow=True), out.view(flow=True)
    k = len(ax)
    head = (slice(None),) * i
    new[head + (slice(0, k),)] = old[head + (slice(0, k),)]
    if ax.traits.overflow:  # the old overflow bin (unknown categories) stays the overflow
        new[head + (slice(-1, None),)] = old[head + (slice(k, None),)]
    return out


def mirror_templates(
    h: hist.Hist,
    variations: Sequence[str] | None = None,
    *,
    processes: Sequence[str] | None = None,
) -> hist.Hist:
    """(Re)compute ``<name>Down`` as the template mirror of ``<name>Up`` around the nominal.

    cabinetry's one-sided ``Symmetrize`` convention, per process and channel (every
    combination of the other category axes), over all bins of the observable including
    the flow bins: with ``N`` the nominal, ``U`` the up template and
    ``r = sum(U) / sum(N)``::

        Down = (2 - r) * rescale(max(2 * N - U / r, 0))

    where ``rescale`` brings the floored shape back to ``sum(N)`` (a no-op unless a bin
    was floored).  For ``r = 1`` this is ``Down = 2 * N - U`` bin by bin.  The variance
    of the down template is the nominal's.  Process / channel combinations whose up
    template was never filled (collision data, a process that does not carry the
    variation) are left alone.  Call it again after merging histograms filled in pieces (coffea accumulators add the pieces' down templates, and the floor
    does not commute with the sum).

    Parameters
    ----------
    h
        Template histogram (see :func:`template_axes`), modified in place and returned;
        when a ``<name>Down`` category is missing and the systematic axis cannot grow, a
        copy with the category added is returned instead: always use the return value.
    variations
        Variation names (default: every ``<name>Up`` in ``h``).
    processes
        Processes to mirror (default: all).

    Raises
    ------
    InputError
        If an up template more than doubles the nominal yield (``r >= 2``: the mirrored
        normalisation would be negative) or has a yield where the nominal has none.
    """
    channels, obs = template_axes(h)
    systs = [str(s) for s in h.axes["systematic"]]
    if NOMINAL not in systs:
        raise InputError("the histogram has no 'nominal' templates to mirror around")
    if variations is None:
        variations = [s[:-2] for s in systs if s.endswith("Up")]
    procs = [str(p) for p in h.axes["process"]] if processes is None else list(processes)
    for name in variations:
        if f"{name}Up" not in systs:
            raise InputError(f"no '{name}Up' template to mirror; have {systs}")
    missing = [f"{name}Down" for name in variations if f"{name}Down" not in systs]
    if missing:
        h = _with_categories(h, "systematic", missing)
        systs = [str(s) for s in h.axes["systematic"]]
    view = h.view(flow=True)
    i_nom = _category_index(h, "systematic", NOMINAL)
    ranges = [range(len(h.axes[c]) + int(h.axes[c].traits.overflow)) for c in channels]
    for p in procs:
        ip = _category_index(h, "process", p)
        for name in variations:
            i_up = _category_index(h, "systematic", f"{name}Up")
            i_dn = _category_index(h, "systematic", f"{name}Down")
            for combo in itertools.product(*ranges):
                pos = {"process": ip, **dict(zip(channels, combo, strict=True))}
                nom = view[_flow_index(h, obs, pos, i_nom)]
                up = view[_flow_index(h, obs, pos, i_up)]
                if not (np.any(up["value"] != 0) or np.any(up["variance"] != 0)):
                    continue  # never filled: this process / channel does not carry it
                dn = view[_flow_index(h, obs, pos, i_dn)]
                where = ", ".join(
                    f"{k}={h.axes[k][v]!r}" for k, v in pos.items() if v < len(h.axes[k])
                )
                dn["value"] = _mirror(
                    np.asarray(nom["value"], dtype=np.float64),
                    np.asarray(up["value"], dtype=np.float64),
                    f"{name}Down ({where})",
                )
                dn["variance"] = np.asarray(nom["variance"], dtype=np.float64)
    return h


def _mirror(nom: np.ndarray, up: np.ndarray, what: str) -> np.ndarray:
    s_nom, s_up = float(nom.sum()), float(up.sum())
    if s_nom == 0.0:
        if s_up != 0.0 or np.any(up != 0):
            raise InputError(f"{what}: the up template has entries where the nominal is empty")
        return np.zeros_like(nom)
    r = s_up / s_nom
    if not np.isfinite(r) or r >= 2.0 or r <= 0.0:
        raise InputError(
            f"{what}: up/nominal yield ratio {r:.4g} outside (0, 2); a mirrored down template "
            "would have a negative or undefined yield -- give explicit down features"
        )
    raw = 2.0 * nom - up / r
    shape = np.maximum(raw, 0.0)
    total = float(shape.sum())
    if total <= 0.0:
        raise InputError(f"{what}: the mirrored down template is empty after flooring at 0")
    if np.any(raw < 0.0):
        shape *= s_nom / total
    return (2.0 - r) * shape


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
    down: str = "template",
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
        ``{name: (up_score, down_score)}``; ``down_score=None`` means mirrored, as
        ``down`` says.
    weights
        Event weights (default 1).
    min_events
        Regions with fewer (unweighted) events raise :class:`InputError`, or warn with
        :class:`LowStatisticsWarning` when ``on_low_stats="warn"``.
    down
        ``"template"`` (default): the down template of a mirrored variation is the
        template mirror of this process' accumulated up template
        (:func:`mirror_templates`, cabinetry's ``Symmetrize``); ``"per-jet"``: each
        jet's score is mirrored (:func:`mirror_scores`; see the module notes for its
        caveat).
    """
    if not isinstance(process, str) or not process:
        raise ConfigError(f"process name {process!r} must be a non-empty string")
    if down not in DOWN_MODES:
        raise ConfigError(f"down must be one of {DOWN_MODES}, got {down!r}")
    nominal = np.asarray(nominal_score)
    n = len(nominal)
    nominal = _check_scores(nominal, n, "nominal", process)
    w = _check_weights(weights, n, process)
    masks = _check_masks(h, region_masks, n, process, min_events, on_low_stats)
    low, high = _axis_range(h)
    templates: dict[str, np.ndarray] = {NOMINAL: nominal}
    mirrored: list[str] = []
    for name, pair in varied_scores.items():
        _check_name(name, process)
        up, dn = pair
        up = _check_scores(up, n, f"{name}Up", process)
        templates[f"{name}Up"] = up
        if dn is None and down == "template":
            mirrored.append(name)
            continue
        dn = mirror_scores(nominal, up, low, high) if dn is None else dn
        templates[f"{name}Down"] = _check_scores(dn, n, f"{name}Down", process)
    for syst, score in templates.items():
        score = _into_axis(score, high)
        for region, m in masks.items():
            h.fill(process=process, region=region, systematic=syst, score=score[m], weight=w[m])
    if mirrored:
        mirror_templates(h, mirrored, processes=[process])
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
    down: str = "template",
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
        down=down,
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
    down: str = "template",
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
    down
        Down templates of variations without down features: ``"template"`` (default,
        :func:`mirror_templates`) or ``"per-jet"`` (:func:`mirror_scores`); see
        :func:`fill_variations`.  The outcomes' ``down_score`` is the per-jet mirror
        either way (``down_mirrored`` True).

    Returns
    -------
    (hist.Hist, dict[str, dict[str, VariationOutcome]])
        The filled histogram and ``{process: {variation: outcome}}``.
    """
    if down not in DOWN_MODES:
        raise ConfigError(f"down must be one of {DOWN_MODES}, got {down!r}")
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
    varied: dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]] = {p: {} for p in proc_names}
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
            template_mirror = res.down is None and down == "template"
            varied[p][name] = (up_score[sel], None if template_mirror else down_score[sel])
    for p, sel in sels.items():
        fill_variations(
            h,
            process=p,
            region_masks=masks[p],
            nominal_score=nominal_score[sel],
            varied_scores=varied[p],
            weights=w[sel],
            min_events=0,
            down=down,
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
        down: str = "template",
    ) -> None:
        for name in variations:
            get(name)
        self.model = model
        self.variations = list(variations)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.score_class = score_class
        self.min_events = min_events
        self.on_low_stats = on_low_stats
        if down not in DOWN_MODES:
            raise ConfigError(f"down must be one of {DOWN_MODES}, got {down!r}")
        self.down = down
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
            down=self.down,
        )
        self.outcomes[process] = out
        return out

    def table(self, **kwargs: Any) -> Any:
        """An :class:`~advsyst.systematics.tables.UncertaintyTable` of everything added.

        Keyword arguments go to :func:`~advsyst.systematics.tables.build_uncertainty_table`.
        """
        from advsyst.systematics.tables import build_uncertainty_table

        return build_uncertainty_table(self.outcomes, **kwargs)
