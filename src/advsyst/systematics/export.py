"""ROOT histograms and pyhf workspaces from the systematics histogram.

ROOT files hold one 1-D histogram (the score axis, with sum of weights and sum of
squared weights) per region, process and systematic, named
``{region}_{process}_{variation}`` with variation ``nominal``, ``<name>Up`` or
``<name>Down`` — point cabinetry at them with e.g.
``InputPath: "hists.root:{RegionPath}_{SamplePath}_{VariationPath}"``.

The pyhf workspace has one channel per region and one sample per process.  The signal
process carries a free ``normfactor`` (the POI).  Each adversarial systematic becomes,
on every sample that has Up/Down templates, a ``normsys`` (the change of the total
yield in the channel, ``hi = sum(up) / sum(nominal)``, ``lo = sum(down) / sum(nominal)``)
and a ``histosys`` of the same name (so one nuisance parameter drives both) whose
templates are the Up/Down shapes rescaled to the nominal total — the usual split of a
template variation into normalisation and shape.  ``staterror`` modifiers (one per
channel, shared by its samples) carry ``sqrt(sum w^2)`` of the nominal templates.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hist
import numpy as np

from advsyst._io import atomic_path, atomic_write_json
from advsyst.errors import ConfigError, InputError
from advsyst.systematics.histograms import NOMINAL

__all__ = [
    "histogram_name",
    "iter_templates",
    "write_root_histograms",
    "systematic_names",
    "build_pyhf_workspace",
    "write_workspace",
]

_BAD = set("/;: \t\n")


def histogram_name(region: str, process: str, variation: str) -> str:
    """``{region}_{process}_{variation}``; raises InputError for characters ROOT keys dislike."""
    for label, part in (("region", region), ("process", process), ("variation", variation)):
        if not part or _BAD & set(part):
            raise InputError(f"{label} name {part!r} cannot be used in a ROOT histogram name")
    return f"{region}_{process}_{variation}"


def _check_hist(h: hist.Hist) -> None:
    names = [ax.name for ax in h.axes]
    if names != ["process", "region", "systematic", "score"]:
        raise InputError(
            f"expected a histogram with axes process/region/systematic/score, got {names}"
        )
    if h.storage_type is not hist.storage.Weight:
        raise InputError("the histogram needs Weight() storage (sum of squared weights)")


def _filled(sub: hist.Hist) -> bool:
    view = sub.view(flow=True)
    return bool(np.any(view["value"] != 0) or np.any(view["variance"] != 0))


def _template(h: hist.Hist, process: str, region: str, syst: str) -> hist.Hist:
    return h[{"process": process, "region": region, "systematic": syst}]


def iter_templates(h: hist.Hist) -> Iterable[tuple[str, str, str, hist.Hist]]:
    """``(region, process, systematic, 1-D score histogram)`` for every filled template.

    Templates never filled (an empty category combination) are skipped.
    """
    _check_hist(h)
    for process in h.axes["process"]:
        for region in h.axes["region"]:
            for syst in h.axes["systematic"]:
                sub = h[{"process": process, "region": region, "systematic": syst}]
                if _filled(sub):
                    yield region, process, syst, sub


def write_root_histograms(
    path: str | os.PathLike[str], hists: hist.Hist | Sequence[hist.Hist]
) -> list[str]:
    """Write every template of one or more histograms into one ROOT file, atomically.

    Parameters
    ----------
    path
        Output ``.root`` file (replaced if it exists).
    hists
        Histograms from :func:`~advsyst.systematics.histograms.make_hist`.

    Returns
    -------
    list[str]
        The names written, ``{region}_{process}_{variation}``.

    Raises
    ------
    InputError
        If two histograms yield the same name.
    """
    import uproot

    hlist = [hists] if isinstance(hists, hist.Hist) else list(hists)
    items: dict[str, hist.Hist] = {}
    for h in hlist:
        for region, process, syst, sub in iter_templates(h):
            name = histogram_name(region, process, syst)
            if name in items:
                raise InputError(f"histogram {name!r} appears twice in the inputs")
            items[name] = sub
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp) as fout:
            for name, sub in items.items():
                fout[name] = sub
    return list(items)


def systematic_names(h: hist.Hist) -> list[str]:
    """Names ``<name>`` that have both ``<name>Up`` and ``<name>Down`` in ``h``."""
    cats = set(h.axes["systematic"])
    return sorted(c[:-2] for c in cats if c.endswith("Up") and f"{c[:-2]}Down" in cats)


def _values(h: hist.Hist, process: str, region: str, syst: str) -> tuple[np.ndarray, np.ndarray]:
    sub = _template(h, process, region, syst)
    return np.asarray(sub.values(), dtype=np.float64), np.asarray(sub.variances(), dtype=np.float64)


def build_pyhf_workspace(
    h: hist.Hist,
    *,
    signal_process: str,
    data: str | Mapping[str, Sequence[float]] = "asimov",
    poi: str = "mu",
    systematics: Sequence[str] | None = None,
    measurement: str = "adversarial_systematics",
    staterror: bool = True,
    normsys: bool = True,
    histosys: bool = True,
    empty_bins: str = "drop",
) -> dict[str, Any]:
    """A pyhf workspace specification (dict) built from the systematics histogram.

    Parameters
    ----------
    h
        Histogram from :func:`~advsyst.systematics.histograms.make_hist`, filled.
    signal_process
        The process scaled by the POI.
    data
        ``"asimov"`` (observations = the sum of nominal templates, POI = 1) or
        ``{region: observed counts per score bin}``.
    poi
        Name of the parameter of interest.
    systematics
        Systematic names to include (default: all with Up and Down templates).
    measurement
        Name of the measurement.
    staterror, normsys, histosys
        Which modifier types to add.
    empty_bins
        ``"drop"`` (default): score bins where the summed nominal templates of a
        channel are zero are left out of that channel (with observed data there an
        :class:`InputError` is raised: no model can describe it).  pyhf's polynomial
        ``histosys`` interpolation turns a variation that moves events into a bin with
        no nominal events into a negative expectation, which breaks fits.  ``"keep"``
        keeps the histogram binning unchanged.

    Returns
    -------
    dict
        A specification that ``pyhf.Workspace`` accepts.
    """
    _check_hist(h)
    processes = list(h.axes["process"])
    regions = list(h.axes["region"])
    if signal_process not in processes:
        raise InputError(
            f"signal process {signal_process!r} not in the histogram; have {processes}"
        )
    available = systematic_names(h)
    systs = available if systematics is None else list(systematics)
    missing = sorted(set(systs) - set(available))
    if missing:
        raise ConfigError(
            f"systematics {missing} have no Up/Down templates; available: {available}"
        )
    if empty_bins not in ("drop", "keep"):
        raise ConfigError(f"empty_bins must be 'drop' or 'keep', got {empty_bins!r}")
    nbins = h.axes["score"].size
    channels, observations = [], []
    cats = set(h.axes["systematic"])
    if NOMINAL not in cats:
        raise InputError("the histogram has no 'nominal' templates")
    for region in regions:
        present = [p for p in processes if _filled(_template(h, p, region, NOMINAL))]
        if not present:
            continue
        total = sum(_values(h, p, region, NOMINAL)[0] for p in present)
        obs = _observed(data, region, total, nbins)
        keep = np.ones(nbins, dtype=bool) if empty_bins == "keep" else total != 0
        if np.any(obs[~keep] != 0):
            raise InputError(
                f"region {region!r} has observed events in score bins "
                f"{np.flatnonzero(~keep & (obs != 0)).tolist()} where no process is expected"
            )
        samples = [
            _sample(
                h,
                process,
                region,
                keep,
                systs,
                poi=poi if process == signal_process else None,
                staterror=staterror,
                normsys=normsys,
                histosys=histosys,
            )  # fmt: skip
            for process in present
        ]
        channels.append({"name": region, "samples": samples})
        observations.append({"name": region, "data": obs[keep].tolist()})
    if not channels:
        raise InputError("the histogram has no filled nominal templates")
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": measurement, "config": {"poi": poi, "parameters": []}}],
        "version": "1.0.0",
    }


def _observed(
    data: str | Mapping[str, Sequence[float]], region: str, total: np.ndarray, nbins: int
) -> np.ndarray:
    if isinstance(data, str):
        if data != "asimov":
            raise ConfigError(f"data must be 'asimov' or a mapping of counts, got {data!r}")
        return np.asarray(total, dtype=np.float64)
    if region not in data:
        raise InputError(f"no observed data given for region {region!r}")
    obs = np.asarray(data[region], dtype=np.float64)
    if obs.shape != (nbins,):
        raise InputError(
            f"observed data of region {region!r} have shape {obs.shape}, expected ({nbins},)"
        )
    if not np.all(np.isfinite(obs)) or np.any(obs < 0):
        raise InputError(f"observed data of region {region!r} must be finite and >= 0")
    return obs


def _sample(
    h: hist.Hist,
    process: str,
    region: str,
    keep: np.ndarray,
    systs: Sequence[str],
    *,
    poi: str | None,
    staterror: bool,
    normsys: bool,
    histosys: bool,
) -> dict[str, Any]:
    """One pyhf sample (restricted to the ``keep`` bins) with its modifiers."""
    nom, var = (a[keep] for a in _values(h, process, region, NOMINAL))
    mods: list[dict[str, Any]] = []
    if poi is not None:
        mods.append({"name": poi, "type": "normfactor", "data": None})
    for name in systs:
        up_t = _template(h, process, region, f"{name}Up")
        dn_t = _template(h, process, region, f"{name}Down")
        if not (_filled(up_t) and _filled(dn_t)):
            continue  # this process does not carry the systematic
        up = np.asarray(up_t.values(), dtype=np.float64)[keep]
        dn = np.asarray(dn_t.values(), dtype=np.float64)[keep]
        s_nom, s_up, s_dn = nom.sum(), up.sum(), dn.sum()
        if normsys and s_nom > 0 and s_up > 0 and s_dn > 0:
            ratio = {"hi": float(s_up / s_nom), "lo": float(s_dn / s_nom)}
            mods.append({"name": name, "type": "normsys", "data": ratio})
            up, dn = up * (s_nom / s_up), dn * (s_nom / s_dn)
        if histosys:
            shapes = {"hi_data": up.tolist(), "lo_data": dn.tolist()}
            mods.append({"name": name, "type": "histosys", "data": shapes})
    if staterror:
        mods.append(
            {"name": f"staterror_{region}", "type": "staterror", "data": np.sqrt(var).tolist()}
        )
    return {"name": process, "data": nom.tolist(), "modifiers": mods}


def write_workspace(path: str | os.PathLike[str], ws: Mapping[str, Any]) -> Path:
    """Write a workspace specification as JSON, atomically."""
    return atomic_write_json(path, dict(ws))
