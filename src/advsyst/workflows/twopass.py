"""Adversarial systematics in an existing coffea analysis: the two-pass flow.

CONSERVAttack bounds *dataset-level* statistics (the marginal histograms and the
correlation matrix of all jets of the control region together), so it cannot run chunk
by chunk inside a coffea processor: a chunk sees only a slice of the jets.  The attack
therefore sits between two passes over the files::

    pass 1   a feature builder, chunk by chunk: the          run_pass1(fileset, builder=...)
             analyst's own or advsyst's processor;
             coffea merges the per-jet features              -> {"X", "dataset", "run",
                                                                  "luminosityBlock",
                                                                  "event", "jet_index", ...}
    attack   each registered variation runs ONCE on the      build_varied_scores(...)
             merged features; the tagger scores nominal      -> VariedScores
             and varied features of every jet
    pass 2   the analyst's own processor, chunk by chunk,    varied.lookup(dataset, run,
             looks up the nominal and varied scores of its     lumi, event, jet_index)
             selected jets and fills its histograms with a   -> hist with a "systematic"
             ``systematic`` axis (nominal, <name>Up/Down)       axis

:func:`two_pass` runs the three steps with one executor (``"iterative"``, ``"futures"``
or ``"dask"``); the steps are also public so that they can run at different times or
places (``VariedScores.save`` / ``VariedScores.load`` carry the scores between them).

Keys
----
A jet is identified by ``(dataset, run, luminosityBlock, event, jet_index)``, where
``jet_index`` is the jet's index in its event's *full* collection, before any selection
(``ak.local_index(events.FatJet, axis=1)``; give ``axis=1``: the default, ``-1``,
reaches into the jets' own nested lists).  Pass 1 records these for every jet it selects;
pass 2 computes them for its own selected jets::

    idx = ak.local_index(events.FatJet, axis=1)[my_selection]
    scores = self.varied.lookup_jagged(
        events.metadata["dataset"], events.run, events.luminosityBlock, events.event, idx
    )  # {"nominal": jagged, "conservattackUp": jagged, ...}

The keys do not depend on how either pass is chunked, nor on the executor.

Rules
-----
* Pass 2's jet selection must be a subset of pass 1's (pass 1 keeps jets with
  ``pt > jet_min_pt`` and ``|eta| < 2.4`` by default).  A jet pass 1 did not see has no
  scores: :meth:`VariedScores.lookup` raises :class:`~advsyst.errors.InputError` naming
  how many keys are missing and the first one (or returns NaN with ``missing="nan"``).
* Dataset names must be the same in both passes (they are the fileset's keys).
* Collision data: :func:`two_pass` runs the variations on the simulated datasets only
  (``metadata["is_data"]`` true marks data); data jets keep their nominal score in every
  systematic, so a data histogram can be filled from the same lookup.
* Down templates: a variation that gives no down features (CONSERVAttack, FGSM, ...) is
  *one-sided*.  By default (``down="template"``) pass 2 fills its ``<name>Up`` only and the
  ``<name>Down`` template is made from the merged histogram, mirrored bin by bin around
  the nominal with cabinetry's ``Symmetrize`` convention
  (:func:`advsyst.systematics.mirror_templates`; :meth:`VariedScores.mirror_templates`
  knows which variations, and :func:`two_pass` applies it to the output's template
  histograms).  ``down="per-jet"`` instead hands out a per-jet mirrored score,
  ``clip(2 * nominal - up, 0, 1)``, under ``<name>Down``; every jet pushed away from a
  score edge is mirrored *onto* it, so that template piles up in the edge bins (use it
  only to compare with older results).
* Own features: ``run_pass1(fileset, builder=f)`` runs any ``f(events) -> per-jet
  arrays`` (contract and checks in :mod:`advsyst.processors.builders`); advsyst's two
  processors are such builders and the default.
* Labels come from ``metadata["label"]`` (or the builder), weights are normalised per
  dataset to ``xsec * lumi / sum(genWeight)`` (``Runs/genEventSumw`` or a pre-pass;
  :func:`normalize_weights`), collision data has weight 1, negative weights keep their
  sign through the attack.
* Executors: pass 2 runs the analyst's processor in coffea's virtual (eager) mode with
  ``processor.Runner`` — ``IterativeExecutor``, ``FuturesExecutor`` or, for ``"dask"``,
  ``DaskExecutor`` on a ``distributed`` client — or, with ``run_pass2(mode="dask")``, in
  coffea's dask mode (``apply_to_fileset``, dask-awkward arrays, ``hist.dask``), where
  :meth:`VariedScores.lookup_jagged` returns lazy arrays through
  ``dask_awkward.map_partitions``.  The same processor code serves all of them.  The
  VariedScores object travels inside the processor instance; for large samples write a
  :class:`ScoreStore` (scores partitioned by file) and let each chunk load its own
  file's partition.  Pass 1 with ``"dask"`` uses ``coffea.dataset_tools.apply_to_fileset``
  for advsyst's processors (on the client's cluster when one is given).
* The uncertainty table: :meth:`VariedScores.outcomes` and
  :meth:`VariedScores.detector_efficiency` give
  :func:`~advsyst.systematics.build_uncertainty_table` the NumPy API's inputs.
* Operations: ``skip_bad_files`` (skipped files are reported and left out of pass 2),
  progress bars on by default, ``maxchunks`` / ``checkpointer`` / ``uproot_options``
  pass through; a pass-2 jet that pass 1 did not select raises an error naming pass 1's
  cut to loosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advsyst._io import atomic_savez, atomic_write_text, provenance, to_jsonable
from advsyst.errors import ConfigError, InputError

__all__ = [
    "KEY_FIELDS",
    "VariedScores",
    "ScoreStore",
    "build_varied_scores",
    "normalize_weights",
    "sum_gen_weights",
    "run_pass1",
    "run_pass2",
    "drop_files",
    "two_pass",
    "mirror_output",
]

log = logging.getLogger(__name__)

#: The per-jet key, in order.
KEY_FIELDS = ("dataset", "run", "luminosityBlock", "event", "jet_index")
_FORMAT = "advsyst.VariedScores/1"
_KEY_DTYPE = np.dtype(
    [("d", ">u4"), ("r", ">u8"), ("l", ">u8"), ("e", ">u8"), ("j", ">u8")]
)  # big-endian, packed: 36 bytes whose byte order is a total order on the keys


def _numpy(a: Any, dtype: Any = None) -> np.ndarray:
    """NumPy view of a flat NumPy/awkward array or scalar."""
    if type(a).__module__.split(".")[0] == "awkward":
        import awkward as ak

        a = ak.to_numpy(a)
    out = np.asarray(a)
    return out if dtype is None else out.astype(dtype, copy=False)


def _encode(code: np.ndarray, run: Any, lumi: Any, event: Any, jet: Any) -> np.ndarray:
    """One fixed-width byte string per key (sortable, searchable with NumPy)."""
    rec = np.empty(len(code), dtype=_KEY_DTYPE)
    rec["d"] = code
    rec["r"] = np.asarray(run).astype(np.uint64)
    rec["l"] = np.asarray(lumi).astype(np.uint64)
    rec["e"] = np.asarray(event).astype(np.uint64)
    rec["j"] = np.asarray(jet).astype(np.uint64)
    return rec.view(f"S{_KEY_DTYPE.itemsize}")


def _has(obj: Any, name: str) -> bool:
    if isinstance(obj, Mapping):
        return name in obj
    return name in (getattr(obj, "fields", None) or [])


def _fmt_key(ds: Any, run: Any, lumi: Any, event: Any, jet: Any) -> str:
    return (
        f"(dataset={str(ds)!r}, run={int(run)}, luminosityBlock={int(lumi)}, "
        f"event={int(event)}, jet_index={int(jet)})"
    )


def _systematics(varied: Mapping[str, Any], one_sided: Sequence[str]) -> list[str]:
    out = ["nominal"]
    for name in varied:
        out += [f"{name}Up"] if name in one_sided else [f"{name}Up", f"{name}Down"]
    return out


def _mirror_one_sided(h: Any, one_sided: Sequence[str]) -> Any:
    from advsyst.systematics import mirror_templates

    if not one_sided:
        return h
    return mirror_templates(h, list(one_sided))


@dataclass(eq=False)
class VariedScores:
    """Nominal and varied tagger scores per jet, looked up by the jet's key.

    Parameters
    ----------
    dataset, run, luminosityBlock, event, jet_index
        The per-jet key, shape ``(n,)`` each (see the module docstring); ``jet_index`` is
        the index of the jet in its event's collection before any selection.
    nominal
        Nominal tagger score per jet.
    varied
        ``{name: (up, down)}`` scores per jet (down: the per-jet mirror where the variation
        gave none; the outcomes and the band use it, pass 2 only where ``down="per-jet"``).
    flags
        Per-jet boolean arrays, ``"<variation>.<flag>"`` (e.g. ``"conservattack.fooled"``,
        ``"<variation>.detected"``), ``"varied"`` (the jet was in the set the variations
        ran on), ``"data"`` (collision data) and ``"region.<name>"`` (pass 1's regions).
    provenance
        Configuration, options, metrics, seed and versions (JSON-serialisable).
    preds
        Predicted classes per jet, ``{"nominal": ..., "<name>Up": ..., "<name>Down": ...}``
        (no Down entry where the down scores are mirrored): what the fooling ratios use.
    detector
        Detector P(adversarial) per jet, ``{"nominal": clean, "<name>Up": varied}``, when
        the variations ran with a detector in their context.
    weights
        Per-jet weights the variations ran with (normalised pass-1 weights).
    one_sided
        Variations whose ``<name>Down`` is a *template* mirror: :meth:`systematics` and
        :meth:`lookup` leave their Down out, and :meth:`mirror_templates` makes it from
        the filled histogram (``build_varied_scores(down="template")``, the default).

    With ``preds`` (and ``detector``) present, :meth:`outcomes` and
    :meth:`detector_efficiency` give what
    :func:`~advsyst.systematics.build_uncertainty_table` takes: the same table and
    data-vs-simulation efficiencies as the NumPy API.

    Raises
    ------
    InputError
        Mismatched lengths, non-finite scores, or the same key twice.
    """

    dataset: np.ndarray
    run: np.ndarray
    luminosityBlock: np.ndarray  # noqa: N815 - NanoAOD's branch name
    event: np.ndarray
    jet_index: np.ndarray
    nominal: np.ndarray
    varied: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    detector: dict[str, np.ndarray] = field(default_factory=dict)
    weights: np.ndarray | None = None
    one_sided: Sequence[str] = ()
    _datasets: dict[str, int] = field(init=False, repr=False)
    _order: np.ndarray = field(init=False, repr=False)
    _sorted: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.nominal = self._scores(self.nominal, "nominal", None)
        n = len(self.nominal)
        self.dataset = self._column(self.dataset, "dataset", n, str)
        self.run = self._column(self.run, "run", n, np.int64)
        self.luminosityBlock = self._column(self.luminosityBlock, "luminosityBlock", n, np.int64)
        self.event = self._column(self.event, "event", n, np.uint64)
        self.jet_index = self._column(self.jet_index, "jet_index", n, np.int64)
        varied = {}
        for name, pair in dict(self.varied).items():
            if not isinstance(name, str) or not name.isidentifier() or name == "nominal":
                raise ConfigError(f"invalid variation name {name!r}")
            up, down = pair
            if down is None:
                raise InputError(f"variation {name!r}: give down scores (mirror them if needed)")
            varied[name] = (self._scores(up, f"{name}Up", n), self._scores(down, f"{name}Down", n))
        self.varied = varied
        self.one_sided = tuple(str(x) for x in self.one_sided)
        bad = [x for x in self.one_sided if x not in varied]
        if bad:
            raise InputError(f"one_sided names {bad} are not variations ({list(varied)})")
        flags = {}
        for key, flag in dict(self.flags).items():
            flags[str(key)] = self._column(flag, f"flag {key!r}", n, bool)
        self.flags = flags
        self.preds = {
            str(k): self._column(v, f"preds[{k!r}]", n, np.int64)
            for k, v in dict(self.preds).items()
        }
        self.detector = {
            str(k): self._scores(v, f"detector[{k!r}]", n) for k, v in dict(self.detector).items()
        }
        if self.weights is not None:
            self.weights = self._scores(self.weights, "weights", n)
        self.provenance = dict(self.provenance or {})
        names = sorted(set(self.dataset.tolist()))
        self._datasets = {ds: i for i, ds in enumerate(names)}
        codes = np.array([self._datasets[d] for d in self.dataset.tolist()], dtype=np.uint32)
        keys = _encode(codes, self.run, self.luminosityBlock, self.event, self.jet_index)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        dup = np.flatnonzero(self._sorted[1:] == self._sorted[:-1])
        if dup.size:
            i = self._order[dup[0]]
            raise InputError(
                f"{dup.size} duplicate jet keys; first: "
                f"{_fmt_key(*(getattr(self, k)[i] for k in KEY_FIELDS))} — are two files of "
                "one dataset the same events?"
            )

    @staticmethod
    def _scores(a: Any, what: str, n: int | None) -> np.ndarray:
        s = _numpy(a, np.float64)
        if s.ndim != 1 or (n is not None and len(s) != n):
            raise InputError(f"{what} scores have shape {s.shape}, expected ({n},)")
        if not np.all(np.isfinite(s)):
            raise InputError(f"{what} scores contain {int((~np.isfinite(s)).sum())} NaN/inf")
        return s

    @staticmethod
    def _column(a: Any, what: str, n: int, dtype: Any) -> np.ndarray:
        c = _numpy(a)
        if c.shape != (n,):
            raise InputError(f"{what} has shape {c.shape}, expected ({n},)")
        return c.astype(dtype)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.nominal)

    @property
    def datasets(self) -> list[str]:
        """Dataset names present."""
        return list(self._datasets)

    def systematics(self) -> list[str]:
        """What :meth:`lookup` returns, in variation order: ``["nominal", "<name>Up",
        "<name>Down", ...]``, without the Down of :attr:`one_sided` variations (their Down
        template comes from :meth:`mirror_templates`)."""
        return _systematics(self.varied, self.one_sided)

    def mirror_templates(self, h: Any) -> Any:
        """Make the ``<name>Down`` templates of the :attr:`one_sided` variations in a filled
        (merged) template histogram, cabinetry's ``Symmetrize`` convention
        (:func:`advsyst.systematics.mirror_templates`).  Call it on the merged output (e.g.
        in the processor's ``postprocess``); returns the histogram to use (the same one,
        or a copy with the Down categories added when its systematic axis cannot grow)."""
        return _mirror_one_sided(h, self.one_sided)

    def index_of(self, dataset: Any, run: Any, lumi: Any, event: Any, jet_index: Any) -> np.ndarray:
        """Row of each queried jet in these arrays, -1 where the key is absent.

        ``dataset`` is a name (str) for all queried jets or one name per jet; the other
        arguments are per-jet arrays (NumPy or flat awkward) or scalars, broadcast together.
        """
        run, lumi, event, jet_index = np.broadcast_arrays(
            _numpy(run), _numpy(lumi), _numpy(event), _numpy(jet_index)
        )
        run, lumi, event, jet_index = (a.reshape(-1) for a in (run, lumi, event, jet_index))
        m = len(run)
        if isinstance(dataset, str | bytes | np.str_):
            ds = str(dataset)
            known = np.full(m, ds in self._datasets)
            codes = np.full(m, self._datasets.get(ds, 0), dtype=np.uint32)
        else:
            names = _numpy(dataset).astype(str).reshape(-1)
            if names.shape != (m,):
                raise InputError(f"dataset has shape {names.shape}, expected ({m},) or a str")
            known = np.array([d in self._datasets for d in names.tolist()], dtype=bool)
            codes = np.array([self._datasets.get(d, 0) for d in names.tolist()], dtype=np.uint32)
        rows = np.full(m, -1, dtype=np.int64)
        if m == 0 or len(self) == 0:
            return rows
        q = _encode(codes, run, lumi, event, jet_index)
        pos = np.searchsorted(self._sorted, q)
        pos_c = np.minimum(pos, len(self) - 1)
        found = known & (self._sorted[pos_c] == q)
        rows[found] = self._order[pos_c[found]]
        return rows

    def _selection_hint(self, jets: Any, bad: np.ndarray) -> str:
        """Which pass-1 cut the missing jets fail, and how to loosen it."""
        sel = dict(self.provenance.get("pass1", {}).get("selection", {}) or {})
        min_pt, max_eta = sel.get("jet_min_pt"), sel.get("jet_max_abs_eta")
        coll = sel.get("jet_collection", "jet")
        if min_pt is None and max_eta is None:
            who = sel.get("builder")
            return f" Pass 1's selection ({who or 'unknown'}) must contain pass 2's."
        text = f" Pass 1 kept {coll} jets with pt > {min_pt:g} GeV and |eta| < {max_eta:g}."
        if jets is None:
            return text + (
                " If pass 2 selects looser (e.g. after a jet-energy-scale shift), loosen "
                "pass 1's jet_min_pt / jet_max_abs_eta (pass jets= to name the cut)."
            )
        found = []
        pt = _numpy(jets["pt"], np.float64).reshape(-1)[bad] if _has(jets, "pt") else None
        eta = _numpy(jets["eta"], np.float64).reshape(-1)[bad] if _has(jets, "eta") else None
        if pt is not None and min_pt is not None and np.any(pt <= min_pt):
            low = float(pt[pt <= min_pt].min())
            found.append(
                f"jet_min_pt: pass 2 selected a jet with pt = {low:.4g} GeV <= pass 1's "
                f"{min_pt:g}; run pass 1 with jet_min_pt < {low:.4g}"
            )
        if eta is not None and max_eta is not None and np.any(np.abs(eta) >= max_eta):
            high = float(np.abs(eta).max())
            found.append(
                f"jet_max_abs_eta: pass 2 selected a jet with |eta| = {high:.4g} >= pass 1's "
                f"{max_eta:g}; run pass 1 with jet_max_abs_eta > {high:.4g}"
            )
        if found:
            return text + " Loosen " + "; loosen ".join(found) + "."
        return text + " The missing jets pass both cuts: are the dataset names or files the same?"

    def _rows(
        self,
        dataset: Any,
        run: Any,
        lumi: Any,
        event: Any,
        jet_index: Any,
        missing: str,
        jets: Any = None,
    ) -> np.ndarray:
        if missing not in ("raise", "nan"):
            raise ConfigError(f"missing must be 'raise' or 'nan', got {missing!r}")
        rows = self.index_of(dataset, run, lumi, event, jet_index)
        bad = np.flatnonzero(rows < 0)
        if bad.size and missing == "raise":
            i = bad[0]
            b = np.broadcast_arrays(_numpy(run), _numpy(lumi), _numpy(event), _numpy(jet_index))
            r, lu, e, j = (a.reshape(-1)[i] for a in b)
            ds = dataset if isinstance(dataset, str) else _numpy(dataset).reshape(-1)[i]
            raise InputError(
                f"{bad.size} of {len(rows)} jets have no scores; first missing: "
                f"{_fmt_key(ds, r, lu, e, j)}. Pass 2 must select a subset of pass 1's jets "
                f"(same dataset names; known datasets: {self.datasets}); "
                "use missing='nan' to get NaN instead." + self._selection_hint(jets, bad)
            )
        return rows

    def lookup(
        self,
        dataset: Any,
        run: Any,
        lumi: Any,
        event: Any,
        jet_index: Any,
        *,
        missing: str = "raise",
        jets: Any = None,
    ) -> dict[str, np.ndarray]:
        """Scores of the queried jets, ``{systematic: scores}`` (see :meth:`systematics`).

        Parameters
        ----------
        dataset
            Dataset name (str, for every jet) or one name per jet.
        run, lumi, event, jet_index
            Per-jet key arrays (flat), broadcast together.
        missing
            ``"raise"``: :class:`InputError` naming how many keys are absent and the
            first one; ``"nan"``: NaN scores for absent keys.
        jets
            Optional: the queried jets (fields ``pt``, ``eta``, flat), used only to name
            the pass-1 cut to loosen when keys are absent.
        """
        rows = self._rows(dataset, run, lumi, event, jet_index, missing, jets)
        ok = rows >= 0
        safe = np.where(ok, rows, 0)

        def take(a: np.ndarray) -> np.ndarray:
            out = a[safe] if len(a) else np.zeros(len(rows))
            return np.where(ok, out, np.nan)

        out = {"nominal": take(self.nominal)}
        for name, (up, down) in self.varied.items():
            out[f"{name}Up"] = take(up)
            if name not in self.one_sided:
                out[f"{name}Down"] = take(down)
        return out

    def lookup_flags(
        self, dataset: Any, run: Any, lumi: Any, event: Any, jet_index: Any
    ) -> dict[str, np.ndarray]:
        """Per-jet flags of the queried jets (absent keys raise, as in :meth:`lookup`)."""
        rows = self._rows(dataset, run, lumi, event, jet_index, "raise")
        return {k: v[rows] for k, v in self.flags.items()}

    def lookup_jagged(
        self,
        dataset: Any,
        run: Any,
        lumi: Any,
        event: Any,
        jet_index: Any,
        *,
        missing: str = "raise",
        jets: Any = None,
    ) -> dict[str, Any]:
        """:meth:`lookup` for per-event keys and a jagged (events, jets) ``jet_index``.

        ``run``, ``lumi`` and ``event`` have one entry per event (``events.run``...),
        ``jet_index`` is e.g. ``ak.local_index(events.FatJet, axis=1)[selection]``; returns
        ``{systematic: awkward array}`` with ``jet_index``'s structure.

        In coffea's dask mode (``dataset_tools.apply_to_fileset``: ``run``, ``lumi``,
        ``event`` and ``jet_index`` are ``dask_awkward`` arrays) the lookup runs per
        partition through ``dask_awkward.map_partitions`` and returns lazy
        ``dask_awkward`` arrays with the same structure: the same processor code serves
        both modes, and nothing is materialised on the client.
        """
        import awkward as ak

        if _is_dask(jet_index) or _is_dask(event):
            return _lookup_dask(self, dataset, run, lumi, event, jet_index, missing, jets)
        jet_index = ak.Array(jet_index)
        if jet_index.ndim != 2 or ak.fields(jet_index):
            raise InputError(
                f"jet_index must be a jagged (events, jets) integer array such as "
                f"ak.local_index(events.FatJet, axis=1)[selection], got type {jet_index.type}"
            )
        counts = _numpy(ak.num(jet_index, axis=1), np.int64)
        flat = _numpy(ak.flatten(jet_index, axis=1))

        def per_jet(a: Any) -> np.ndarray:
            return np.repeat(_numpy(a), counts)

        ds = dataset if isinstance(dataset, str) else per_jet(dataset)
        flat_jets = None
        if jets is not None:
            flat_jets = {f: ak.flatten(jets[f], axis=1) for f in ("pt", "eta") if _has(jets, f)}
        values = self.lookup(
            ds, per_jet(run), per_jet(lumi), per_jet(event), flat, missing=missing, jets=flat_jets
        )
        return {k: ak.unflatten(v, counts) for k, v in values.items()}

    # ------------------------------------------------------------------ tables
    def _data(self) -> np.ndarray:
        return self.flags.get("data", np.zeros(len(self), dtype=bool))

    def outcomes(
        self,
        region_masks: Mapping[str, Any] | None = None,
        *,
        weights: Any = None,
        processes: Sequence[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """``{process: {variation: VariationOutcome}}`` for
        :func:`~advsyst.systematics.build_uncertainty_table` and the band functions.

        Parameters
        ----------
        region_masks
            ``{region: bool array over these jets}``; default pass 1's regions (the
            ``"region.<name>"`` flags).
        weights
            Per-jet weights; default :attr:`weights` (else 1).
        processes
            Datasets to include (default: every simulated dataset, in name order).

        Notes
        -----
        The outcomes carry scores, predicted classes, detector decisions, weights and
        regions; their ``result`` holds the flags and info but not the varied features
        (``up`` has zero columns), which the table does not use.
        """
        from advsyst.systematics import VariationOutcome, VariationResult

        if not self.preds:
            raise InputError(
                "these VariedScores carry no predicted classes (made before they were "
                "recorded?): rebuild them with build_varied_scores"
            )
        n = len(self)
        if region_masks is None:
            region_masks = {
                k[len("region.") :]: v for k, v in self.flags.items() if k.startswith("region.")
            }
            if not region_masks:
                raise InputError("no pass-1 regions recorded: give region_masks")
        masks = {str(r): self._column(m, f"region {r!r}", n, bool) for r, m in region_masks.items()}
        if weights is None:
            w = self.weights if self.weights is not None else np.ones(n)
        else:
            w = self._scores(weights, "weights", n)
        sim = ~self._data()
        if processes is None:
            processes = sorted(set(self.dataset[sim].tolist()))
        infos = self.provenance.get("variation_info", {})
        out: dict[str, dict[str, Any]] = {}
        for p in processes:
            sel = self.dataset == p
            if not sel.any():
                raise InputError(f"no jets of process {p!r} (known: {self.datasets})")
            k = int(sel.sum())
            out[p] = {}
            for name, (up, down) in self.varied.items():
                mirrored = f"{name}Down" not in self.preds
                flags = {
                    key.split(".", 1)[1]: f[sel]
                    for key, f in self.flags.items()
                    if key.startswith(f"{name}.")
                }
                det = self.flags.get(f"{name}.detected")
                out[p][name] = VariationOutcome(
                    name=name,
                    process=p,
                    result=VariationResult(
                        up=np.zeros((k, 0)), flags=flags, info=dict(infos.get(name, {}))
                    ),
                    nominal_score=self.nominal[sel],
                    up_score=up[sel],
                    down_score=down[sel],
                    down_mirrored=mirrored,
                    nominal_pred=self.preds["nominal"][sel],
                    up_pred=self.preds[f"{name}Up"][sel],
                    down_pred=None if mirrored else self.preds[f"{name}Down"][sel],
                    detected=None if det is None else det[sel],
                    weights=w[sel],
                    region_masks={r: m[sel] for r, m in masks.items()},
                )
        return out

    def detector_efficiency(
        self, threshold: float | None = None, *, mask: Any = None, weights: Any = None
    ) -> Any:
        """Detector clean-jet efficiency (``P(adv) < threshold``) on simulation and on
        collision data (:class:`~advsyst.systematics.bands.DetectorEfficiency`).

        ``threshold`` defaults to the context's ``detector_threshold``; ``mask`` restricts
        the jets (e.g. a region), ``weights`` default to :attr:`weights`.
        """
        from advsyst.systematics.bands import detector_efficiency

        if "nominal" not in self.detector:
            raise InputError(
                "no detector scores: run the variations with a detector in the context"
            )
        if threshold is None:
            threshold = float(self.provenance.get("detector_threshold", 0.5))
        n = len(self)
        m = np.ones(n, bool) if mask is None else self._column(mask, "mask", n, bool)
        if weights is None:
            w = self.weights if self.weights is not None else np.ones(n)
        else:
            w = self._scores(weights, "weights", n)
        data = self._data()
        p = self.detector["nominal"]
        sim, dat = m & ~data, m & data
        return detector_efficiency(
            p[sim], threshold, w[sim], p[dat] if dat.any() else None, w[dat] if dat.any() else None
        )

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.npz`` file atomically (readable with :meth:`load`)."""
        arrays: dict[str, Any] = {k: getattr(self, k) for k in KEY_FIELDS}
        arrays["dataset"] = self.dataset.astype(str)
        arrays["nominal"] = self.nominal
        arrays["format"] = np.array(_FORMAT)
        arrays["varied_names"] = np.array(list(self.varied), dtype=str)
        arrays["one_sided"] = np.array(list(self.one_sided), dtype=str)
        for i, (up, down) in enumerate(self.varied.values()):
            arrays[f"up_{i}"], arrays[f"down_{i}"] = up, down
        arrays["flag_names"] = np.array(list(self.flags), dtype=str)
        for i, flag in enumerate(self.flags.values()):
            arrays[f"flag_{i}"] = flag
        for tag, table in (("pred", self.preds), ("det", self.detector)):
            arrays[f"{tag}_names"] = np.array(list(table), dtype=str)
            for i, a in enumerate(table.values()):
                arrays[f"{tag}_{i}"] = a
        if self.weights is not None:
            arrays["weights"] = self.weights
        arrays["provenance"] = np.array(json.dumps(to_jsonable(self.provenance), default=str))
        return atomic_savez(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VariedScores:
        """Read a file written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a VariedScores file ({exc})") from exc
        if str(data.get("format", "")) != _FORMAT:
            raise InputError(f"{path}: not a VariedScores file (format {data.get('format')!r})")
        names = [str(n) for n in data["varied_names"]]
        flags = [str(n) for n in data["flag_names"]]
        return cls(
            **{k: data[k] for k in KEY_FIELDS},
            nominal=data["nominal"],
            varied={n: (data[f"up_{i}"], data[f"down_{i}"]) for i, n in enumerate(names)},
            flags={n: data[f"flag_{i}"] for i, n in enumerate(flags)},
            provenance=json.loads(str(data["provenance"])),
            preds={str(n): data[f"pred_{i}"] for i, n in enumerate(data.get("pred_names", []))},
            detector={str(n): data[f"det_{i}"] for i, n in enumerate(data.get("det_names", []))},
            weights=data.get("weights"),
            one_sided=[str(x) for x in data.get("one_sided", [])],
        )


def _is_dask(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "dask_awkward"


def _lookup_dask(
    source: Any,
    dataset: Any,
    run: Any,
    lumi: Any,
    event: Any,
    jet_index: Any,
    missing: str,
    jets: Any,
) -> dict[str, Any]:
    """``lookup_jagged`` of ``source`` (a :class:`VariedScores` or a :class:`ScoreStore`)
    per partition of dask-awkward keys, through ``dask_awkward.map_partitions``."""
    import dask_awkward as dak

    if not isinstance(dataset, str | np.str_):
        raise InputError("in dask mode give the dataset name as a str")
    if missing not in ("raise", "nan"):
        raise ConfigError(f"missing must be 'raise' or 'nan', got {missing!r}")
    args = [run, lumi, event, jet_index]
    with_jets = jets is not None and _has(jets, "pt") and _has(jets, "eta")
    if with_jets:
        args += [jets["pt"], jets["eta"]]
    kernel = _LookupKernel(source, str(dataset), missing, with_jets)
    out = dak.map_partitions(kernel, *args, label="advsyst-varied-lookup")
    return {syst: out[syst] for syst in source.systematics()}


class _LookupKernel:
    """Picklable per-partition lookup: eager key arrays -> jagged records of scores
    (``varied``: a :class:`VariedScores`, or a :class:`ScoreStore` whose eager lookup loads
    the partition of the chunk's file only)."""

    def __init__(self, varied: Any, dataset: str, missing: str, with_jets: bool):
        self.varied = varied
        self.dataset = dataset
        self.missing = missing
        self.with_jets = with_jets

    def _empty(self) -> Any:
        import awkward as ak

        counts = np.zeros(1, dtype=np.int64)
        return ak.zip(
            {s: ak.unflatten(np.zeros(0), counts) for s in self.varied.systematics()},
            depth_limit=None,
        )

    def __call__(self, run: Any, lumi: Any, event: Any, jet_index: Any, *jets: Any) -> Any:
        import awkward as ak

        arrays = (run, lumi, event, jet_index, *jets)
        if any(ak.backend(a) == "typetracer" for a in arrays):
            for a in arrays:
                ak.typetracer.touch_data(a)
            return ak.Array(self._empty().layout.to_typetracer(forget_length=True))
        extra = {"pt": jets[0], "eta": jets[1]} if jets else None
        scores = self.varied.lookup_jagged(
            self.dataset, run, lumi, event, jet_index, missing=self.missing, jets=extra
        )
        return ak.zip(scores, depth_limit=None)


# ---------------------------------------------------------------------- partitioned store
_STORE_FORMAT = "advsyst.ScoreStore/1"


def _file_event_keys(path: str, tree: str, uproot_options: Mapping[str, Any] | None) -> np.ndarray:
    import uproot

    from advsyst.processors.builders import _pack

    with uproot.open(path, **dict(uproot_options or {})) as f:
        t = f[tree]
        names = [b for b in ("run", "luminosityBlock", "event") if b in t]
        a = t.arrays(names, library="np")
    n = len(a["event"])
    zero = np.zeros(n, dtype=np.uint64)
    return _pack(
        a.get("run", zero).astype(np.uint64),
        a.get("luminosityBlock", zero).astype(np.uint64),
        a["event"].astype(np.uint64),
    )


def _key_range(keys: np.ndarray) -> list[list[int]] | None:
    """[[run, lumi, event] of the smallest, ... of the largest] packed event key (None for
    no events)."""
    from advsyst.processors.builders import _EVKEY

    if not len(keys):
        return None
    k = np.sort(keys)[[0, -1]]
    rec = np.frombuffer(k.tobytes(), dtype=_EVKEY)
    return [[int(r["r"]), int(r["l"]), int(r["e"])] for r in rec]


class ScoreStore:
    """Varied scores partitioned by file on disk, looked up by pass-2 chunks.

    The object itself is a small handle (directory, index, systematics): it travels to the
    workers instead of the per-jet arrays, and each pass-2 chunk loads only the partition
    of its own file (``events.metadata["filename"]``), cached per process.  Partitions hold
    the key columns and scores of one (dataset, file), without per-jet dataset names.

    Write one with :meth:`write` after :func:`build_varied_scores`; in the analysis use
    ``store.lookup_jagged(dataset, run, lumi, event, jet_index, filename=...)`` exactly
    like :meth:`VariedScores.lookup_jagged`.  In coffea's dask mode (and without
    ``filename``) a chunk does not know its file: the index records the range of event keys
    ``(run, luminosityBlock, event)`` of every file, and a chunk loads the partitions of
    the files whose range holds one of its events' keys, which is its own file alone
    unless files' key ranges overlap.  (A store written without ranges loads the
    dataset's partitions together.)
    """

    def __init__(self, directory: str | os.PathLike[str], cache_size: int = 2) -> None:
        self.directory = Path(directory)
        try:
            index = json.loads((self.directory / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.directory}: not a ScoreStore ({exc})") from exc
        if index.get("format") != _STORE_FORMAT:
            raise InputError(f"{self.directory}: not a ScoreStore (format {index.get('format')})")
        self.partitions: dict[str, dict[str, str]] = index["partitions"]
        #: {dataset: {file: [[run, lumi, event] first, [...] last]}} (None: no events)
        self.ranges: dict[str, dict[str, Any]] | None = index.get("ranges")
        self._systematics: list[str] = list(index["systematics"])
        self.varied_names: list[str] = list(index["varied_names"])
        self.one_sided: list[str] = list(index.get("one_sided", []))
        sel = (index.get("provenance", {}).get("pass1", {}) or {}).get("selection")
        self._pass1 = {"pass1": {"selection": sel}} if sel else {}
        self.cache_size = int(cache_size)
        self._cache: dict[tuple[str, str], VariedScores] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}  # never ship loaded partitions
        return state

    @classmethod
    def write(
        cls,
        varied: VariedScores,
        fileset: Any,
        directory: str | os.PathLike[str],
        *,
        uproot_options: Mapping[str, Any] | None = None,
        treename: str = "Events",
    ) -> ScoreStore:
        """Partition ``varied`` by the file each jet's event is in and write it.

        Each file's ``(run, luminosityBlock, event)`` are read (three branches) to assign
        the jets; every jet must land in exactly one file of its dataset.
        """
        from advsyst.processors.builders import _pack
        from advsyst.processors.run import normalize_fileset

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        norm = normalize_fileset(fileset, treename)
        jet_keys = _pack(
            varied.run.astype(np.uint64),
            varied.luminosityBlock.astype(np.uint64),
            varied.event.astype(np.uint64),
        )
        assigned = np.zeros(len(varied), dtype=np.int64)
        partitions: dict[str, dict[str, str]] = {}
        ranges: dict[str, dict[str, Any]] = {}
        k = 0
        for ds in varied.datasets:
            if ds not in norm:
                raise InputError(f"dataset {ds!r} of the scores is not in the fileset")
            in_ds = varied.dataset == ds
            partitions[ds], ranges[ds] = {}, {}
            for path, tree in norm[ds]["files"].items():
                ev = _file_event_keys(path, tree, uproot_options)
                ranges[ds][str(path)] = _key_range(ev)
                rows = np.flatnonzero(in_ds & np.isin(jet_keys, ev))
                assigned[rows] += 1
                name = f"part{k:05d}.npz"
                k += 1
                part = {
                    "run": varied.run[rows].astype(np.uint32),
                    "luminosityBlock": varied.luminosityBlock[rows].astype(np.uint32),
                    "event": varied.event[rows],
                    "jet_index": varied.jet_index[rows].astype(np.uint32),
                    "nominal": varied.nominal[rows],
                }
                for i, (up, down) in enumerate(varied.varied.values()):
                    part[f"up_{i}"], part[f"down_{i}"] = up[rows], down[rows]
                atomic_savez(out / name, **part)
                partitions[ds][str(path)] = name
        if np.any(assigned != 1):
            i = int(np.flatnonzero(assigned != 1)[0])
            raise InputError(
                f"{int((assigned != 1).sum())} jets are in {int(assigned[i])} files of their "
                f"dataset instead of one; first: "
                f"{_fmt_key(*(getattr(varied, f)[i] for f in KEY_FIELDS))}"
            )
        index = {
            "format": _STORE_FORMAT,
            "systematics": varied.systematics(),
            "varied_names": list(varied.varied),
            "one_sided": list(varied.one_sided),
            "partitions": partitions,
            "ranges": ranges,
            "provenance": to_jsonable(varied.provenance),
        }
        atomic_write_text(out / "index.json", json.dumps(index, default=str))
        return cls(out)

    def systematics(self) -> list[str]:
        """What the lookups return (see :meth:`VariedScores.systematics`)."""
        return list(self._systematics)

    def mirror_templates(self, h: Any) -> Any:
        """See :meth:`VariedScores.mirror_templates`."""
        return _mirror_one_sided(h, self.one_sided)

    def _load(self, dataset: str, names: Sequence[str]) -> VariedScores:
        parts = []
        for name in names:
            with np.load(self.directory / name, allow_pickle=False) as f:
                parts.append({k: f[k] for k in f.files})
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        return VariedScores(
            dataset=np.full(len(cat["nominal"]), dataset),
            run=cat["run"],
            luminosityBlock=cat["luminosityBlock"],
            event=cat["event"],
            jet_index=cat["jet_index"],
            nominal=cat["nominal"],
            varied={v: (cat[f"up_{i}"], cat[f"down_{i}"]) for i, v in enumerate(self.varied_names)},
            provenance=self._pass1,
            one_sided=self.one_sided,
        )

    def _files(self, dataset: str) -> dict[str, str]:
        files = self.partitions.get(str(dataset))
        if files is None:
            raise InputError(
                f"no scores for dataset {dataset!r} (known: {sorted(self.partitions)})"
            )
        return files

    def _cached(self, dataset: str, filenames: Sequence[str], key: tuple) -> VariedScores:
        if key in self._cache:
            return self._cache[key]
        files = self._files(dataset)
        part = self._load(str(dataset), [files[f] for f in filenames])
        while self._cache and len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = part
        return part

    def partition(self, dataset: str, filename: str | None = None) -> VariedScores:
        """The scores of one file of ``dataset`` (all its files when ``filename`` is None),
        loaded once per process (the last ``cache_size`` kept)."""
        files = self._files(dataset)
        if filename is None:
            return self._cached(str(dataset), list(files), (str(dataset), ""))
        if str(filename) not in files:
            raise InputError(
                f"no scores for file {filename!r} of dataset {dataset!r}: pass 1 skipped "
                f"it or did not read it (files with scores: {sorted(files)[:5]})"
            )
        return self._cached(str(dataset), [str(filename)], (str(dataset), str(filename)))

    def files_of(self, dataset: str, run: Any, lumi: Any, event: Any) -> list[str]:
        """The files of ``dataset`` whose range of event keys holds one of the given
        events' keys (per-event ``run``, ``lumi``, ``event``): the chunk's own file when
        the files' ranges do not overlap.  Every file of the dataset when the store has no
        ranges; the first file when no range holds a key (its lookup then names the
        missing jets)."""
        files = self._files(dataset)
        ranges = (self.ranges or {}).get(str(dataset))
        if ranges is None:
            return list(files)
        from advsyst.processors.builders import _pack

        keys = np.sort(
            _pack(*(_numpy(a).astype(np.uint64).reshape(-1) for a in (run, lumi, event)))
        )
        hit = []
        for f in files:
            rng = ranges.get(f)
            if rng is None or not len(keys):
                continue
            lo, hi = (_pack(*(np.array([v], dtype=np.uint64) for v in b)) for b in rng)
            i = np.searchsorted(keys, lo[0], side="left")
            if i < len(keys) and keys[i] <= hi[0]:
                hit.append(f)
        return hit or list(files)[:1]

    def lookup_jagged(
        self,
        dataset: str,
        run: Any,
        lumi: Any,
        event: Any,
        jet_index: Any,
        *,
        filename: str | None = None,
        missing: str = "raise",
        jets: Any = None,
    ) -> dict[str, Any]:
        """:meth:`VariedScores.lookup_jagged` on the partition of ``filename`` (give
        ``events.metadata["filename"]``).  Without it, and in coffea's dask mode (lazily,
        per chunk), on the partitions of :meth:`files_of` the chunk's event keys."""
        if _is_dask(jet_index) or _is_dask(event):
            return _lookup_dask(self, dataset, run, lumi, event, jet_index, missing, jets)
        if filename is not None:
            part = self.partition(dataset, filename)
        else:
            names = self.files_of(dataset, run, lumi, event)
            part = self._cached(str(dataset), names, (str(dataset), *names))
        return part.lookup_jagged(dataset, run, lumi, event, jet_index, missing=missing, jets=jets)


# ---------------------------------------------------------------------- attack step
def _key_columns(features: Mapping[str, Any]) -> dict[str, np.ndarray]:
    absent = [k for k in KEY_FIELDS if k not in features]
    if absent:
        raise InputError(
            f"the features lack the jet keys {absent}: run pass 1 with "
            "advsyst.processors.run.extract_features, which records them"
        )
    return {k: np.asarray(features[k]) for k in KEY_FIELDS}


def _sliced_context(ctx: Any, n: int, sel: np.ndarray | None) -> Any:
    ctx.check(n)
    if sel is None:
        return ctx
    changes = {}
    for label in ("y", "weights", "control_mask", "movable"):
        arr = getattr(ctx, label)
        if arr is not None:
            changes[label] = np.asarray(arr)[sel]
    return dataclasses.replace(ctx, **changes)


def build_varied_scores(
    features: Mapping[str, Any],
    model: Any,
    variations: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    context: Any = None,
    score_class: int | None = None,
    vary_mask: np.ndarray | None = None,
    score_range: tuple[float, float] = (0.0, 1.0),
    data_mask: np.ndarray | None = None,
    down: str = "template",
) -> VariedScores:
    """Run each variation once on the merged pass-1 features and score every jet.

    Parameters
    ----------
    features
        Output of :func:`advsyst.processors.run.extract_features` (``X``, the key
        columns, and optionally ``w``, ``y``, ``region_CR``, ``feature_names``).
    model
        The tagger (torch module or :class:`~advsyst.attacks.model.ModelAdapter`).
    variations
        Registered variation names (:func:`advsyst.systematics.available`).
    options
        ``{variation: options}`` passed to each variation.
    context
        A :class:`~advsyst.systematics.VariationContext` over all jets of ``features``;
        default: weights ``w``, labels ``y``, control mask ``region_CR`` (used by
        ``restrict_to_control``) and ``feature_names`` from ``features``.
    score_class
        Column of a multi-class model's probabilities (see
        :func:`advsyst.systematics.model_scores`).
    vary_mask
        Jets the variations run on (default all); the others (collision data) keep their
        nominal score in every systematic.  The dataset-level statistics of the attack
        are those of these jets together.
    score_range
        Range used to clip mirrored down scores (the histogram's score axis).
    data_mask
        Collision-data jets (flag ``"data"``): :meth:`VariedScores.outcomes` leaves them
        out and :meth:`VariedScores.detector_efficiency` uses them as data.  Default: no
        data.  With a ``context.detector``, the detector's P(adversarial) is recorded on
        the nominal features of every jet and on each variation's up features.
    down
        Down templates of variations without down features: ``"template"`` (default:
        they are :attr:`VariedScores.one_sided`, pass 2 fills their Up only and
        :meth:`VariedScores.mirror_templates` mirrors the merged template) or
        ``"per-jet"`` (a per-jet mirrored score under ``<name>Down``; see the module
        docstring for its caveat).

    Returns
    -------
    VariedScores
    """
    from advsyst.systematics import (
        VariationContext,
        detector_scores,
        get,
        mirror_scores,
        model_scores,
        run_variation,
    )
    from advsyst.systematics.histograms import DOWN_MODES

    if down not in DOWN_MODES:
        raise ConfigError(f"down must be one of {DOWN_MODES}, got {down!r}")
    keys = _key_columns(features)
    X = np.asarray(features["X"], dtype=np.float64)
    if X.ndim != 2 or len(X) != len(keys["event"]):
        raise InputError(
            f"features['X'] has shape {X.shape}; expected ({len(keys['event'])}, d) like the keys"
        )
    n = len(X)
    options = {k: dict(v) for k, v in (options or {}).items()}
    variations = list(variations)
    if len(set(variations)) != len(variations):
        raise ConfigError(f"duplicate variation names in {variations}")
    unknown = set(options) - set(variations)
    if unknown:
        raise ConfigError(f"options given for variations not requested: {sorted(unknown)}")
    for name in variations:
        get(name)  # unknown names fail before any work
    if context is None:
        names = features.get("feature_names")
        cr = features.get("region_CR")
        movable = features.get("movable")
        context = VariationContext(
            movable=None if movable is None else np.asarray(movable, bool),
            y=None if features.get("y") is None else np.asarray(features["y"]),
            weights=None if features.get("w") is None else np.asarray(features["w"], float),
            control_mask=None if cr is None else np.asarray(cr, bool),
            feature_names=None if names is None else [str(s) for s in names],
        )
    sel = None
    if vary_mask is not None:
        sel = np.asarray(vary_mask, dtype=bool)
        if sel.shape != (n,):
            raise InputError(f"vary_mask has shape {sel.shape}, expected ({n},)")
    ctx = _sliced_context(context, n, sel)
    Xv = X if sel is None else X[sel]
    nominal = np.zeros(n)
    nominal_pred = np.zeros(n, dtype=np.int64)
    if n:
        nominal, nominal_pred = model_scores(model, X, score_class)
    nominal_v = nominal if sel is None else nominal[sel]
    det_model = getattr(context, "detector", None)
    det_thr = float(getattr(context, "detector_threshold", 0.5))
    preds: dict[str, np.ndarray] = {"nominal": np.asarray(nominal_pred, np.int64)}
    det_p: dict[str, np.ndarray] = {}
    if det_model is not None and n:
        det_p["nominal"] = detector_scores(det_model, X)

    def put(full: np.ndarray, part: np.ndarray) -> np.ndarray:
        out = full.copy()
        if sel is None:
            out[:] = part
        else:
            out[sel] = part
        return out

    low, high = score_range
    varied: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    flags: dict[str, np.ndarray] = {}
    infos: dict[str, Any] = {}
    one_sided: list[str] = []
    for name in variations:
        up, dn = nominal.copy(), nominal.copy()
        if len(Xv):
            res = run_variation(name, Xv, model, context=ctx, **options.get(name, {}))
            up_v, up_pred = model_scores(model, res.up, score_class)
            preds[f"{name}Up"] = put(preds["nominal"], up_pred)
            if res.down is None:
                down_v = mirror_scores(nominal_v, up_v, low, high)
            else:
                down_v, down_pred = model_scores(model, res.down, score_class)
                preds[f"{name}Down"] = put(preds["nominal"], down_pred)
            res_flags = dict(res.flags)
            if det_model is not None:
                p_up = detector_scores(det_model, res.up)
                det_p[f"{name}Up"] = put(det_p["nominal"], p_up)
                if "detected" not in res_flags:  # as evaluate_dataset decides it
                    res_flags["detected"] = p_up >= det_thr
            if sel is None:
                up, dn = np.asarray(up_v, float), np.asarray(down_v, float)
            else:
                up[sel], dn[sel] = up_v, down_v
            for k, f in res_flags.items():
                full = np.zeros(n, dtype=bool)
                if sel is None:
                    full[:] = f
                else:
                    full[sel] = f
                flags[f"{name}.{k}"] = full
            infos[name] = {k: v for k, v in res.info.items() if k != "history"}
            infos[name]["down_mirrored"] = res.down is None
            if res.down is None and down == "template":
                one_sided.append(name)
        else:
            preds[f"{name}Up"] = preds["nominal"].copy()
        varied[name] = (up, dn)
    flags["varied"] = np.ones(n, dtype=bool) if sel is None else sel.copy()
    if data_mask is not None:
        dm = np.asarray(data_mask, dtype=bool)
        if dm.shape != (n,):
            raise InputError(f"data_mask has shape {dm.shape}, expected ({n},)")
        flags["data"] = dm.copy()
    for key in features:
        if str(key).startswith("region_") and np.shape(features[key]) == (n,):
            flags[f"region.{str(key)[len('region_') :]}"] = np.asarray(features[key], bool)
    weights = None if context.weights is None else np.asarray(context.weights, np.float64)
    prov = provenance(
        {"variations": variations, "options": options, "score_class": score_class, "down": down},
        seed=ctx.seed,
        n_jets=n,
        n_varied=int(flags["varied"].sum()),
        detector_threshold=det_thr if det_model is not None else None,
        score_range=list(score_range),
        variation_info=json.loads(json.dumps(to_jsonable(infos), default=str)),
    )
    pass1: dict[str, Any] = {}
    for key, name in (("pass1_selection", "selection"), ("normalization", "normalization")):
        if key in features:
            pass1[name] = json.loads(str(np.asarray(features[key])))
    if "skipped_files" in features:
        pass1["skipped_files"] = [str(p) for p in np.asarray(features["skipped_files"])]
    prov["pass1"] = pass1
    return VariedScores(
        **keys,
        nominal=nominal,
        varied=varied,
        flags=flags,
        provenance=prov,
        preds=preds,
        detector=det_p,
        weights=weights,
        one_sided=one_sided,
    )


# ---------------------------------------------------------------------- passes
_EXECUTORS = ("iterative", "futures", "dask")


@contextlib.contextmanager
def _client(client: Any, workers: int) -> Iterator[Any]:
    """The given client, or a temporary LocalCluster of ``workers`` processes."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=max(1, int(workers)),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def sum_gen_weights(
    files: Sequence[str], *, uproot_options: Mapping[str, Any] | None = None
) -> tuple[float, str]:
    """``(sum of genWeight, source)`` over files, as a normalisation denominator.

    Per file: the ``Runs`` tree's ``genEventSumw`` summed over its runs (``genEventSumw_``
    in old NanoAOD) where present (source ``"Runs"``), otherwise a pre-pass over the
    ``Events`` tree's ``genWeight`` (``"pre-pass"``; ``"mixed"`` when the files differ).
    Negative weights count with their sign.

    Raises
    ------
    InputError
        A file has neither ``Runs/genEventSumw`` nor ``Events/genWeight``.
    """
    import uproot

    total, sources = 0.0, set()
    for path in files:
        with uproot.open(path, **dict(uproot_options or {})) as f:
            runs = f["Runs"] if "Runs" in f else None
            branch = None
            if runs is not None:
                branch = next((b for b in ("genEventSumw", "genEventSumw_") if b in runs), None)
            if branch is not None:
                total += float(np.sum(runs[branch].array(library="np"), dtype=np.float64))
                sources.add("Runs")
                continue
            if "Events" not in f or "genWeight" not in f["Events"]:
                raise InputError(
                    f"{path}: no Runs/genEventSumw and no Events/genWeight to normalise with; "
                    "give metadata['sumw'] or mark the dataset is_data"
                )
            gw = f["Events"]["genWeight"].array(library="np")
            total += float(np.sum(gw, dtype=np.float64))
            sources.add("pre-pass")
    source = sources.pop() if len(sources) == 1 else ("mixed" if sources else "none")
    return total, source


def _positive(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a number, got {value!r}") from exc
    if not np.isfinite(x) or x <= 0:
        raise ConfigError(f"{what} must be finite and > 0, got {value!r}")
    return x


def normalize_weights(
    features: Mapping[str, Any],
    fileset: Any,
    *,
    lumi: float | None = None,
    uproot_options: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Per-jet weights normalised per dataset, as analysts do.

    Simulation (metadata ``is_data`` false): ``w * xsec * lumi / sum(genWeight)`` with
    ``metadata["xsec"]`` (pb), ``metadata["lumi"]`` or ``lumi`` (pb^-1), and the sum of
    generator weights from ``metadata["sumw"]``, else :func:`sum_gen_weights` over the
    dataset's files that pass 1 read (skipped files excluded).  A dataset without
    ``xsec`` keeps its raw weights (logged).  Collision data: weight 1.  Negative weights
    keep their sign.

    Returns
    -------
    (w, info)
        The weights and ``{dataset: {"factor", "sumw", "sumw_source", "xsec", "lumi"}}``.
    """
    from advsyst.processors.run import normalize_fileset

    norm = normalize_fileset(fileset)
    ds = np.asarray(features["dataset"]).astype(str)
    w = np.asarray(features["w"], dtype=np.float64).copy()
    skipped = {str(p) for p in np.asarray(features.get("skipped_files", []), dtype=str)}
    info: dict[str, dict[str, Any]] = {}
    for name in sorted(set(ds.tolist())):
        if name not in norm:
            raise InputError(f"dataset {name!r} of the features is not in the fileset")
        meta = norm[name]["metadata"]
        m = ds == name
        if meta.get("is_data"):
            w[m] = 1.0
            info[name] = {"factor": 1.0, "is_data": True}
            continue
        if meta.get("xsec") is None:
            log.info("dataset %s: no metadata['xsec']; weights stay raw genWeight", name)
            info[name] = {"factor": 1.0, "xsec": None}
            continue
        xsec = _positive(meta["xsec"], f"dataset {name!r}: metadata['xsec']")
        lumi_v = meta.get("lumi", lumi)
        if lumi_v is None:
            raise ConfigError(
                f"dataset {name!r} has an xsec but no luminosity: give metadata['lumi'] or lumi="
            )
        lumi_v = _positive(lumi_v, f"dataset {name!r}: luminosity")
        if meta.get("sumw") is not None:
            sumw, source = float(meta["sumw"]), "metadata"
        else:
            files = [f for f in norm[name]["files"] if f not in skipped]
            sumw, source = sum_gen_weights(files, uproot_options=uproot_options)
        if not np.isfinite(sumw) or sumw <= 0:
            raise InputError(
                f"dataset {name!r}: sum of generator weights is {sumw} ({source}); it must be "
                "> 0 to normalise (net-negative samples cannot be normalised)"
            )
        factor = xsec * lumi_v / sumw
        w[m] *= factor
        info[name] = {
            "factor": factor,
            "sumw": sumw,
            "sumw_source": source,
            "xsec": xsec,
            "lumi": lumi_v,
        }
    if not np.all(np.isfinite(w)):
        raise InputError(f"{int((~np.isfinite(w)).sum())} jet weights are NaN/inf")
    return w, info


def run_pass1(
    fileset: Any,
    *,
    builder: Any = None,
    executor: str = "iterative",
    schema: str = "pfnano",
    jet_collection: str = "FatJet",
    chunksize: int = 50_000,
    workers: int = 1,
    client: Any = None,
    skip_bad_files: bool = False,
    progress: bool = True,
    maxchunks: int | None = None,
    checkpointer: Any = None,
    uproot_options: Mapping[str, Any] | None = None,
    lumi: float | None = None,
    **feature_options: Any,
) -> dict[str, np.ndarray]:
    """Pass 1: merged per-jet features, keys, labels and normalised weights.

    Parameters
    ----------
    fileset
        coffea fileset; per dataset ``metadata`` may hold ``is_data``, ``label``,
        ``xsec`` (pb), ``lumi`` (pb^-1) and ``sumw`` (see :func:`normalize_weights`).
    builder
        The analyst's feature builder, ``events -> per-jet arrays`` (contract in
        :mod:`advsyst.processors.builders`), run with ``processor.Runner``.  Default:
        advsyst's processor for ``schema`` (:func:`advsyst.processors.run.make_processor`
        with ``jet_collection`` and ``feature_options``), which is itself such a builder.
    executor
        ``"iterative"``, ``"futures"`` or ``"dask"`` (default builder: coffea's
        ``apply_to_fileset`` on ``client``'s cluster, else local threads; own builder:
        ``DaskExecutor`` on ``client``, else a temporary LocalCluster of ``workers``).
    skip_bad_files
        Skip unreadable files (listed in ``skipped_files``; :func:`two_pass` leaves
        them out of pass 2) instead of raising.
    progress
        coffea's progress bars (on by default).
    maxchunks, checkpointer, uproot_options
        Passed through to coffea (see :func:`advsyst.processors.run.extract_features`).
    lumi
        Integrated luminosity (pb^-1) for datasets whose metadata has ``xsec`` but no
        ``lumi``.

    Returns
    -------
    dict of np.ndarray
        ``X``, the key columns, ``dataset``, ``y``, ``w`` (normalised), ``w_raw``,
        ``feature_names``, ``skipped_files``, ``region_*``, ``normalization`` (JSON per
        dataset) and ``pass1_selection`` (JSON: the jet cuts, for pass 2's checks).
    """
    from advsyst.processors.run import extract_features, extract_with_builder

    if executor not in _EXECUTORS:
        raise ConfigError(f"executor must be one of {_EXECUTORS}, got {executor!r}")
    common = dict(
        executor=executor,
        schema=schema,
        chunksize=chunksize,
        workers=workers,
        skip_bad_files=skip_bad_files,
        progress=progress,
        maxchunks=maxchunks,
        checkpointer=checkpointer,
        uproot_options=uproot_options,
    )
    if builder is None:
        from advsyst.processors.run import make_processor

        extra = {"scheduler": client} if executor == "dask" and client is not None else {}
        features = extract_features(
            fileset, jet_collection=jet_collection, **common, **extra, **feature_options
        )
        proc = make_processor(schema, jet_collection, **{
            k: v for k, v in feature_options.items() if k in ("jet_min_pt", "jet_max_abs_eta")
        })  # fmt: skip
        selection = {
            "jet_collection": jet_collection,
            "jet_min_pt": proc.jet_min_pt,
            "jet_max_abs_eta": proc.jet_max_abs_eta,
        }
    else:
        if feature_options:
            raise ConfigError(
                f"options {sorted(feature_options)} are for advsyst's processors; with a "
                "feature builder, configure the builder itself"
            )
        with contextlib.ExitStack() as stack:
            if executor == "dask" and client is None:
                client = stack.enter_context(_client(None, workers))
            features = extract_with_builder(fileset, builder, client=client, **common)
        selection = dict(getattr(builder, "selection", {}) or {})
        selection.setdefault("builder", getattr(builder, "__qualname__", type(builder).__name__))
    features["w_raw"] = np.asarray(features["w"], dtype=np.float64)
    w, info = normalize_weights(features, fileset, lumi=lumi, uproot_options=uproot_options)
    features["w"] = w
    features["normalization"] = np.array(json.dumps(to_jsonable(info), default=str))
    features["pass1_selection"] = np.array(json.dumps(to_jsonable(selection), default=str))
    if len(features["skipped_files"]):
        log.warning(
            "pass 1 skipped %d unreadable files: %s",
            len(features["skipped_files"]),
            ", ".join(map(str, features["skipped_files"])),
        )
    return features


def run_pass2(
    fileset: Any,
    processor_instance: Any,
    *,
    executor: str = "iterative",
    schema: str = "pfnano",
    chunksize: int = 50_000,
    workers: int = 1,
    client: Any = None,
    quiet_schema: bool = True,
    treename: str = "Events",
    progress: bool = True,
    skip_bad_files: bool = False,
    skip_files: Sequence[str] = (),
    maxchunks: int | None = None,
    checkpointer: Any = None,
    mode: str = "eager",
    uproot_options: Mapping[str, Any] | None = None,
) -> Any:
    """Pass 2: run the analyst's processor, in coffea's eager or dask mode.

    ``mode="eager"`` (default): ``processor.Runner`` (virtual mode) with the executor
    below.  ``mode="dask"``: ``coffea.dataset_tools.preprocess`` + ``apply_to_fileset``
    (dask-awkward events, ``hist.dask`` histograms; :meth:`VariedScores.lookup_jagged`
    works lazily there) computed on ``client`` (else local threads, ``workers``); the
    per-dataset outputs are merged with ``coffea.processor.accumulate`` so that both
    modes return the same structure.  ``checkpointer`` is eager-mode only;
    ``uproot_options`` dask-mode only (coffea's Runner takes none).

    ``executor``: ``"iterative"``, ``"futures"`` (``workers`` processes) or ``"dask"``
    (``DaskExecutor`` on ``client``; a temporary ``LocalCluster`` of ``workers``
    processes when None).  ``skip_files`` (e.g. pass 1's ``skipped_files``) are left out;
    ``skip_bad_files``, ``maxchunks`` and ``checkpointer`` go to coffea's Runner;
    ``progress`` shows coffea's progress bars.  Returns the processor's (merged,
    postprocessed) output.
    """
    from advsyst.processors.run import _SCHEMAS, make_executor, normalize_fileset, run_with_runner

    if executor not in _EXECUTORS:
        raise ConfigError(f"executor must be one of {_EXECUTORS}, got {executor!r}")
    if schema not in _SCHEMAS:
        raise ConfigError(f"schema must be one of {sorted(_SCHEMAS)}, got {schema!r}")
    schema_cls = _SCHEMAS[schema][1 if quiet_schema else 0]
    norm = drop_files(normalize_fileset(fileset, treename), skip_files)
    if mode not in ("eager", "dask"):
        raise ConfigError(f"mode must be 'eager' or 'dask', got {mode!r}")
    if mode == "dask":
        from coffea.processor import accumulate

        from advsyst.processors.run import apply_processor_dask

        if checkpointer is not None:
            raise ConfigError("checkpointer works in eager mode only (coffea's Runner)")
        if executor not in ("dask", "iterative"):
            raise ConfigError("mode='dask' computes on a dask scheduler: executor 'dask'")
        per_ds = apply_processor_dask(
            norm,
            processor_instance,
            schema_cls,
            chunksize=chunksize,
            workers=workers,
            scheduler=client,
            uproot_options=uproot_options,
            maxchunks=maxchunks,
            skip_bad_files=skip_bad_files,
            progress=progress,
        )
        merged = accumulate([per_ds[ds] for ds in norm if ds in per_ds])
        post = getattr(processor_instance, "postprocess", None)
        if post is not None:
            res = post(merged)
            merged = merged if res is None else res
        return merged
    if uproot_options:
        raise ConfigError("uproot_options: coffea's Runner (eager mode) takes none")

    def run(c: Any = None) -> Any:
        ex = make_executor(executor, workers=workers, client=c, progress=progress, desc="pass 2")
        return run_with_runner(
            norm,
            processor_instance,
            schema_cls,
            ex,
            chunksize=chunksize,
            skipbadfiles=skip_bad_files,
            maxchunks=maxchunks,
            checkpointer=checkpointer,
        )

    if executor != "dask":
        return run()
    with _client(client, workers) as c:
        return run(c)


def drop_files(fileset: Mapping[str, Any], files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A normalised fileset without ``files``; datasets left with none are dropped (logged)."""
    from advsyst.processors.run import normalize_fileset

    skip = {str(f) for f in files}
    out = {}
    for ds, spec in normalize_fileset(fileset).items():
        kept = {p: t for p, t in spec["files"].items() if p not in skip}
        if kept:
            out[ds] = {**spec, "files": kept}
        else:
            log.warning("dataset %s: every file was skipped in pass 1; left out of pass 2", ds)
    if not out:
        raise InputError("no readable files left for pass 2")
    return out


def _data_mask(fileset: Any, dataset: np.ndarray) -> np.ndarray:
    from advsyst.processors.run import normalize_fileset

    norm = normalize_fileset(fileset)
    data = {ds for ds, spec in norm.items() if spec["metadata"].get("is_data")}
    return np.isin(np.asarray(dataset).astype(str), sorted(data))


def two_pass(
    fileset: Any,
    model: Any,
    variations: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    analysis_processor_factory: Callable[[VariedScores], Any],
    executor: str = "iterative",
    jet_collection: str = "FatJet",
    schema: str = "pfnano",
    chunksize: int = 50_000,
    workers: int = 1,
    client: Any = None,
    context: Any = None,
    score_class: int | None = None,
    vary_data: bool = False,
    feature_options: Mapping[str, Any] | None = None,
    save_scores: str | os.PathLike[str] | None = None,
    return_scores: bool = False,
    builder: Any = None,
    skip_bad_files: bool = False,
    progress: bool = True,
    maxchunks: int | None = None,
    checkpointer: Any = None,
    uproot_options: Mapping[str, Any] | None = None,
    lumi: float | None = None,
    pass2_mode: str = "eager",
    down: str = "template",
) -> Any:
    """Pass 1, the variations on the merged features, pass 2 (see the module docstring).

    Parameters
    ----------
    fileset
        coffea fileset, ``{dataset: {"files": {path: "Events"}, "metadata": {...}}}``
        (or the shorter forms :func:`advsyst.processors.run.normalize_fileset` accepts);
        ``metadata["is_data"]`` marks collision data.
    model, variations, options, context, score_class
        As for :func:`build_varied_scores` (``context`` over all pass-1 jets).
    analysis_processor_factory
        ``VariedScores -> processor.ProcessorABC``: builds the analyst's processor (e.g.
        the processor class itself, when its first argument is the VariedScores).
    executor
        ``"iterative"``, ``"futures"`` or ``"dask"``, used for both passes.
    jet_collection, schema, chunksize, workers
        Pass-1 feature processor settings (schema ``pfnano``: constituents, ``nanoaod``:
        jet variables) and the executors' chunk size and worker count; pass 2 opens the
        files with the same schema.
    client
        ``distributed.Client`` for ``executor="dask"`` (default: local threads for pass 1,
        a temporary ``LocalCluster`` for pass 2).
    vary_data
        Run the variations on collision-data datasets too (default: simulation only).
    feature_options
        Extra :func:`~advsyst.processors.run.extract_features` options (``jet_min_pt``,
        ``jet_max_abs_eta``, ``regions``, ...).
    save_scores
        Write the :class:`VariedScores` there (``.npz``).
    return_scores
        Return ``(output, VariedScores)`` instead of the output alone.
    builder
        The analyst's pass-1 feature builder (see :func:`run_pass1`); default advsyst's
        processor for ``schema``.
    skip_bad_files
        Skip unreadable files in pass 1 (reported in the log and in
        ``VariedScores.provenance["pass1"]["skipped_files"]``) and leave them out of pass 2.
    progress
        coffea progress bars in both passes (default on).
    maxchunks, checkpointer, uproot_options, lumi
        See :func:`run_pass1` (``maxchunks`` and ``checkpointer`` apply to both passes).
    pass2_mode
        ``"eager"`` (``processor.Runner``) or ``"dask"`` (``apply_to_fileset``; the
        processor is written for dask-awkward arrays), see :func:`run_pass2`.
    down
        See :func:`build_varied_scores`.  With ``"template"`` (default) every template
        histogram of the output (``process`` and ``systematic`` axes, see
        :func:`advsyst.systematics.template_axes`; searched through nested dicts) that
        holds a one-sided ``<name>Up`` gets its ``<name>Down`` from
        :meth:`VariedScores.mirror_templates` after pass 2.

    Returns
    -------
    The analyst processor's output (or ``(output, VariedScores)``).
    """
    if executor not in _EXECUTORS:
        raise ConfigError(f"executor must be one of {_EXECUTORS}, got {executor!r}")
    with contextlib.ExitStack() as stack:
        if executor == "dask" and client is None:
            client = stack.enter_context(_client(None, workers))
        features = run_pass1(
            fileset,
            builder=builder,
            executor=executor,
            schema=schema,
            jet_collection=jet_collection,
            chunksize=chunksize,
            workers=workers,
            client=client,
            skip_bad_files=skip_bad_files,
            progress=progress,
            maxchunks=maxchunks,
            checkpointer=checkpointer,
            uproot_options=uproot_options,
            lumi=lumi,
            **dict(feature_options or {}),
        )
        is_data = _data_mask(fileset, features["dataset"])
        vary = None if vary_data else ~is_data
        log.info(
            "pass 1: %d jets; running %s on %d of them",
            len(features["X"]),
            ", ".join(variations),
            len(features["X"]) if vary is None else int(vary.sum()),
        )
        varied = build_varied_scores(
            features,
            model,
            variations,
            options,
            context=context,
            score_class=score_class,
            vary_mask=vary,
            data_mask=is_data,
            down=down,
        )
        skipped = [str(p) for p in features["skipped_files"]]
        if save_scores is not None:
            varied.save(save_scores)
        proc = analysis_processor_factory(varied)
        out = run_pass2(
            fileset,
            proc,
            executor=executor,
            schema=schema,
            chunksize=chunksize,
            workers=workers,
            client=client,
            progress=progress,
            skip_bad_files=skip_bad_files,
            skip_files=skipped,
            maxchunks=maxchunks,
            checkpointer=checkpointer,
            mode=pass2_mode,
            uproot_options=uproot_options if pass2_mode == "dask" else None,
        )
    out = mirror_output(out, varied)
    return (out, varied) if return_scores else out


def mirror_output(out: Any, varied: VariedScores | ScoreStore) -> Any:
    """Apply ``varied.mirror_templates`` to every template histogram in a (nested dict)
    processor output that holds an Up template of a one-sided variation; returns the
    output with those histograms replaced.  Histograms with such an Up but without a
    ``process`` axis are left alone with a warning (mirror them yourself)."""
    import hist

    from advsyst.systematics import template_axes

    ups = {f"{n}Up" for n in varied.one_sided}
    if not ups:
        return out
    if isinstance(out, Mapping):
        new = {k: mirror_output(v, varied) for k, v in out.items()}
        if isinstance(out, dict):
            out.update(new)
            return out
        return type(out)(new)
    if isinstance(out, hist.Hist) and "systematic" in [a.name for a in out.axes]:
        if not ups & {str(c) for c in out.axes["systematic"]}:
            return out
        try:
            template_axes(out)
        except InputError as exc:
            log.warning(
                "a histogram with one-sided %s templates is not a template histogram (%s): "
                "its Down templates were not made; call VariedScores.mirror_templates on it",
                sorted(ups),
                exc,
            )
            return out
        return varied.mirror_templates(out)
    return out
