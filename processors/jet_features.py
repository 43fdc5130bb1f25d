"""coffea processors turning NanoAOD / PFNano events into fixed-size jet features.

* :class:`JetConstituentProcessor` (PFNano): per selected jet, the first 30 constituents
  (pT-sorted) as raw ``(pT, eta, phi) x 30`` and as the 87 TopoDNN-style inputs.
* :class:`JetVariablesProcessor` (plain NanoAOD): per selected jet, its kinematics and the
  tagger-relevant variables the file carries.

Both run unchanged in coffea's virtual mode (``processor.Runner``) and in dask mode
(``coffea.dataset_tools.apply_to_fileset``): the event-level arrays are gathered from the
schema's collections and one eager kernel turns them into per-jet NumPy arrays, called
directly in virtual mode and through ``dask_awkward.map_partitions`` in dask mode, so the
modes agree exactly.

Constituents are assembled from the association table's index branches, not from
``Jet_nConstituents``, which covers the three layouts found in real files
(:func:`detect_layout`):

``pfnano``       ``<Jet>PFCands_{jetIdx,pFCandsIdx}`` into ``PFCands_*`` (PFNano, coffea's
                 ``PFNanoAODSchema``; also what ``advsyst generate`` writes);
``pfnano_inline`` older PFNano: ``<Jet>PFCands_{jetIdx,pt,eta,phi}`` with the candidate
                 kinematics stored in the association table itself;
``nanoaod_v15``  official NanoAOD v15: ``<Jet>PFCand_{jetIdx,pfCandIdx}`` into ``PFCand_*``
                 (coffea does not expose these as ``constituents``).

Output per chunk (virtual mode): ``{"chunks": {(dataset, filename, entrystart): arrays}}``
so that chunks can be put back in file order whatever executor ran them; in dask mode
``{"jets": dask_awkward.Array}`` of per-jet records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
from coffea import processor

from advsyst.errors import MissingBranchError
from advsyst.features.topodnn import (
    N_CONSTITUENTS,
    pad_constituents,
    raw_feature_names,
    topodnn_feature_names,
    topodnn_transform,
)

__all__ = [
    "ConstituentLayout",
    "RegionCut",
    "DEFAULT_REGIONS",
    "DEFAULT_JET_VARIABLES",
    "JetConstituentProcessor",
    "JetVariablesProcessor",
    "detect_layout",
    "collections_from_branches",
    "constituents_from_index",
]

_KINEMATICS = ("pt", "eta", "phi")


@dataclass(frozen=True)
class ConstituentLayout:
    """Where the constituents of a jet collection live in a file."""

    kind: str
    association: str
    jet_index: str
    candidates: str
    candidate_index: str | None

    def required(self, jet_collection: str) -> list[str]:
        """Flat branch names this layout reads."""
        out = [f"{jet_collection}_{v}" for v in (*_KINEMATICS, "mass")]
        out.append(f"{self.association}_{self.jet_index}")
        if self.candidate_index is not None:
            out.append(f"{self.association}_{self.candidate_index}")
        out += [f"{self.candidates}_{v}" for v in _KINEMATICS]
        return out


@dataclass(frozen=True)
class RegionCut:
    """A region: ``low <= variable < high`` (or its complement with ``invert``).

    ``variable`` is one of ``pt``, ``eta``, ``abs_eta``, ``phi``, ``mass``.
    """

    variable: str
    low: float = -np.inf
    high: float = np.inf
    invert: bool = False

    def mask(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        v = values[self.variable]
        inside = (v >= self.low) & (v < self.high)
        return ~inside if self.invert else inside


#: Signal region: jet mass in the top-mass window; control region: the rest.
DEFAULT_REGIONS: dict[str, RegionCut] = {
    "SR": RegionCut("mass", 105.0, 210.0),
    "CR": RegionCut("mass", 105.0, 210.0, invert=True),
}

#: Tagger-relevant variables used by :class:`JetVariablesProcessor` when present.
DEFAULT_JET_VARIABLES: dict[str, tuple[str, ...]] = {
    "Jet": (
        "pt",
        "eta",
        "phi",
        "mass",
        "nConstituents",
        "btagDeepFlavB",
        "btagPNetB",
        "qgl",
        "chHEF",
        "neHEF",
        "chEmEF",
        "neEmEF",
        "muEF",
    ),
    "FatJet": (
        "pt",
        "eta",
        "phi",
        "mass",
        "msoftdrop",
        "nConstituents",
        "tau1",
        "tau2",
        "tau3",
        "tau4",
        "n2b1",
        "n3b1",
        "particleNet_TvsQCD",
        "particleNet_WvsQCD",
        "particleNetWithMass_TvsQCD",
        "particleNetWithMass_WvsQCD",
        "chHEF",
        "neHEF",
        "chEmEF",
        "neEmEF",
        "muEF",
    ),
}
#: Ratios added when their inputs are selected.
_DERIVED = {"tau21": ("tau2", "tau1"), "tau32": ("tau3", "tau2")}


def collections_from_branches(branches: Iterable[str]) -> dict[str, set[str]]:
    """Group flat NanoAOD branch names into ``{collection: {field, ...}}``."""
    out: dict[str, set[str]] = {}
    for b in branches:
        coll, sep, fld = b.partition("_")
        if sep:
            out.setdefault(coll, set()).add(fld)
        else:
            out.setdefault(coll, set())
    return out


def detect_layout(
    collections: Mapping[str, Collection[str]], jet_collection: str
) -> ConstituentLayout:
    """Find the constituent layout of ``jet_collection`` (see the module docstring).

    Parameters
    ----------
    collections : mapping
        ``{collection: fields}`` (from ``events`` or :func:`collections_from_branches`).
    jet_collection : str
        ``"Jet"``, ``"FatJet"``, ...

    Raises
    ------
    MissingBranchError
        When the jet collection or its constituents are absent.
    """

    def has(coll: str, *fields: str) -> bool:
        return coll in collections and all(f in collections[coll] for f in fields)

    if not has(jet_collection, *_KINEMATICS, "mass"):
        raise MissingBranchError(
            f"no jet collection {jet_collection!r} with pt/eta/phi/mass "
            f"(collections present: {sorted(c for c in collections if collections[c])[:40]})"
        )
    assoc = f"{jet_collection}PFCands"
    if has(assoc, "jetIdx", "pFCandsIdx") and has("PFCands", *_KINEMATICS):
        return ConstituentLayout("pfnano", assoc, "jetIdx", "PFCands", "pFCandsIdx")
    if has(assoc, "jetIdx", *_KINEMATICS):
        return ConstituentLayout("pfnano_inline", assoc, "jetIdx", assoc, None)
    assoc15 = f"{jet_collection}PFCand"
    if has(assoc15, "jetIdx", "pfCandIdx") and has("PFCand", *_KINEMATICS):
        return ConstituentLayout("nanoaod_v15", assoc15, "jetIdx", "PFCand", "pfCandIdx")
    raise MissingBranchError(
        f"no constituents for {jet_collection!r}: expected {assoc}_{{jetIdx,pFCandsIdx}} + "
        f"PFCands_{{pt,eta,phi}} (PFNano), {assoc}_{{jetIdx,pt,eta,phi}} (older PFNano) or "
        f"{assoc15}_{{jetIdx,pfCandIdx}} + PFCand_{{pt,eta,phi}} (NanoAOD v15); "
        "use --schema nanoaod for jet-level variables only"
    )


def _flat(a: ak.Array, dtype: Any = np.float64) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(a, axis=None)), dtype=dtype)


def _counts(a: ak.Array) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.num(a, axis=1)), dtype=np.int64)


def constituents_from_index(
    n_jets: np.ndarray,
    jet_idx: ak.Array,
    cand_idx: ak.Array | None,
    cand_fields: Sequence[ak.Array],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group constituents per jet from an association table.

    Parameters
    ----------
    n_jets : np.ndarray, shape (n_events,)
        Jets per event.
    jet_idx : ak.Array
        ``(n_events, var)`` local jet index of each association row.
    cand_idx : ak.Array or None
        ``(n_events, var)`` local candidate index of each row; None when the candidate
        fields are stored in the association table itself (same shape as ``jet_idx``).
    cand_fields : sequence of ak.Array
        Candidate quantities ``(n_events, var)`` (e.g. pt, eta, phi).

    Returns
    -------
    counts : np.ndarray, shape (n_jets_total,)
        Constituents per jet (flat over all jets of all events).
    fields : list of np.ndarray
        Flat constituent quantities grouped jet by jet (input order within a jet).
        Rows pointing outside the jet or candidate collection are ignored.
    """
    n_jets = np.asarray(n_jets, dtype=np.int64)
    n_ev = n_jets.size
    jet_off = np.concatenate([[0], np.cumsum(n_jets)])
    n_rows = _counts(jet_idx)
    ev = np.repeat(np.arange(n_ev), n_rows)
    jloc = _flat(jet_idx, np.int64)
    valid = (jloc >= 0) & (jloc < n_jets[ev])
    values = [_flat(f) for f in cand_fields]
    if cand_idx is not None:
        cloc = _flat(cand_idx, np.int64)
        n_cand = _counts(cand_fields[0])
        cand_off = np.concatenate([[0], np.cumsum(n_cand)])
        valid &= (cloc >= 0) & (cloc < n_cand[ev])
        gcand = cand_off[ev[valid]] + cloc[valid]
        values = [v[gcand] for v in values]
    else:
        values = [v[valid] for v in values]
    gjet = jet_off[ev[valid]] + jloc[valid]
    order = np.argsort(gjet, kind="stable")
    counts = np.bincount(gjet, minlength=int(jet_off[-1])).astype(np.int64)
    return counts, [v[order] for v in values]


