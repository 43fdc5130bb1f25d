"""Fit inputs: ROOT templates, a cabinetry configuration, pyhf workspaces.

Templates
---------
A template histogram (:func:`~advsyst.systematics.histograms.template_axes`) has the
category axes ``process`` and ``systematic``, optional further category axes (the
*channel* axes: ``region`` first, then e.g. a year) and one observable axis of any name
(the tagger score, a jet mass...), with ``Weight()`` storage.  Each filled
``(channel, process, systematic)`` combination becomes one 1-D ROOT histogram (sum of
weights and sum of squared weights, flow bins included) named::

    {channel}_{process}_{variation}        variation: nominal, <name>Up, <name>Down

where ``channel`` joins the channel axes' categories with ``-`` (``signal``, or
``signal-2018`` with a ``year`` axis).  A histogram with more than one observable axis is
rejected with the ``h.project(...)`` call that fixes it.

Names
-----
ROOT keys cannot hold ``/`` (it means a directory), and ``;`` and ``:`` have meanings in
ROOT and uproot paths, so each part of a name is escaped reversibly with
:func:`key_part` -- ``%`` followed by the character's two hex digits for ``%``, ``/``,
``;``, ``:``, whitespace and non-printable characters (URL percent-encoding;
:func:`unkey_part` or ``urllib.parse.unquote`` undoes it).  A CMS dataset name such as
``/TTToSemiLeptonic/RunII.../NANOAODSIM`` becomes ``%2FTTToSemiLeptonic%2FRunII...``.  The
same escaped names are the cabinetry sample and region names (and so the pyhf ones).

Collision data
--------------
Collision data is the observation, never a sample.  The processes named in
``data_processes`` (default: a process called ``data``, any capitalisation) are summed
per channel into one observed template ``{channel}_data_nominal``; their systematic
templates, if any were filled, are ignored.  Without collision data the observation can
be the Asimov data set, the sum of the simulated nominal templates, written as
``{channel}_asimov_nominal``.

Fit
---
:func:`write_fit_inputs` writes the ROOT file and a cabinetry configuration next to it
(paths relative to that folder: run cabinetry from there; collect the templates with
``cabinetry.templates.collect`` -- the ``cabinetry templates`` command builds templates
from ntuples instead).  Each adversarial systematic
is a ``NormPlusShape`` systematic of every simulated sample that has its templates, with
explicit Up and Down templates: the down templates are already mirrored the way
cabinetry's ``Symmetrize`` does it (:func:`~advsyst.systematics.histograms.mirror_templates`),
but floored at 0 where ``Symmetrize`` would give negative yields.  The signal sample
carries the free normalisation factor (the POI).  :func:`build_workspace` builds the pyhf
workspace from that configuration with ``cabinetry.templates.collect`` and
``cabinetry.workspace.build``.

:func:`build_pyhf_workspace` builds the same model without cabinetry, directly from the
histogram.  It stays for two things cabinetry does not offer: it runs with advsyst's
core dependencies only (cabinetry is in the ``analysis`` extra), and it can drop bins
where no process is expected (``empty_bins="drop"``), which pyhf's polynomial
``histosys`` interpolation can otherwise turn into negative expectations.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import hist
import numpy as np

from advsyst._io import atomic_path, atomic_write_json, atomic_write_text
from advsyst.errors import ConfigError, InputError
from advsyst.systematics.histograms import NOMINAL, template_axes

__all__ = [
    "key_part",
    "unkey_part",
    "histogram_name",
    "iter_templates",
    "data_process_names",
    "write_root_histograms",
    "systematic_names",
    "build_pyhf_workspace",
    "write_workspace",
    "cabinetry_config",
    "write_cabinetry_config",
    "FitInputs",
    "write_fit_inputs",
    "build_workspace",
]

_ESCAPE = set("%/;:")
CHANNEL_JOIN = "-"
DATA_NAME = "data"
ASIMOV_NAME = "asimov"


def key_part(name: str) -> str:
    """Escape one part of a histogram name for ROOT keys and cabinetry paths.

    ``%``, ``/``, ``;``, ``:``, whitespace and non-printable characters become ``%XX``
    (two upper-case hex digits per UTF-8 byte); everything else is kept.  Reversible
    with :func:`unkey_part`.
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"a histogram name part must be a non-empty string, got {name!r}")
    out = []
    for c in name:
        if c in _ESCAPE or c.isspace() or not c.isprintable():
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8")))
        else:
            out.append(c)
    return "".join(out)


