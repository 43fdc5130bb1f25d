"""Writing NanoAOD/PFNano-layout ROOT files (TTree ``Events``) with uproot.

Layout written for generated samples (types as in CMS NanoAOD where it has them):

==========================  ===========  ===================================================
branch                      type         meaning
==========================  ===========  ===================================================
``run``                     uint32       1 for simulation, 190000+ for pseudo-data
``luminosityBlock``         uint32       1 + event index // 500
``event``                   uint64       1-based event number
``genWeight``               float32      generator weight (simulation only)
``nPFCands``, ``PFCands_*`` float32/i32  ``pt eta phi mass charge pdgId`` of every candidate
                                         that belongs to a stored AK4 or large-R jet
``nJet``, ``Jet_*``         float32      ``pt eta phi mass`` (constituent sum),
                                         ``nConstituents`` (uint8), energy fractions
                                         ``chHEF neHEF chEmEF neEmEF muEF``; simulation adds
                                         ``truthLabel`` (1 tt̄, 0 WW, 2 QCD) and
                                         ``truthMatch`` (2 contains a hadronic top, 1 a
                                         hadronic W, 0 neither)
``nJetPFCands``,            int32        ``jetIdx``, ``pFCandsIdx``: contiguous per jet, jets
``JetPFCands_*``                         in order, ``Jet_nConstituents`` rows per jet
``nFatJet``, ``FatJet_*``   float32      as ``Jet`` plus ``msoftdrop tau1 tau2 tau3``;
                                         ``nConstituents`` is int16 (large-R jets can exceed
                                         255 constituents)
``nFatJetPFCands``,         int32        as ``JetPFCands`` for ``FatJet``
``FatJetPFCands_*``
==========================  ===========  ===================================================

A second tree, ``Runs``, has one entry per run as in CMS NanoAOD: ``run`` (uint32) and,
for simulation, ``genEventCount`` (int64, events), ``genEventSumw`` and ``genEventSumw2``
(float64, sum of ``genWeight`` and of its square) — what an analysis normalises with
(``xsec * lumi / sum(genEventSumw)``).

A JSON provenance record is stored next to the tree as a ``TObjString`` named
``advsyst_provenance``; coffea and uproot ignore it when reading ``Events``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import awkward as ak
import numpy as np

from advsyst._io import atomic_path, to_jsonable

__all__ = [
    "EventBlock",
    "PFNanoWriter",
    "write_nano_tree",
    "read_provenance",
    "PROVENANCE_KEY",
    "EVENT_BRANCHES",
    "COLLECTION_BRANCHES",
    "TRUTH_BRANCHES",
    "RUNS_BRANCHES",
]

PROVENANCE_KEY = "advsyst_provenance"

EVENT_BRANCHES: dict[str, str] = {
    "run": "uint32",
    "luminosityBlock": "uint32",
    "event": "uint64",
    "genWeight": "float32",
}
_KIN = {"pt": "float32", "eta": "float32", "phi": "float32", "mass": "float32"}
_FRACTIONS = {k: "float32" for k in ("chHEF", "neHEF", "chEmEF", "neEmEF", "muEF")}
COLLECTION_BRANCHES: dict[str, dict[str, str]] = {
    "PFCands": {**_KIN, "charge": "int32", "pdgId": "int32"},
    "Jet": {**_KIN, "nConstituents": "uint8", **_FRACTIONS},
    "JetPFCands": {"jetIdx": "int32", "pFCandsIdx": "int32"},
    "FatJet": {
        **_KIN,
        "msoftdrop": "float32",
        "tau1": "float32",
        "tau2": "float32",
        "tau3": "float32",
        "nConstituents": "int16",
        **_FRACTIONS,
    },
    "FatJetPFCands": {"jetIdx": "int32", "pFCandsIdx": "int32"},
}
#: Branches of the ``Runs`` tree (simulation; collision data has ``run`` only).
RUNS_BRANCHES: dict[str, str] = {
    "run": "uint32",
    "genEventCount": "int64",
    "genEventSumw": "float64",
    "genEventSumw2": "float64",
}
#: Branches only simulation carries.
TRUTH_BRANCHES: dict[str, dict[str, str]] = {
    "Jet": {"truthLabel": "int32", "truthMatch": "int32"},
    "FatJet": {"truthLabel": "int32", "truthMatch": "int32"},
}


@dataclass
class EventBlock:
    """A block of events ready to be written.

    ``event`` maps event-level branch names to arrays of length ``n_events``;
    ``collections`` maps a collection name to ``(counts, {field: flat array})``.
    """

    n_events: int
    event: dict[str, np.ndarray]
    collections: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)

    @staticmethod
    def concatenate(blocks: list[EventBlock]) -> EventBlock:
        first = blocks[0]
        return EventBlock(
            n_events=sum(b.n_events for b in blocks),
            event={k: np.concatenate([b.event[k] for b in blocks]) for k in first.event},
            collections={
                name: (
                    np.concatenate([b.collections[name][0] for b in blocks]),
                    {
                        f: np.concatenate([b.collections[name][1][f] for b in blocks])
                        for f in first.collections[name][1]
                    },
                )
                for name in first.collections
            },
        )


def _as_tree_arrays(
    event: Mapping[str, np.ndarray],
    collections: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
    types: Mapping[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, arr in event.items():
        out[name] = np.asarray(arr, dtype=types[name])
    for name, (counts, fields) in collections.items():
        ftypes = types[name]
        rec = ak.zip({f: np.asarray(fields[f], dtype=ftypes[f]) for f in ftypes}, depth_limit=1)
        out[name] = ak.unflatten(rec, np.asarray(counts, dtype=np.int64))
    return out


def _branch_types(arrays: Mapping[str, Any]) -> dict[str, Any]:
    types: dict[str, Any] = {}
    for name, arr in arrays.items():
        if isinstance(arr, ak.Array):
            types[name] = arr.type.content
        else:
            types[name] = np.asarray(arr).dtype
    return types


def write_nano_tree(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Any],
    *,
    tree: str = "Events",
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write a NanoAOD-style TTree atomically (jagged records get ``n<Name>`` counters).

    Parameters
    ----------
    path : path-like
        Output ROOT file.
    arrays : mapping
        Branch name -> NumPy array (flat branch) or awkward array of records
        ``var * {field: ...}`` (written as ``n<name>`` plus ``<name>_<field>``) or of
        numbers ``var * number`` (written as ``n<name>`` plus ``<name>``).
    tree : str
        Tree name.
    extra : mapping, optional
        Strings stored as ``TObjString`` objects next to the tree.

    Returns
    -------
    Path
        ``path``.
    """
    import uproot

    with atomic_path(path) as tmp:
        with uproot.recreate(tmp) as f:
            t = f.mktree(
                tree,
                _branch_types(arrays),
                counter_name=lambda c: f"n{c}",
                field_name=lambda outer, inner: f"{outer}_{inner}",
                title=tree,
            )
            t.extend(dict(arrays))
            for key, text in (extra or {}).items():
                f[key] = str(text)
    return Path(path)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record stored in a generated file (``None`` if absent)."""
    import uproot

    with uproot.open(path) as f:
        if PROVENANCE_KEY not in f:
            return None
        return json.loads(str(f[PROVENANCE_KEY]))


class PFNanoWriter:
    """Stream :class:`EventBlock` objects into a PFNano-layout ROOT file, atomically.

    Blocks are buffered and written in baskets of about ``flush_events`` events.  The
    file appears at ``path`` only when the ``with`` block exits without error.

    Parameters
    ----------
    path : path-like
        Output file.
    is_data : bool
        Pseudo-data: no ``genWeight`` and no truth branches.
    provenance : mapping, optional
        Stored as JSON in the ``advsyst_provenance`` TObjString.
    flush_events : int
        Events per basket.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        is_data: bool,
        provenance: Mapping[str, Any] | None = None,
        flush_events: int = 2000,
    ) -> None:
        self.path = Path(path)
        self.is_data = is_data
        self.provenance = dict(provenance or {})
        self.flush_events = int(flush_events)
        self.n_written = 0
        self._buffer: list[EventBlock] = []
        self._runs: dict[int, list[float]] = {}  # run -> [count, sumw, sumw2]
        self._stack: contextlib.ExitStack | None = None
        self._file: Any = None
        self._tree: Any = None
        self._types: dict[str, Any] = {}
        for name, ftypes in COLLECTION_BRANCHES.items():
            self._types[name] = dict(ftypes)
            if not is_data and name in TRUTH_BRANCHES:
                self._types[name].update(TRUTH_BRANCHES[name])
        for name, t in EVENT_BRANCHES.items():
            if is_data and name == "genWeight":
                continue
            self._types[name] = t

    def __enter__(self) -> PFNanoWriter:
        import uproot

        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._file = uproot.recreate(tmp)
        empty = EventBlock(
            n_events=0,
            event={k: np.zeros(0) for k in EVENT_BRANCHES if k in self._types},
            collections={
                name: (np.zeros(0, np.int64), {f: np.zeros(0) for f in self._types[name]})
                for name in COLLECTION_BRANCHES
            },
        )
        arrays = _as_tree_arrays(empty.event, empty.collections, self._types)
        self._tree = self._file.mktree(
            "Events",
            _branch_types(arrays),
            counter_name=lambda c: f"n{c}",
            field_name=lambda outer, inner: f"{outer}_{inner}",
            title="Events",
        )
        return self

    def write(self, block: EventBlock) -> None:
        """Queue a block (written when the buffer reaches ``flush_events`` events)."""
        expected = {k for k in self._types if k in EVENT_BRANCHES}
        if set(block.event) != expected:
            raise ValueError(f"event branches {sorted(block.event)} != {sorted(expected)}")
        self._buffer.append(block)
        runs = np.asarray(block.event["run"], dtype=np.int64)
        gw = block.event.get("genWeight")
        gw = np.ones(len(runs)) if gw is None else np.asarray(gw, dtype=np.float64)
        # genEventSumw of the float32 weights actually stored, in float64 like CMSSW
        gw = gw.astype(np.float32).astype(np.float64)
        for r in np.unique(runs):
            m = runs == r
            acc = self._runs.setdefault(int(r), [0, 0.0, 0.0])
            acc[0] += int(m.sum())
            acc[1] += float(gw[m].sum())
            acc[2] += float((gw[m] ** 2).sum())
        if sum(b.n_events for b in self._buffer) >= self.flush_events:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        block = EventBlock.concatenate(self._buffer)
        self._buffer = []
        if block.n_events == 0:
            return
        self._tree.extend(_as_tree_arrays(block.event, block.collections, self._types))
        self.n_written += block.n_events

    def _write_runs(self) -> None:
        runs = sorted(self._runs)
        arrays: dict[str, np.ndarray] = {"run": np.array(runs, dtype=np.uint32)}
        if not self.is_data:
            arrays["genEventCount"] = np.array([self._runs[r][0] for r in runs], np.int64)
            arrays["genEventSumw"] = np.array([self._runs[r][1] for r in runs], np.float64)
            arrays["genEventSumw2"] = np.array([self._runs[r][2] for r in runs], np.float64)
        tree = self._file.mktree("Runs", {k: a.dtype for k, a in arrays.items()}, title="Runs")
        tree.extend(arrays)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        if exc_type is None:
            try:
                self._flush()
                self._write_runs()
                self.provenance.setdefault("n_events", self.n_written)
                self._file[PROVENANCE_KEY] = json.dumps(to_jsonable(self.provenance))
            except BaseException as err:
                self._file.close()
                self._stack.__exit__(type(err), err, err.__traceback__)
                raise
        self._file.close()
        self._stack.__exit__(exc_type, exc, tb)