def _is_dask(events: Any) -> bool:
    return type(events).__module__.split(".")[0] == "dask_awkward"


def _is_typetracer(arrays: Sequence[Any]) -> bool:
    return any(ak.backend(a) == "typetracer" for a in arrays)


def _empty_output(columns: Mapping[str, tuple[Any, int | None]]) -> dict[str, np.ndarray]:
    return {
        k: np.zeros((0,) if width is None else (0, width), dtype=dt)
        for k, (dt, width) in columns.items()
    }


def _to_records(arrays: Mapping[str, np.ndarray]) -> ak.Array:
    return ak.zip(
        {k: ak.from_numpy(v, regulararray=True) for k, v in arrays.items()}, depth_limit=1
    )


class _Kernel:
    """Picklable callable: event-level arrays (by name) -> per-jet NumPy arrays."""

    def __init__(self, proc: _JetProcessorBase, names: Sequence[str], context: dict[str, Any]):
        self.proc = proc
        self.names = list(names)
        self.context = context

    def __call__(self, *arrays: ak.Array) -> ak.Array:
        if _is_typetracer(arrays):
            for a in arrays:
                ak.typetracer.touch_data(a)
            empty = _to_records(_empty_output(self.proc.output_columns()))
            return ak.Array(empty.layout.to_typetracer(forget_length=True))
        out = self.proc.compute(dict(zip(self.names, arrays)), **self.context)
        return _to_records(out)