def unkey_part(key: str) -> str:
    """Undo :func:`key_part`."""
    return unquote(key, errors="strict")


def histogram_name(region: str, process: str, variation: str) -> str:
    """``{region}_{process}_{variation}``, each part escaped with :func:`key_part`."""
    return "_".join(key_part(str(p)) for p in (region, process, variation))


@dataclass(frozen=True)
class _Layout:
    channels: list[str]  # channel axis names
    observable: str

    def combos(self, h: hist.Hist) -> list[tuple[str, dict[str, Any]]]:
        """``(channel name, {axis: category})`` for every channel."""
        if not self.channels:
            return [(self.observable, {})]
        values = [list(h.axes[c]) for c in self.channels]
        out = []
        for combo in itertools.product(*values):
            name = CHANNEL_JOIN.join(str(v) for v in combo)
            out.append((name, dict(zip(self.channels, combo, strict=True))))
        return out


def _layout(h: hist.Hist) -> _Layout:
    channels, obs = template_axes(h)
    return _Layout(channels, obs)


def _filled(sub: hist.Hist) -> bool:
    view = sub.view(flow=True)
    return bool(np.any(view["value"] != 0) or np.any(view["variance"] != 0))


def _template(h: hist.Hist, process: str, syst: str, where: Mapping[str, Any]) -> hist.Hist:
    # hist.loc: an IntCategory value is a category, not a bin number
    return h[{"process": process, "systematic": syst, **{k: hist.loc(v) for k, v in where.items()}}]


def iter_templates(h: hist.Hist) -> Iterable[tuple[str, str, str, hist.Hist]]:
    """``(channel, process, systematic, 1-D histogram)`` for every filled template.

    Templates never filled (an empty category combination) are skipped.  Collision
    data are not told apart here (see :func:`write_root_histograms`).
    """
    lay = _layout(h)
    for process in h.axes["process"]:
        for channel, where in lay.combos(h):
            for syst in h.axes["systematic"]:
                sub = _template(h, process, syst, where)
                if _filled(sub):
                    yield channel, process, syst, sub


def data_process_names(h: hist.Hist, data_processes: Sequence[str] | None = None) -> list[str]:
    """The processes of ``h`` that hold collision data.

    ``data_processes=None``: a process called ``data`` (any capitalisation), if there is
    one.  Given names must all be processes of ``h``.
    """
    procs = [str(p) for p in h.axes["process"]]
    if data_processes is None:
        return [p for p in procs if p.lower() == DATA_NAME]
    if isinstance(data_processes, str):
        data_processes = [data_processes]
    missing = [p for p in data_processes if p not in procs]
    if missing:
        raise InputError(f"data processes {missing} are not in the histogram; have {procs}")
    return list(dict.fromkeys(data_processes))


def _sum_hists(items: Sequence[hist.Hist]) -> hist.Hist:
    total = items[0].copy()
    for other in items[1:]:
        total += other
    return total


def _observation(
    h: hist.Hist,
    lay: _Layout,
    data: list[str],
    asimov: bool,
    observation_name: str | None,
) -> tuple[str | None, dict[str, hist.Hist]]:
    """``(sample name, {channel: observed 1-D histogram})`` (name None: no observation)."""
    if data:
        sources, name = data, observation_name or DATA_NAME
    elif asimov:
        sources = [str(p) for p in h.axes["process"]]
        name = observation_name or ASIMOV_NAME
    else:
        return None, {}
    out = {}
    for channel, where in lay.combos(h):
        parts = [_template(h, p, NOMINAL, where) for p in sources]
        parts = [t for t in parts if _filled(t)]
        if parts:
            out[channel] = _sum_hists(parts)
    return name, out


