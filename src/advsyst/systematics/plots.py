"""Diagnostic plots (matplotlib, no pyplot state, mplhep CMS style).

Every function draws into its own :class:`matplotlib.figure.Figure` rendered with the
Agg canvas, writes the file atomically (format from the file suffix, PNG by default)
and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hist
import matplotlib
import matplotlib.style
import mplhep as hep
import numpy as np
from matplotlib.figure import Figure

from advsyst._io import atomic_path
from advsyst.errors import InputError
from advsyst.systematics.histograms import NOMINAL

__all__ = [
    "plot_score_variations",
    "plot_marginals",
    "plot_correlation_matrices",
    "plot_attack_history",
    "plot_detector_efficiency",
    "weighted_correlation",
    "ratio_range",
]

_HISTORY_KEYS = ("iteration", "fooling_ratio", "jsd_mean", "jsd_max", "dfn")


def _style() -> Any:
    return matplotlib.style.context(hep.style.CMS)


def _figure(width: float, height: float) -> Figure:
    """A figure whose layout engine keeps labels of neighbouring panels apart."""
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.15, h_pad=0.05, wspace=0.08, hspace=0.02)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    final = Path(path)
    fmt = final.suffix.lstrip(".").lower() or "png"
    with atomic_path(final) as tmp:
        fig.savefig(tmp, format=fmt, dpi=100, bbox_inches="tight")
    return final


def _label(ax: Any, data: bool = False) -> None:
    """One experiment-style label above the axes, left: "**advsyst** *Simulation*", or
    "**advsyst**" alone for plots with data.

    Written as one title: mplhep's ``exp_label`` adds "Simulation" by itself (passing it
    the text too printed "Simulation Simulation") and its two-part spacing collides at
    small font sizes.  A neutral name: these are advsyst studies, not CMS results.
    """
    text = r"$\mathbf{advsyst}$" + ("" if data else r" $\mathit{Simulation}$")
    ax.set_title(text, loc="left", fontsize=16)


def _nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= x."""
    k = np.floor(np.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10**k >= x * (1 - 1e-12):
            return float(m * 10**k)
    return float(10 ** (k + 1))  # pragma: no cover


def ratio_range(
    nominal: np.ndarray,
    ratios: Sequence[np.ndarray],
    *,
    bulk_fraction: float = 0.05,
    min_half_width: float = 0.05,
    max_half_width: float = 1.0,
) -> tuple[float, float]:
    """A ratio-panel range ``1 +- h`` that shows the bulk of the distribution.

    ``h`` is the largest ``|ratio - 1|`` over the *bulk* bins -- those whose nominal
    content is at least ``bulk_fraction`` of the largest bin -- rounded up to 1, 2, 2.5
    or 5 x 10^k and kept within ``[min_half_width, max_half_width]``.  Sparse edge bins
    with huge ratios do not set the scale; the plot marks them instead.
    """
    nv = np.asarray(nominal, dtype=np.float64)
    bulk = nv >= bulk_fraction * nv.max() if nv.size and nv.max() > 0 else nv > 0
    dev = [np.abs(np.asarray(r, dtype=np.float64)[bulk] - 1.0) for r in ratios]
    dev_all = np.concatenate(dev) if dev else np.zeros(0)
    dev_all = dev_all[np.isfinite(dev_all)]
    h = float(dev_all.max()) * 1.1 if dev_all.size else min_half_width
    h = min(max(_nice_ceil(max(h, 1e-12)), min_half_width), max_half_width)
    return 1.0 - h, 1.0 + h


def _mark_outside(rax: Any, centers: np.ndarray, r: np.ndarray, lo: float, hi: float,
                  color: str) -> int:  # fmt: skip
    """Triangles at the panel edge for ratios outside ``[lo, hi]``; returns their count."""
    pad = 0.06 * (hi - lo)
    above = np.isposinf(r) | (np.isfinite(r) & (r > hi))
    below = np.isfinite(r) & (r < lo)
    # inside the panel (an empty unclipped line breaks the constrained layout)
    if above.any():
        rax.plot(centers[above], np.full(above.sum(), hi - pad), "^", color=color, ms=9)
    if below.any():
        rax.plot(centers[below], np.full(below.sum(), lo + pad), "v", color=color, ms=9)
    return int(above.sum() + below.sum())


def plot_score_variations(
    h: hist.Hist,
    path: str | os.PathLike[str],
    *,
    process: str,
    variation: str,
    regions: Sequence[str] | None = None,
    ratio_limits: tuple[float, float] | None = None,
) -> Path:
    """Nominal vs ``<variation>Up/Down`` templates per region, with the band.

    Top: nominal (with its statistical uncertainty), the up and down templates, and the
    shaded envelope between them; bottom: ratios to nominal in a range that shows the
    bulk of the distribution (:func:`ratio_range`, or ``ratio_limits``), with triangles
    at the panel edge for bins whose ratio lies outside it (upwards: above, also where
    the nominal is empty).  Works for any observable axis
    (:func:`~advsyst.systematics.histograms.template_axes`).
    """
    from advsyst.systematics.histograms import template_axes

    channels, obs = template_axes(h)
    if process not in list(h.axes["process"]):
        raise InputError(f"process {process!r} not in the histogram")
    cats = list(h.axes["systematic"])
    for s in (NOMINAL, f"{variation}Up", f"{variation}Down"):
        if s not in cats:
            raise InputError(f"template {s!r} not in the histogram; have {cats}")
    if "region" not in channels:
        raise InputError("plot_score_variations needs a 'region' axis")
    extra = [c for c in channels if c != "region"]
    if extra:
        raise InputError(f"select one category of {extra} first (e.g. h[{{'{extra[0]}': ...}}])")
    regions = list(h.axes["region"]) if regions is None else list(regions)
    edges = np.asarray(h.axes[obs].edges)
    centers = 0.5 * (edges[1:] + edges[:-1])
    with _style():
        fig = _figure(7.5 * len(regions), 8)
        gs = fig.add_gridspec(2, len(regions), height_ratios=(3, 1))
        for k, region in enumerate(regions):
            ax = fig.add_subplot(gs[0, k])
            rax = fig.add_subplot(gs[1, k], sharex=ax)

            def get(s: str, region: str = region) -> hist.Hist:
                return h[{"process": process, "region": region, "systematic": s}]

            nom, up, dn = get(NOMINAL), get(f"{variation}Up"), get(f"{variation}Down")
            nv, uv, dv = nom.values(), up.values(), dn.values()
            hep.histplot(
                nv, edges, yerr=np.sqrt(nom.variances()), ax=ax, color="k", label="nominal"
            )
            hep.histplot(uv, edges, ax=ax, color="tab:red", ls="--", label=f"{variation} up")
            hep.histplot(dv, edges, ax=ax, color="tab:blue", ls=":", label=f"{variation} down")
            lo, hi = np.minimum(uv, dv), np.maximum(uv, dv)
            ax.stairs(
                hi, edges, baseline=lo, fill=True, alpha=0.25, color="tab:orange", label="band"
            )
            ax.set_ylabel("weighted events")
            ax.set_title(f"{process}, {region}", fontsize=14, loc="right")
            ax.tick_params(labelbottom=False)
            ax.set_xlabel("")
            with np.errstate(divide="ignore", invalid="ignore"):
                ru = np.where(nv > 0, uv / nv, np.where(uv > 0, np.inf, np.nan))
                rd = np.where(nv > 0, dv / nv, np.where(dv > 0, np.inf, np.nan))
                rel = np.where(nv > 0, np.sqrt(nom.variances()) / nv, np.nan)
            r_lo, r_hi = ratio_limits or ratio_range(nv, [ru, rd])
            rax.stairs(1 + rel, edges, baseline=1 - rel, fill=True, alpha=0.2, color="gray")
            rax.stairs(np.where(np.isfinite(ru), ru, np.nan), edges, color="tab:red", ls="--")
            rax.stairs(np.where(np.isfinite(rd), rd, np.nan), edges, color="tab:blue", ls=":")
            n_out = _mark_outside(rax, centers, ru, r_lo, r_hi, "tab:red")
            n_out += _mark_outside(rax, centers, rd, r_lo, r_hi, "tab:blue")
            rax.axhline(1.0, color="k", lw=1)
            rax.set_ylim(r_lo, r_hi)
            rax.set_ylabel("var. / nom.")
            rax.set_xlabel(h.axes[obs].label or obs)
            if n_out:
                ax.plot([], [], "^", color="gray", ms=9, label="ratio off scale")
            ax.legend(fontsize=12)
            _label(ax)
        return _save(fig, path)


def weighted_correlation(X: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted Pearson correlation matrix of the columns of ``X`` (NaN for constant columns).

    Same convention as the attack's budget (:class:`advsyst.stats.MomentTracker`).
    """
    from advsyst.stats import MomentTracker

    moments = MomentTracker.from_data(np.asarray(X, dtype=np.float64), weights)
    ok = np.diag(moments.cov) > 0
    C = moments.correlation(valid=ok)
    C[~ok, :] = np.nan
    C[:, ~ok] = np.nan
    return C


def _check_pair(X_clean: Any, X_adv: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(X_clean, dtype=np.float64), np.asarray(X_adv, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(
            f"clean and adversarial features must be equal 2-D shapes, got {a.shape}, {b.shape}"
        )
    return a, b


def _names(feature_names: Sequence[str] | None, d: int) -> list[str]:
    if feature_names is None:
        return [f"feature {j}" for j in range(d)]
    if len(feature_names) != d:
        raise InputError(f"{len(feature_names)} feature names for {d} features")
    return [str(n) for n in feature_names]


def plot_marginals(
    X_clean: np.ndarray,
    X_adv: np.ndarray,
    jsd: np.ndarray,
    path: str | os.PathLike[str],
    *,
    feature_names: Sequence[str] | None = None,
    weights: np.ndarray | None = None,
    bins: int = 40,
) -> Path:
    """Clean vs adversarial marginals of the features with the smallest, median and
    largest JSD (``jsd``: one value per feature, e.g. the attack's ``metrics["jsd"]``)."""
    a, b = _check_pair(X_clean, X_adv)
    jsd = np.asarray(jsd, dtype=np.float64)
    if jsd.shape != (a.shape[1],):
        raise InputError(f"jsd has shape {jsd.shape}, expected ({a.shape[1]},)")
    names = _names(feature_names, a.shape[1])
    order = np.argsort(jsd, kind="stable")
    picks = [("smallest", order[0]), ("median", order[len(order) // 2]), ("largest", order[-1])]
    with _style():
        fig = _figure(21, 6.5)
        for k, (what, j) in enumerate(picks):
            ax = fig.add_subplot(1, 3, k + 1)
            lo = min(a[:, j].min(), b[:, j].min())
            hi = max(a[:, j].max(), b[:, j].max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
            ca, _ = np.histogram(a[:, j], edges, weights=weights)
            cb, _ = np.histogram(b[:, j], edges, weights=weights)
            hep.histplot(ca, edges, ax=ax, color="k", label="clean")
            hep.histplot(cb, edges, ax=ax, color="tab:red", ls="--", label="adversarial")
            ax.set_xlabel(names[j])
            ax.set_ylabel("weighted events")
            ax.set_title(f"{what} JSD = {jsd[j]:.3g}", fontsize=14, loc="right")
            ax.legend(fontsize=12)
        return _save(fig, path)


def plot_correlation_matrices(
    X_clean: np.ndarray,
    X_adv: np.ndarray,
    path: str | os.PathLike[str],
    *,
    weights: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
) -> Path:
    """Weighted correlation matrices of the clean and the adversarial features and
    their difference."""
    a, b = _check_pair(X_clean, X_adv)
    names = _names(feature_names, a.shape[1])
    ca, cb = weighted_correlation(a, weights), weighted_correlation(b, weights)
    d = a.shape[1]
    with _style():
        fig = _figure(24, 7.5)
        panels = [("clean", ca, -1, 1), ("adversarial", cb, -1, 1)]
        diff = cb - ca
        m = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
        panels.append(("adversarial - clean", diff, -(m or 1.0), m or 1.0))
        for k, (title, mat, vmin, vmax) in enumerate(panels):
            ax = fig.add_subplot(1, 3, k + 1)
            im = ax.imshow(mat, cmap="RdBu_r", vmin=vmin, vmax=vmax)
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(title, fontsize=16)
            if d <= 30:
                ax.set_xticks(range(d), names, rotation=90, fontsize=8)
                ax.set_yticks(range(d), names, fontsize=8)
        return _save(fig, path)


def plot_attack_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Fooling ratio, mean/max JSD and ΔFN per attack iteration.

    ``history``: one dict per iteration with keys ``iteration``, ``fooling_ratio``,
    ``jsd_mean``, ``jsd_max``, ``dfn`` (as in ``AttackResult.history``).
    """
    if not history:
        raise InputError("attack history is empty")
    for k, rec in enumerate(history):
        missing = [key for key in _HISTORY_KEYS if key not in rec]
        if missing:
            raise InputError(f"history entry {k} lacks keys {missing}")
    col = {key: np.array([float(r[key]) for r in history]) for key in _HISTORY_KEYS}
    it = col["iteration"]
    with _style():
        fig = _figure(21, 6)
        ax = fig.add_subplot(1, 3, 1)
        ax.plot(it, col["fooling_ratio"], "o-", color="k")
        ax.set_ylabel("fooling ratio")
        ax = fig.add_subplot(1, 3, 2)
        ax.plot(it, col["jsd_mean"], "o-", label="mean")
        ax.plot(it, col["jsd_max"], "s--", label="max")
        ax.set_ylabel("JSD")
        ax.legend(fontsize=12)
        ax = fig.add_subplot(1, 3, 3)
        ax.plot(it, col["dfn"], "o-", color="tab:red")
        ax.set_ylabel(r"$\Delta$FN")
        for a in fig.axes:
            a.set_xlabel("iteration")
            a.ticklabel_format(axis="y", useOffset=False)  # no "1e-6+4.999e-2" offsets
        return _save(fig, path)


def plot_detector_efficiency(
    thresholds: np.ndarray,
    eff_mc: np.ndarray,
    err_mc: np.ndarray,
    eff_data: np.ndarray,
    err_data: np.ndarray,
    path: str | os.PathLike[str],
    *,
    label_mc: str = "simulation",
    label_data: str = "data",
) -> Path:
    """Detector clean-event efficiency versus threshold, data vs simulation, with
    uncertainty bands and a data/simulation ratio panel."""
    arrs = [
        np.asarray(x, dtype=np.float64) for x in (thresholds, eff_mc, err_mc, eff_data, err_data)
    ]
    if len({a.shape for a in arrs}) != 1 or arrs[0].ndim != 1:
        raise InputError("thresholds, efficiencies and errors must be 1-D arrays of one length")
    t, em, sm, ed, sd = arrs
    with _style():
        fig = _figure(8, 8)
        gs = fig.add_gridspec(2, 1, height_ratios=(3, 1))
        ax = fig.add_subplot(gs[0])
        rax = fig.add_subplot(gs[1], sharex=ax)
        for e, s, c, lab in ((em, sm, "tab:red", label_mc), (ed, sd, "tab:blue", label_data)):
            ax.plot(t, e, color=c, label=lab)
            ax.fill_between(t, e - s, e + s, color=c, alpha=0.3)
        ax.set_ylabel("clean-event efficiency")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=12)
        ax.tick_params(labelbottom=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(em > 0, ed / em, np.nan)
            rerr = np.where(em > 0, np.hypot(sd / em, ed * sm / em**2), np.nan)
        rax.plot(t, r, color="k")
        rax.fill_between(t, r - rerr, r + rerr, color="gray", alpha=0.3)
        rax.axhline(1.0, color="k", lw=1, ls=":")
        rax.set_ylabel("data / sim.")
        rax.set_xlabel("detector threshold")
        _label(ax, data=True)
        return _save(fig, path)