class _JetProcessorBase(processor.ProcessorABC):
    """Shared selection, labels, weights and regions of the jet processors."""

    def __init__(
        self,
        jet_collection: str = "FatJet",
        *,
        jet_min_pt: float = 200.0,
        jet_max_abs_eta: float = 2.4,
        require_truth_match: bool = False,
        label: int | None = None,
        is_data: bool | None = None,
        regions: Mapping[str, RegionCut] | None = None,
        truth_label_branch: str | None = None,
        truth_match_branch: str = "truthMatch",
    ) -> None:
        self.jet_collection = jet_collection
        self.jet_min_pt = float(jet_min_pt)
        self.jet_max_abs_eta = float(jet_max_abs_eta)
        self.require_truth_match = bool(require_truth_match)
        self.label = None if label is None else int(label)
        self.is_data = is_data
        self.regions = dict(DEFAULT_REGIONS if regions is None else regions)
        self.truth_label_branch = truth_label_branch
        self.truth_match_branch = truth_match_branch

    # -- to be provided by subclasses -------------------------------------------------
    @property
    def feature_names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def raw_feature_names(self) -> list[str]:
        return []

    def _gather_specific(self, events: Any, fields: Mapping[str, Collection[str]]) -> dict:
        raise NotImplementedError  # pragma: no cover

    def _features(self, inputs: Mapping[str, Any], n_jets: np.ndarray, sel: np.ndarray):
        raise NotImplementedError  # pragma: no cover

    # -- shared --------------------------------------------------------------------
    def output_columns(self) -> dict[str, tuple[Any, int | None]]:
        cols: dict[str, tuple[Any, int | None]] = {
            "X_raw": (np.float64, len(self.raw_feature_names)),
            "X": (np.float64, len(self.feature_names)),
            "pt": (np.float64, None),
            "eta": (np.float64, None),
            "phi": (np.float64, None),
            "mass": (np.float64, None),
            "event": (np.uint64, None),
            "run": (np.int64, None),
            "luminosityBlock": (np.int64, None),
            "jet_index": (np.int64, None),
            "y": (np.int64, None),
            "w": (np.float64, None),
            "n_constituents": (np.int64, None),
        }
        for name in self.regions:
            cols[f"region_{name}"] = (np.bool_, None)
        return cols

    @staticmethod
    def _fields(events: Any) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for name in events.fields:
            sub = events[name]
            out[name] = set(sub.fields) if sub.fields else set()
        return out

    def gather(self, events: Any, *, is_data: bool, label: int | None = None) -> dict[str, Any]:
        """The event-level arrays the kernel needs (eager or dask), by name."""
        fields = self._fields(events)
        jc = self.jet_collection
        if jc not in fields or not {*_KINEMATICS, "mass"} <= fields[jc]:
            raise MissingBranchError(
                f"no jet collection {jc!r} with pt/eta/phi/mass in the events "
                f"(collections: {sorted(fields)[:40]})"
            )
        jets = events[jc]
        inputs: dict[str, Any] = {f"jet_{v}": jets[v] for v in (*_KINEMATICS, "mass")}
        if "event" not in fields:
            raise MissingBranchError("the events have no 'event' branch")
        inputs["event"] = events["event"]
        for key in ("run", "luminosityBlock"):  # per-jet keys for the two-pass lookup
            if key in fields:
                inputs[key] = events[key]
        if not is_data and "genWeight" in fields:
            inputs["genWeight"] = events["genWeight"]
        tlb = self.truth_label_branch
        if not is_data and label is None and tlb is not None and tlb in fields[jc]:
            inputs["truth_label"] = jets[self.truth_label_branch]
        if self.require_truth_match and not is_data:
            if self.truth_match_branch not in fields[jc]:
                raise MissingBranchError(
                    f"require_truth_match needs {jc}_{self.truth_match_branch}, absent here"
                )
            inputs["truth_match"] = jets[self.truth_match_branch]
        inputs.update(self._gather_specific(events, fields))
        return inputs

    def compute(
        self, inputs: Mapping[str, Any], *, label: int | None, is_data: bool
    ) -> dict[str, np.ndarray]:
        """Per-jet NumPy arrays from eager event-level inputs (the kernel)."""
        jet_pt = inputs["jet_pt"]
        n_jets = _counts(jet_pt)
        pt = _flat(jet_pt)
        eta = _flat(inputs["jet_eta"])
        phi = _flat(inputs["jet_phi"])
        mass = _flat(inputs["jet_mass"])
        ev_idx = np.repeat(np.arange(n_jets.size), n_jets)
        sel = (pt > self.jet_min_pt) & (np.abs(eta) < self.jet_max_abs_eta)
        if "truth_match" in inputs:
            sel &= _flat(inputs["truth_match"], np.int64) > 0
        event = np.asarray(ak.to_numpy(inputs["event"]), dtype=np.uint64)[ev_idx[sel]]
        run, lumi = (
            np.asarray(ak.to_numpy(inputs[k]), dtype=np.int64)[ev_idx[sel]]
            if k in inputs
            else np.zeros(int(sel.sum()), dtype=np.int64)
            for k in ("run", "luminosityBlock")
        )
        # index of each jet in its event's full collection (ak.local_index before selection)
        jet_index = (np.arange(pt.size) - np.repeat(np.cumsum(n_jets) - n_jets, n_jets))[sel]
        if "genWeight" in inputs and not is_data:
            w = np.asarray(ak.to_numpy(inputs["genWeight"]), dtype=np.float64)[ev_idx[sel]]
        else:
            w = np.ones(int(sel.sum()))
        if label is not None:
            y = np.full(int(sel.sum()), int(label), dtype=np.int64)
        elif "truth_label" in inputs:
            y = _flat(inputs["truth_label"], np.int64)[sel]
        else:
            y = np.full(int(sel.sum()), -1, dtype=np.int64)
        X_raw, X, n_const = self._features(inputs, n_jets, sel)
        out = {
            "X_raw": X_raw,
            "X": X,
            "pt": pt[sel],
            "eta": eta[sel],
            "phi": phi[sel],
            "mass": mass[sel],
            "event": event,
            "run": run,
            "luminosityBlock": lumi,
            "jet_index": jet_index,
            "y": y,
            "w": w,
            "n_constituents": n_const,
        }
        values = {
            "pt": out["pt"],
            "eta": out["eta"],
            "abs_eta": np.abs(out["eta"]),
            "phi": out["phi"],
            "mass": out["mass"],
        }
        for name, cut in self.regions.items():
            out[f"region_{name}"] = cut.mask(values)
        cols = self.output_columns()
        return {k: np.asarray(out[k], dtype=cols[k][0]) for k in cols}

    def _context(self, events: Any) -> dict[str, Any]:
        meta = dict(events.metadata or {})
        label = self.label if self.label is not None else meta.get("label")
        if self.is_data is not None:
            is_data = bool(self.is_data)
        elif meta.get("is_data") is not None:
            is_data = bool(meta["is_data"])
        else:
            is_data = "genWeight" not in events.fields
        return {
            "label": None if label is None else int(label),
            "is_data": is_data,
            "dataset": str(meta.get("dataset", "")),
            "filename": str(meta.get("filename", "")),
            "entrystart": int(meta.get("entrystart", 0) or 0),
        }

    def process(self, events: Any) -> dict[str, Any]:
        """coffea entry point (virtual/eager or dask events)."""
        ctx = self._context(events)
        inputs = self.gather(events, is_data=ctx["is_data"], label=ctx["label"])
        kernel_ctx = {"label": ctx["label"], "is_data": ctx["is_data"]}
        if _is_dask(events):
            import dask_awkward as dak

            kernel = _Kernel(self, list(inputs), kernel_ctx)
            jets = dak.map_partitions(kernel, *inputs.values(), label="advsyst-jet-features")
            return {"jets": jets}
        out = self.compute(inputs, **kernel_ctx)
        return {"chunks": {(ctx["dataset"], ctx["filename"], ctx["entrystart"]): out}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator

    def __call__(self, events: Any) -> dict[str, np.ndarray]:
        """Feature-builder interface (see :mod:`advsyst.processors.builders`): the
        per-jet arrays of one chunk of eager events."""
        if _is_dask(events):
            raise TypeError("call the builder on eager (virtual-mode) events; use process()")
        ctx = self._context(events)
        inputs = self.gather(events, is_data=ctx["is_data"], label=ctx["label"])
        return self.compute(inputs, label=ctx["label"], is_data=ctx["is_data"])


class JetConstituentProcessor(_JetProcessorBase):
    """PFNano: first ``n_constituents`` constituents per jet, raw and TopoDNN-style.

    Parameters
    ----------
    jet_collection : str
        ``"FatJet"`` (large-R) or ``"Jet"`` (AK4), or any collection with constituents.
    jet_min_pt, jet_max_abs_eta : float
        Jet selection (GeV).
    require_truth_match : bool
        Keep only simulated jets whose ``truthMatch`` branch is > 0 (the jet contains a
        full hadronic top or W decay); ignored for data.
    label : int, optional
        Label of every jet (overrides fileset metadata ``"label"``).
    truth_label_branch : str, optional
        Jet branch to read labels from when neither ``label`` nor metadata gives one.
        Default None: real NanoAOD has no such branch, so labels come from the fileset
        metadata; ``"truthLabel"`` reads the branch ``advsyst generate`` writes.
    is_data : bool, optional
        Force data/simulation; default from metadata, else from ``genWeight``'s absence.
    regions : mapping of str to RegionCut, optional
        Region flags to compute (default :data:`DEFAULT_REGIONS`).
    n_constituents : int
        Constituents kept (30).
    pt_scale : "jet" or float
        TopoDNN pT scaling.
    puppi_weight : {"auto", True, False}
        Multiply each constituent's pT by its ``puppiWeight`` (PUPPI jets, as CMS taggers
        see them).  ``"auto"`` (default): when the candidates carry ``puppiWeight``
        (PFNano ``PFCands_puppiWeight``, NanoAOD v15 ``PFCand_puppiWeight``), else plain
        pT; True: require the branch (MissingBranchError when absent); False: never.
    """

    def __init__(
        self,
        jet_collection: str = "FatJet",
        *,
        n_constituents: int = N_CONSTITUENTS,
        pt_scale: str | float = "jet",
        puppi_weight: str | bool = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(jet_collection, **kwargs)
        self.n_constituents = int(n_constituents)
        self.pt_scale = pt_scale
        if puppi_weight not in ("auto", True, False):
            raise ValueError(f"puppi_weight must be 'auto', True or False, got {puppi_weight!r}")
        self.puppi_weight = puppi_weight

    @property
    def feature_names(self) -> list[str]:
        return topodnn_feature_names(self.n_constituents)

    @property
    def raw_feature_names(self) -> list[str]:
        return raw_feature_names(self.n_constituents)

    def _gather_specific(self, events: Any, fields: Mapping[str, Collection[str]]) -> dict:
        layout = detect_layout(fields, self.jet_collection)
        assoc = events[layout.association]
        out = {"assoc_jet": assoc[layout.jet_index]}
        if layout.candidate_index is not None:
            out["assoc_cand"] = assoc[layout.candidate_index]
        cands = events[layout.candidates]
        for v in _KINEMATICS:
            out[f"cand_{v}"] = cands[v]
        has_puppi = "puppiWeight" in fields.get(layout.candidates, ())
        if self.puppi_weight is True and not has_puppi:
            raise MissingBranchError(
                f"puppi_weight=True needs {layout.candidates}_puppiWeight, absent here"
            )
        if self.puppi_weight is not False and has_puppi:
            out["cand_puppiWeight"] = cands["puppiWeight"]
        return out

    def _features(self, inputs: Mapping[str, Any], n_jets: np.ndarray, sel: np.ndarray):
        fields = [inputs["cand_pt"], inputs["cand_eta"], inputs["cand_phi"]]
        if "cand_puppiWeight" in inputs:
            fields.append(inputs["cand_puppiWeight"])
        counts, values = constituents_from_index(
            n_jets, inputs["assoc_jet"], inputs.get("assoc_cand"), fields
        )
        cpt, ceta, cphi = values[:3]
        if len(values) == 4:  # PUPPI: the constituent pT the jet algorithm used
            cpt = cpt * values[3]
        # keep the constituents of selected jets only
        owner_sel = np.repeat(sel, counts)
        c_sel = counts[sel]
        jagged = [ak.unflatten(v[owner_sel], c_sel) for v in (cpt, ceta, cphi)]
        n = self.n_constituents
        padded, n_valid = pad_constituents(*jagged, n=n)
        X_raw = padded.reshape(padded.shape[0], 3 * n)
        pt = _flat(inputs["jet_pt"])[sel]
        eta = _flat(inputs["jet_eta"])[sel]
        phi = _flat(inputs["jet_phi"])[sel]
        full = topodnn_transform(padded, n_valid, pt, eta, phi, pt_scale=self.pt_scale)
        full = full.reshape(full.shape[0], 3 * n)
        keep = [i for i, nm in enumerate(raw_feature_names(n)) if nm in set(self.feature_names)]
        return X_raw, full[:, keep], c_sel


class JetVariablesProcessor(_JetProcessorBase):
    """Plain NanoAOD: jet kinematics and tagger-relevant jet variables per selected jet.

    Parameters
    ----------
    jet_collection : str
        ``"Jet"`` or ``"FatJet"``.
    variables : sequence of str, optional
        Jet variables (without the collection prefix).  Default: the entries of
        :data:`DEFAULT_JET_VARIABLES` present in the events.  Explicitly requested
        variables that are missing raise :class:`MissingBranchError`.  ``tau21`` and
        ``tau32`` are added when their inputs are selected.
    **kwargs
        Selection, labels and regions as for :class:`JetConstituentProcessor`.
    """

    def __init__(
        self,
        jet_collection: str = "FatJet",
        *,
        variables: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(jet_collection, **kwargs)
        self.variables = None if variables is None else tuple(variables)

    def resolve_variables(self, available: Collection[str]) -> tuple[str, ...]:
        """The variables used for a collection with fields ``available``."""
        if self.variables is not None:
            missing = [v for v in self.variables if v not in available and v not in _DERIVED]
            if missing:
                raise MissingBranchError(
                    f"jet variables {[f'{self.jet_collection}_{m}' for m in missing]} are absent"
                )
            base = tuple(v for v in self.variables if v not in _DERIVED)
            derived = tuple(v for v in self.variables if v in _DERIVED)
        else:
            defaults = DEFAULT_JET_VARIABLES.get(self.jet_collection, DEFAULT_JET_VARIABLES["Jet"])
            base = tuple(v for v in defaults if v in available)
            derived = tuple(d for d, (a, b) in _DERIVED.items() if a in base and b in base)
        return (*base, *derived)

    @property
    def feature_names(self) -> list[str]:
        if self.variables is None:
            raise RuntimeError("call resolve_variables first or pass variables=...")
        return list(self.variables)

    def for_fields(self, available: Collection[str]) -> JetVariablesProcessor:
        """A copy with the variable list fixed for a collection with these fields."""
        clone = JetVariablesProcessor.__new__(JetVariablesProcessor)
        clone.__dict__.update(self.__dict__)
        clone.variables = self.resolve_variables(available)
        return clone

    def process(self, events: Any) -> dict[str, Any]:
        if self.variables is None:
            fields = self._fields(events)
            if self.jet_collection not in fields:
                raise MissingBranchError(f"no jet collection {self.jet_collection!r}")
            return self.for_fields(fields[self.jet_collection]).process(events)
        return super().process(events)

    def _gather_specific(self, events: Any, fields: Mapping[str, Collection[str]]) -> dict:
        variables = self.resolve_variables(fields[self.jet_collection])
        jets = events[self.jet_collection]
        return {f"var_{v}": jets[v] for v in variables if v not in _DERIVED}

    def _features(self, inputs: Mapping[str, Any], n_jets: np.ndarray, sel: np.ndarray):
        cols = {}
        for v in self.feature_names:
            if v in _DERIVED:
                num, den = (cols[d] for d in _DERIVED[v])
                cols[v] = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
            else:
                cols[v] = _flat(inputs[f"var_{v}"])[sel]
        n = int(sel.sum())
        X = np.column_stack([cols[v] for v in self.feature_names]) if cols else np.zeros((n, 0))
        n_const = (
            cols["nConstituents"].astype(np.int64)
            if "nConstituents" in cols
            else np.zeros(n, dtype=np.int64)
        )
        return np.zeros((n, 0)), X.reshape(n, len(self.feature_names)), n_const