def write_root_histograms(
    path: str | os.PathLike[str],
    hists: hist.Hist | Sequence[hist.Hist],
    *,
    data_processes: Sequence[str] | None = None,
    asimov: bool = False,
    observation_name: str | None = None,
) -> list[str]:
    """Write every template of one or more histograms into one ROOT file, atomically.

    Parameters
    ----------
    path
        Output ``.root`` file (replaced if it exists).
    hists
        Template histograms (:func:`~advsyst.systematics.histograms.make_hist` or any
        with the layout of :func:`~advsyst.systematics.histograms.template_axes`).
    data_processes
        Processes holding collision data (default: one called ``data``): summed per
        channel into ``{channel}_data_nominal``, never written as samples.
    asimov
        Without collision data, write the Asimov observation (the sum of the simulated
        nominal templates) as ``{channel}_asimov_nominal``.
    observation_name
        Process part of the observed templates' names (default ``data`` or
        ``asimov``).

    Returns
    -------
    list[str]
        The names written (escaped, see :func:`key_part`).

    Raises
    ------
    InputError
        If two templates get the same name, or a simulated process is called like the
        observation.
    """
    import uproot

    hlist = [hists] if isinstance(hists, hist.Hist) else list(hists)
    items: dict[str, hist.Hist] = {}

    def add(name: str, sub: hist.Hist) -> None:
        if name in items:
            raise InputError(f"histogram {name!r} appears twice in the inputs")
        items[name] = sub

    for h in hlist:
        lay = _layout(h)
        data = data_process_names(h, data_processes)
        obs_name, observed = _observation(h, lay, data, asimov, observation_name)
        for channel, process, syst, sub in iter_templates(h):
            if process in data:
                continue
            if obs_name is not None and process == obs_name:
                raise InputError(
                    f"simulated process {process!r} has the observation's name; rename it "
                    "or pass observation_name"
                )
            add(histogram_name(channel, process, syst), sub)
        for channel, sub in observed.items():
            add(histogram_name(channel, obs_name, NOMINAL), sub)  # type: ignore[arg-type]
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp) as fout:
            for name, sub in items.items():
                fout[name] = sub
    return list(items)


def systematic_names(h: hist.Hist) -> list[str]:
    """Names ``<name>`` that have both ``<name>Up`` and ``<name>Down`` in ``h``."""
    cats = {str(c) for c in h.axes["systematic"]}
    return sorted(c[:-2] for c in cats if c.endswith("Up") and f"{c[:-2]}Down" in cats)


def _values(
    h: hist.Hist, process: str, syst: str, where: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    sub = _template(h, process, syst, where)
    return np.asarray(sub.values(), dtype=np.float64), np.asarray(sub.variances(), dtype=np.float64)


def _check_systematics(h: hist.Hist, systematics: Sequence[str] | None) -> list[str]:
    available = systematic_names(h)
    systs = available if systematics is None else list(systematics)
    missing = sorted(set(systs) - set(available))
    if missing:
        raise ConfigError(
            f"systematics {missing} have no Up/Down templates; available: {available}"
        )
    if NOMINAL not in {str(c) for c in h.axes["systematic"]}:
        raise InputError("the histogram has no 'nominal' templates")
    return systs


def _simulated(h: hist.Hist, data: Sequence[str], signal_process: str) -> list[str]:
    procs = [str(p) for p in h.axes["process"] if str(p) not in data]
    if signal_process in data:
        raise InputError(f"signal process {signal_process!r} is a collision-data process")
    if signal_process not in procs:
        raise InputError(f"signal process {signal_process!r} not in the histogram; have {procs}")
    return procs


def build_pyhf_workspace(
    h: hist.Hist,
    *,
    signal_process: str,
    data: str | Mapping[str, Sequence[float]] | None = None,
    data_processes: Sequence[str] | None = None,
    poi: str = "mu",
    systematics: Sequence[str] | None = None,
    measurement: str = "adversarial_systematics",
    staterror: bool = True,
    normsys: bool = True,
    histosys: bool = True,
    empty_bins: str = "drop",
) -> dict[str, Any]:
    """A pyhf workspace specification (dict) built directly from a template histogram.

    The model is the one :func:`cabinetry_config` + :func:`build_workspace` give (one
    channel per channel, one sample per simulated process, the POI as a ``normfactor``
    of the signal, each systematic as ``normsys`` + ``histosys`` with the templates
    rescaled to the nominal yield, one ``staterror`` per channel), without cabinetry.

    Parameters
    ----------
    h
        Template histogram, filled.
    signal_process
        The process scaled by the POI.
    data
        ``None`` (default): the collision data of ``data_processes`` if the histogram
        has any, else Asimov; ``"observed"``: the collision data (required);
        ``"asimov"``: the sum of the simulated nominal templates (POI = 1);
        ``{channel: observed counts per bin}``.
    data_processes
        Processes holding collision data (default: one called ``data``); they are the
        observations, never samples.
    poi
        Name of the parameter of interest.
    systematics
        Systematic names to include (default: all with Up and Down templates).
    measurement
        Name of the measurement.
    staterror, normsys, histosys
        Which modifier types to add.
    empty_bins
        ``"drop"`` (default): bins where the summed simulated nominal templates of a
        channel are zero are left out of that channel (with observed events there an
        :class:`InputError` is raised: no model can describe them).  pyhf's polynomial
        ``histosys`` interpolation turns a variation that moves events into a bin with
        no nominal events into a negative expectation, which breaks fits.  ``"keep"``
        keeps the histogram binning unchanged (as cabinetry does).

    Returns
    -------
    dict
        A specification that ``pyhf.Workspace`` accepts.
    """
    lay = _layout(h)
    dprocs = data_process_names(h, data_processes)
    processes = _simulated(h, dprocs, signal_process)
    systs = _check_systematics(h, systematics)
    if empty_bins not in ("drop", "keep"):
        raise ConfigError(f"empty_bins must be 'drop' or 'keep', got {empty_bins!r}")
    if data is None:
        data = "observed" if dprocs else "asimov"
    if data == "observed" and not dprocs:
        raise InputError(
            "data='observed' but the histogram has no collision-data process; "
            "name it with data_processes"
        )
    nbins = h.axes[lay.observable].size
    channels, observations = [], []
    for channel, where in lay.combos(h):
        present = [p for p in processes if _filled(_template(h, p, NOMINAL, where))]
        if not present:
            continue
        total = sum(_values(h, p, NOMINAL, where)[0] for p in present)
        if data == "observed":
            obs = sum((_values(h, p, NOMINAL, where)[0] for p in dprocs), start=np.zeros(nbins))
        else:
            obs = _observed(data, channel, total, nbins)
        keep = np.ones(nbins, dtype=bool) if empty_bins == "keep" else total != 0
        if np.any(obs[~keep] != 0):
            raise InputError(
                f"channel {channel!r} has observed events in bins "
                f"{np.flatnonzero(~keep & (obs != 0)).tolist()} where no process is expected"
            )
        samples = [
            _sample(
                h,
                process,
                channel,
                where,
                keep,
                systs,
                poi=poi if process == signal_process else None,
                staterror=staterror,
                normsys=normsys,
                histosys=histosys,
            )  # fmt: skip
            for process in present
        ]
        channels.append({"name": key_part(channel), "samples": samples})
        observations.append({"name": key_part(channel), "data": obs[keep].tolist()})
    if not channels:
        raise InputError("the histogram has no filled nominal templates of simulated processes")
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": measurement, "config": {"poi": poi, "parameters": []}}],
        "version": "1.0.0",
    }


def _observed(data: Any, channel: str, total: np.ndarray, nbins: int) -> np.ndarray:
    if isinstance(data, str):
        if data != "asimov":
            raise ConfigError(
                f"data must be None, 'observed', 'asimov' or a mapping of counts, got {data!r}"
            )
        return np.asarray(total, dtype=np.float64)
    if not isinstance(data, Mapping):
        raise ConfigError(f"data must be a string or a mapping of counts, got {type(data)}")
    if channel not in data:
        raise InputError(f"no observed data given for channel {channel!r}")
    obs = np.asarray(data[channel], dtype=np.float64)
    if obs.shape != (nbins,):
        raise InputError(
            f"observed data of channel {channel!r} have shape {obs.shape}, expected ({nbins},)"
        )
    if not np.all(np.isfinite(obs)) or np.any(obs < 0):
        raise InputError(f"observed data of channel {channel!r} must be finite and >= 0")
    return obs


def _sample(
    h: hist.Hist,
    process: str,
    channel: str,
    where: Mapping[str, Any],
    keep: np.ndarray,
    systs: Sequence[str],
    *,
    poi: str | None,
    staterror: bool,
    normsys: bool,
    histosys: bool,
) -> dict[str, Any]:
    """One pyhf sample (restricted to the ``keep`` bins) with its modifiers."""
    nom, var = (a[keep] for a in _values(h, process, NOMINAL, where))
    mods: list[dict[str, Any]] = []
    if poi is not None:
        mods.append({"name": poi, "type": "normfactor", "data": None})
    for name in systs:
        up_t = _template(h, process, f"{name}Up", where)
        dn_t = _template(h, process, f"{name}Down", where)
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
            {
                "name": f"staterror_{key_part(channel)}",
                "type": "staterror",
                "data": np.sqrt(var).tolist(),
            }
        )
    return {"name": key_part(process), "data": nom.tolist(), "modifiers": mods}


def write_workspace(path: str | os.PathLike[str], ws: Mapping[str, Any]) -> Path:
    """Write a workspace specification as JSON, atomically."""
    return atomic_write_json(path, dict(ws))


# ---------------------------------------------------------------------- cabinetry
def cabinetry_config(
    h: hist.Hist,
    *,
    root_file: str | os.PathLike[str],
    signal_process: str,
    data_processes: Sequence[str] | None = None,
    systematics: Sequence[str] | None = None,
    poi: str = "mu",
    poi_bounds: tuple[float, float] = (0.0, 10.0),
    measurement: str = "adversarial_systematics",
    histogram_folder: str = "cabinetry_histograms",
    observation_name: str | None = None,
) -> dict[str, Any]:
    """A cabinetry configuration (dict) for the templates :func:`write_root_histograms`
    writes from ``h`` into ``root_file``.

    Paths are used as given: a relative ``root_file`` and ``histogram_folder`` are
    relative to the folder cabinetry runs in.  The observation is the collision data
    (``data_processes``) or, without any, the Asimov templates (write them with
    ``asimov=True``).  Every simulated sample of a channel gets each systematic it has
    Up and Down templates for (``NormPlusShape``, explicit templates).
    """
    lay = _layout(h)
    dprocs = data_process_names(h, data_processes)
    processes = _simulated(h, dprocs, signal_process)
    systs = _check_systematics(h, systematics)
    obs_name, observed = _observation(h, lay, dprocs, True, observation_name)
    combos = lay.combos(h)
    regions = []
    present: dict[str, list[str]] = {}
    for channel, where in combos:
        present[channel] = [p for p in processes if _filled(_template(h, p, NOMINAL, where))]
        if present[channel]:
            if channel not in observed:
                raise InputError(f"channel {channel!r} has no observed template")
            expected = sum(_values(h, p, NOMINAL, where)[0] for p in present[channel])
            bad = np.flatnonzero((expected == 0) & (observed[channel].values() != 0))
            if bad.size:
                raise InputError(
                    f"channel {channel!r} has observed events in bins {bad.tolist()} where no "
                    "simulated process is expected: no fit can describe them (use coarser bins)"
                )
            regions.append({"Name": key_part(channel), "RegionPath": key_part(channel)})
    if not regions:
        raise InputError("the histogram has no filled nominal templates of simulated processes")
    samples: list[dict[str, Any]] = [
        {"Name": key_part(obs_name), "SamplePath": key_part(obs_name), "Data": True}  # type: ignore[arg-type]
    ]
    for p in processes:
        in_regions = [key_part(c) for c, procs in present.items() if p in procs]
        if not in_regions:
            continue
        sample: dict[str, Any] = {"Name": key_part(p), "SamplePath": key_part(p)}
        if len(in_regions) != len(regions):
            sample["Regions"] = in_regions
        samples.append(sample)
    systematics_cfg = []
    for name in systs:
        carriers = []
        for channel, where in combos:
            for p in present[channel]:
                up = _filled(_template(h, p, f"{name}Up", where))
                dn = _filled(_template(h, p, f"{name}Down", where))
                if up and dn:
                    carriers.append((channel, p))
        if not carriers:
            continue
        chans = sorted({key_part(c) for c, _ in carriers})
        procs = sorted({key_part(p) for _, p in carriers})
        full = {(key_part(c), key_part(p)) for c, p in carriers}
        if full != {(c, s) for c in chans for s in procs if _has(present, c, s)}:
            raise InputError(
                f"systematic {name!r} has templates for some but not all samples of its "
                "channels; cabinetry cannot express that -- fill it everywhere or nowhere"
            )
        entry: dict[str, Any] = {
            "Name": key_part(name),
            "Type": "NormPlusShape",
            "Up": {"VariationPath": key_part(f"{name}Up")},
            "Down": {"VariationPath": key_part(f"{name}Down")},
            "Samples": procs,
        }
        if len(chans) != len(regions):
            entry["Regions"] = chans
        systematics_cfg.append(entry)
    return {
        "General": {
            "Measurement": measurement,
            "POI": poi,
            "InputPath": f"{os.fspath(root_file)}:{{RegionPath}}_{{SamplePath}}_{{VariationPath}}",
            "HistogramFolder": histogram_folder,
            "VariationPath": NOMINAL,
        },
        "Regions": regions,
        "Samples": samples,
        "NormFactors": [
            {
                "Name": poi,
                "Samples": key_part(signal_process),
                "Nominal": 1.0,
                "Bounds": [float(poi_bounds[0]), float(poi_bounds[1])],
            }
        ],
        "Systematics": systematics_cfg,
    }


def _has(present: Mapping[str, list[str]], channel_key: str, process_key: str) -> bool:
    return any(
        key_part(c) == channel_key and any(key_part(p) == process_key for p in procs)
        for c, procs in present.items()
    )


_CONFIG_HEADER = """\
# cabinetry configuration written by advsyst (advsyst.systematics.write_fit_inputs).
# Paths are relative to this folder. From here, collect the templates (the command-line
# `cabinetry templates` would re-histogram ntuples instead), then build and fit:
#   python -c "import cabinetry; cabinetry.templates.collect(cabinetry.configuration.load('cabinetry.yml'))"
#   cabinetry workspace cabinetry.yml ws.json
#   cabinetry fit ws.json
# (or, in Python: advsyst.systematics.build_workspace("cabinetry.yml")).
# Down templates of mirrored systematics are already mirrored as cabinetry's Symmetrize
# does (floored at 0), so they are read like any explicit template.
"""


def write_cabinetry_config(path: str | os.PathLike[str], config: Mapping[str, Any]) -> Path:
    """Write a cabinetry configuration as YAML, atomically (checked against cabinetry's
    schema when cabinetry is installed)."""
    import yaml

    try:
        import cabinetry
    except ImportError:  # optional: the file is still valid input for a later cabinetry
        cabinetry = None
    if cabinetry is not None:
        cabinetry.configuration.validate(dict(config))
    text = _CONFIG_HEADER + yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    return atomic_write_text(path, text)


@dataclass
class FitInputs:
    """What :func:`write_fit_inputs` wrote.

    Attributes
    ----------
    root_file, config_file
        The ROOT templates and the cabinetry configuration.
    histograms
        Names of the templates in the ROOT file.
    config
        The cabinetry configuration (paths relative to ``config_file``'s folder).
    """

    root_file: Path
    config_file: Path
    histograms: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def write_fit_inputs(
    out_dir: str | os.PathLike[str],
    h: hist.Hist,
    *,
    signal_process: str,
    data_processes: Sequence[str] | None = None,
    systematics: Sequence[str] | None = None,
    root_name: str = "histograms.root",
    config_name: str = "cabinetry.yml",
    poi: str = "mu",
    measurement: str = "adversarial_systematics",
) -> FitInputs:
    """Write ``out_dir/histograms.root`` and ``out_dir/cabinetry.yml`` that reads it.

    The configuration uses paths relative to ``out_dir``, so it works from there as
    it is (``cd out_dir; cabinetry templates cabinetry.yml; ...``) and the folder can be
    moved.  Without collision data the Asimov observation is written and used.
    """
    out = Path(out_dir)
    dprocs = data_process_names(h, data_processes)
    names = write_root_histograms(out / root_name, h, data_processes=dprocs, asimov=not dprocs)
    cfg = cabinetry_config(
        h,
        root_file=root_name,
        signal_process=signal_process,
        data_processes=dprocs,
        systematics=systematics,
        poi=poi,
        measurement=measurement,
    )
    path = write_cabinetry_config(out / config_name, cfg)
    return FitInputs(root_file=out / root_name, config_file=path, histograms=names, config=cfg)


def _absolute(config: Mapping[str, Any], base: Path) -> dict[str, Any]:
    cfg = copy.deepcopy(dict(config))
    general = cfg["General"]
    file_part, sep, inner = general["InputPath"].rpartition(":")
    if sep and not Path(file_part).is_absolute():
        general["InputPath"] = f"{base / file_part}:{inner}"
    if not Path(general["HistogramFolder"]).is_absolute():
        general["HistogramFolder"] = str(base / general["HistogramFolder"])
    return cfg


def build_workspace(
    config: str | os.PathLike[str] | Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The pyhf workspace of a cabinetry configuration, built by cabinetry.

    Runs ``cabinetry.templates.collect`` (reads the ROOT templates into cabinetry's
    histogram folder) and ``cabinetry.workspace.build``.

    Parameters
    ----------
    config
        A configuration file (relative paths in it are relative to its folder) or dict
        (relative paths relative to ``base_dir``, default the working directory).
    base_dir
        Folder relative paths are resolved against (default: the config file's folder).

    Returns
    -------
    dict
        The workspace specification (validated by cabinetry).
    """
    try:
        import cabinetry
    except ImportError as exc:  # pragma: no cover - cabinetry is in the analysis extra
        raise ConfigError(
            "building the workspace through cabinetry needs cabinetry: "
            "pip install 'advsyst[analysis]' (or use build_pyhf_workspace)"
        ) from exc
    if isinstance(config, Mapping):
        cfg, base = dict(config), Path(base_dir or ".")
    else:
        cfg = cabinetry.configuration.load(config)
        base = Path(base_dir) if base_dir is not None else Path(config).parent
    cfg = _absolute(cfg, base.resolve())
    cabinetry.templates.collect(cfg, method="uproot")
    return cabinetry.workspace.build(cfg)
