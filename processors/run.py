"""Run the jet processors over a fileset and return merged NumPy arrays.

:func:`extract_features` is the one entry point: it checks every file first (readable,
has the tree, has the branches the processor needs), then runs the processor with

* ``executor="iterative"``: ``processor.Runner`` + ``IterativeExecutor`` (virtual mode);
* ``executor="futures"``:   ``processor.Runner`` + ``FuturesExecutor`` (``workers`` processes);
* ``executor="dask"``:      ``coffea.dataset_tools.preprocess`` + ``apply_to_fileset`` and
  ``dask.compute`` (``workers`` threads),

and concatenates the per-jet arrays in fileset order (datasets, then files, then entries),
so every executor returns identical arrays.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from advsyst.processors.jet_features import (
    JetConstituentProcessor,
    JetVariablesProcessor,
    _JetProcessorBase,
    collections_from_branches,
    detect_layout,
)
from coffea.nanoevents import NanoAODSchema, PFNanoAODSchema

from advsyst.errors import AdvsystError, ConfigError, InputError, UnreadableFileError

__all__ = [
    "extract_features",
    "extract_with_builder",
    "make_executor",
    "apply_processor_dask",
    "normalize_fileset",
    "check_files",
    "make_processor",
    "FileReport",
    "QuietPFNanoAODSchema",
    "QuietNanoAODSchema",
    "DEFAULT_JET_MIN_PT",
    "EXECUTORS",
]

log = logging.getLogger(__name__)

EXECUTORS = ("iterative", "futures", "dask")
#: Default jet pT threshold (GeV) per collection; other collections use ``Jet``'s.
DEFAULT_JET_MIN_PT = {"Jet": 30.0, "FatJet": 200.0}


class QuietPFNanoAODSchema(PFNanoAODSchema):
    """``PFNanoAODSchema`` without warnings about cross-references a file lacks."""

    warn_missing_crossrefs = False


class QuietNanoAODSchema(NanoAODSchema):
    """``NanoAODSchema`` without warnings about cross-references a file lacks."""

    warn_missing_crossrefs = False


_SCHEMAS = {
    "pfnano": (PFNanoAODSchema, QuietPFNanoAODSchema),
    "nanoaod": (NanoAODSchema, QuietNanoAODSchema),
}


@dataclass
class FileReport:
    """What :func:`check_files` found."""

    fileset: dict[str, dict[str, Any]]
    branches: dict[str, set[str]] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def normalize_fileset(
    fileset: Mapping[str, Any] | Sequence[str | os.PathLike[str]], treename: str = "Events"
) -> dict[str, dict[str, Any]]:
    """Bring a fileset into coffea's ``{dataset: {"files": {path: tree}, "metadata": {}}}``.

    Accepted: ``{dataset: [paths]}``, ``{dataset: path}``, ``{dataset: {"files": [paths] or
    {path: tree}, "metadata": {...}}}`` or a plain list of paths (one dataset per file,
    named after the file).
    """
    if isinstance(fileset, (str, os.PathLike)):
        fileset = [fileset]
    if not isinstance(fileset, Mapping):
        fileset = {Path(p).stem: [p] for p in fileset}
    out: dict[str, dict[str, Any]] = {}
    for name, spec in fileset.items():
        meta: dict[str, Any] = {}
        tree = treename
        if isinstance(spec, Mapping):
            files = spec.get("files")
            meta = dict(spec.get("metadata") or {})
            tree = spec.get("treename", treename)
        else:
            files = spec
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        if files is None:
            raise InputError(f"dataset {name!r} has no files")
        if isinstance(files, Mapping):
            fmap = {str(k): (v if isinstance(v, str) else tree) for k, v in files.items()}
        else:
            fmap = {str(f): tree for f in files}
        if not fmap:
            raise InputError(f"dataset {name!r} has no files")
        out[str(name)] = {"files": fmap, "metadata": meta}
    if not out:
        raise InputError("empty fileset")
    return out


def check_files(
    fileset: Mapping[str, Mapping[str, Any]],
    *,
    skip_bad_files: bool = False,
    uproot_options: Mapping[str, Any] | None = None,
) -> FileReport:
    """Open every file; drop unreadable (when skipping) and empty ones.

    Raises
    ------
    UnreadableFileError
        A file cannot be opened or lacks its tree, and ``skip_bad_files`` is False.
    """
    import uproot

    report = FileReport(fileset={})
    for name, spec in fileset.items():
        files: dict[str, str] = {}
        for path, tree in spec["files"].items():
            try:
                with uproot.open(path, **dict(uproot_options or {})) as f:
                    if tree not in f:
                        raise KeyError(f"no tree {tree!r} (keys: {f.keys()[:10]})")
                    t = f[tree]
                    n = int(t.num_entries)
                    branches = set(t.keys(recursive=True))
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if not skip_bad_files:
                    raise UnreadableFileError(f"{path}: cannot read ({reason})") from exc
                warnings.warn(
                    f"skipping unreadable file {path}: {reason}", RuntimeWarning, stacklevel=2
                )
                log.warning("skipping unreadable file %s: %s", path, reason)
                report.skipped.append((name, path, reason))
                continue
            report.branches[path] = branches
            report.entries[path] = n
            if n == 0:
                log.info("file %s has no events", path)
                continue
            files[path] = tree
        report.fileset[name] = {"files": files, "metadata": dict(spec.get("metadata") or {})}
    return report


def make_processor(
    schema: str = "pfnano",
    jet_collection: str = "Jet",
    *,
    jet_min_pt: float | None = None,
    **options: Any,
) -> _JetProcessorBase:
    """The processor for a schema: constituents (``pfnano``) or jet variables (``nanoaod``)."""
    if schema not in _SCHEMAS:
        raise ConfigError(f"schema must be one of {sorted(_SCHEMAS)}, got {schema!r}")
    if jet_min_pt is None:
        jet_min_pt = DEFAULT_JET_MIN_PT.get(jet_collection, DEFAULT_JET_MIN_PT["Jet"])
    cls = JetConstituentProcessor if schema == "pfnano" else JetVariablesProcessor
    return cls(jet_collection, jet_min_pt=jet_min_pt, **options)


def _preflight(proc: _JetProcessorBase, report: FileReport) -> _JetProcessorBase:
    """Check each file has what the processor needs; fix nanoaod variables across files."""
    from advsyst.errors import MissingBranchError

    paths = [p for spec in report.fileset.values() for p in spec["files"]]
    jc = proc.jet_collection
    fields_per_file = {p: collections_from_branches(report.branches[p]) for p in paths}
    for p, fields in fields_per_file.items():
        try:
            if isinstance(proc, JetConstituentProcessor):
                detect_layout(fields, jc)
            elif jc not in fields or not {"pt", "eta", "phi", "mass"} <= fields[jc]:
                raise MissingBranchError(f"no jet collection {jc!r} with pt/eta/phi/mass")
            if proc.require_truth_match and "genWeight" in report.branches[p]:
                if proc.truth_match_branch not in fields.get(jc, ()):
                    raise MissingBranchError(
                        f"require_truth_match needs {jc}_{proc.truth_match_branch}"
                    )
        except MissingBranchError as exc:
            raise MissingBranchError(f"{p}: {exc}") from exc
    if isinstance(proc, JetVariablesProcessor):
        if paths:
            common = set.intersection(*(set(fields_per_file[p].get(jc, ())) for p in paths))
        else:
            common = {"pt", "eta", "phi", "mass"}
        try:
            proc = proc.for_fields(common)
        except MissingBranchError as exc:
            raise MissingBranchError(f"not in every file: {exc}") from exc
    return proc


def _merge(
    order: list[tuple[str, list[str]]],
    chunks: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]],
    proc: _JetProcessorBase,
) -> dict[str, np.ndarray]:
    file_rank = {(ds, f): i for ds, files in order for i, f in enumerate(files)}
    ds_rank = {ds: i for i, (ds, _) in enumerate(order)}
    keys = sorted(chunks, key=lambda k: (ds_rank[k[0]], file_rank[(k[0], k[1])], k[2]))
    parts = [(k[0], chunks[k]) for k in keys]
    return _concat(parts, proc)


def _concat(
    parts: Sequence[tuple[str, Mapping[str, np.ndarray]]], proc: _JetProcessorBase
) -> dict[str, np.ndarray]:
    cols = proc.output_columns()
    out: dict[str, np.ndarray] = {}
    for k, (dt, width) in cols.items():
        arrays = [np.asarray(p[k], dtype=dt) for _, p in parts]
        empty = np.zeros((0,) if width is None else (0, width), dtype=dt)
        out[k] = np.concatenate([empty, *arrays]) if arrays else empty
    out["dataset"] = np.array(
        [ds for ds, p in parts for _ in range(len(p["pt"]))], dtype=str
    ).reshape(-1)
    if out["dataset"].size == 0:
        out["dataset"] = np.zeros(0, dtype="<U1")
    return out


def _unwrap(exc: BaseException) -> BaseException | None:
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, AdvsystError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def make_executor(
    executor: str,
    *,
    workers: int = 1,
    client: Any = None,
    progress: bool = False,
    desc: str = "Processing",
) -> Any:
    """coffea executor for ``"iterative"``, ``"futures"`` or ``"dask"`` (``DaskExecutor``
    on ``client``, which must be given), with or without progress bars."""
    from coffea import processor

    if executor == "iterative":
        return processor.IterativeExecutor(status=bool(progress), desc=desc)
    if executor == "futures":
        return processor.FuturesExecutor(
            workers=max(1, int(workers)), status=bool(progress), desc=desc
        )
    if executor == "dask":
        if client is None:
            raise ConfigError("executor 'dask' needs a distributed.Client")
        return processor.DaskExecutor(client=client, status=bool(progress), desc=desc)
    raise ConfigError(f"executor must be one of {EXECUTORS}, got {executor!r}")


def _run_runner(
    fileset: dict[str, dict[str, Any]],
    proc: _JetProcessorBase,
    schema_cls: type,
    *,
    executor: str,
    chunksize: int,
    workers: int,
    progress: bool = False,
    **runner_options: Any,
) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    ex = make_executor(executor, workers=workers, progress=progress, desc="pass 1")
    out = run_with_runner(fileset, proc, schema_cls, ex, chunksize=chunksize, **runner_options)
    return dict((out or {}).get("chunks", {}))


def run_with_runner(
    fileset: dict[str, dict[str, Any]],
    processor_instance: Any,
    schema_cls: type,
    executor: Any,
    *,
    chunksize: int,
    skipbadfiles: bool = False,
    maxchunks: int | None = None,
    checkpointer: Any = None,
) -> Any:
    """Run ``processor_instance`` with ``coffea.processor.Runner`` on ``executor``.

    A fresh metadata cache is used on every call (coffea's shared default would hand back
    the user metadata, e.g. labels, of an earlier run over the same dataset name and file),
    and an advsyst error raised inside a chunk is re-raised as itself, not wrapped.
    ``skipbadfiles``, ``maxchunks`` and ``checkpointer`` (a
    ``coffea.processor.checkpointer.CheckpointerABC``) go to the Runner.
    """
    from coffea import processor

    runner = processor.Runner(
        executor=executor,
        schema=schema_cls,
        chunksize=int(chunksize),
        skipbadfiles=bool(skipbadfiles),
        maxchunks=None if maxchunks is None else int(maxchunks),
        checkpointer=checkpointer,
        metadata_cache={},
    )
    try:
        return runner(fileset, processor_instance=processor_instance)
    except Exception as exc:
        inner = _unwrap(exc)
        if inner is not None:
            raise inner from exc
        raise


def apply_processor_dask(
    fileset: dict[str, dict[str, Any]],
    processor_instance: Any,
    schema_cls: type,
    *,
    chunksize: int,
    workers: int = 1,
    scheduler: Any = None,
    uproot_options: Mapping[str, Any] | None = None,
    maxchunks: int | None = None,
    skip_bad_files: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run a processor in coffea's dask mode and compute it: ``preprocess`` (steps of
    ``chunksize`` entries) + ``apply_to_fileset`` + ``dask.compute``.

    ``scheduler``: a ``distributed.Client`` (its cluster) or a dask scheduler name;
    default local threads (``workers``), sync for one worker.  Returns
    ``{dataset: computed output}``.  ``progress``: dask's progress bar on local
    schedulers (a ``distributed`` cluster has its dashboard).
    """
    import dask
    from coffea.dataset_tools import apply_to_fileset, preprocess

    spec = {
        ds: {
            "files": {p: {"object_path": t} for p, t in v["files"].items()},
            "metadata": v["metadata"],
        }
        for ds, v in fileset.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        available, _ = preprocess(
            spec,
            step_size=int(chunksize),
            skip_bad_files=bool(skip_bad_files),
            preprocess_legacy_root=True,
            uproot_options=dict(uproot_options or {}),
        )
    # preprocess may drop the metadata of legacy dicts; restore it
    for ds in available:
        available[ds]["metadata"] = dict(fileset[ds]["metadata"])
    if maxchunks is not None:
        from coffea.dataset_tools import max_chunks

        available = max_chunks(available, int(maxchunks))
    outputs = apply_to_fileset(
        processor_instance,
        available,
        schemaclass=schema_cls,
        uproot_options=dict(uproot_options or {}),
    )
    if scheduler is None:  # local threads; a distributed.Client runs on its cluster
        scheduler = "sync" if int(workers) <= 1 else "threads"
    kw = {"num_workers": max(1, int(workers))} if isinstance(scheduler, str) else {}
    if progress and isinstance(scheduler, str):
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            (computed,) = dask.compute(outputs, scheduler=scheduler, **kw)
    else:  # on a distributed.Client its dashboard shows the progress
        (computed,) = dask.compute(outputs, scheduler=scheduler, **kw)
    return dict(computed)


def _run_dask(
    fileset: dict[str, dict[str, Any]],
    proc: _JetProcessorBase,
    schema_cls: type,
    **options: Any,
) -> dict[str, dict[str, np.ndarray]]:
    import awkward as ak

    computed = apply_processor_dask(fileset, proc, schema_cls, **options)
    result = {}
    for ds, out in computed.items():
        jets = out["jets"]
        result[ds] = {f: np.asarray(ak.to_numpy(jets[f])) for f in ak.fields(jets)}
    return result


def extract_features(
    fileset: Mapping[str, Any] | Sequence[str | os.PathLike[str]],
    *,
    schema: str = "pfnano",
    jet_collection: str = "Jet",
    jet_min_pt: float | None = None,
    executor: str = "iterative",
    chunksize: int = 50_000,
    workers: int = 1,
    skip_bad_files: bool = False,
    quiet_schema: bool = True,
    treename: str = "Events",
    scheduler: Any = None,
    progress: bool = False,
    maxchunks: int | None = None,
    checkpointer: Any = None,
    uproot_options: Mapping[str, Any] | None = None,
    **processor_options: Any,
) -> dict[str, np.ndarray]:
    """Per-jet features of every selected jet in a fileset.

    Parameters
    ----------
    fileset : mapping or sequence of paths
        ``{dataset: {"files": {path: "Events"}, "metadata": {"label": 0|1|None,
        "is_data": bool}}}``, ``{dataset: [paths]}`` or a list of paths.
    schema : {"pfnano", "nanoaod"}
        ``pfnano``: constituents -> raw and TopoDNN features (:class:`JetConstituentProcessor`);
        ``nanoaod``: jet-level variables (:class:`JetVariablesProcessor`).
    jet_collection : str
        ``"Jet"`` or ``"FatJet"``.
    jet_min_pt : float, optional
        Jet pT threshold in GeV (default :data:`DEFAULT_JET_MIN_PT`).
    executor : {"iterative", "futures", "dask"}
        How to run (see the module docstring); all give identical arrays.
    chunksize : int
        Events per chunk / dask partition.
    workers : int
        Processes (futures) or threads (dask).
    skip_bad_files : bool
        Skip unreadable files with a warning (listed in ``skipped_files``) instead of
        raising :class:`~advsyst.errors.UnreadableFileError`.
    quiet_schema : bool
        Silence the schema's warnings about cross-references absent from the files.
    scheduler : str or distributed.Client, optional
        ``executor="dask"`` only: the dask scheduler (e.g. a ``distributed.Client`` to
        run on its cluster); default local threads (``workers``), sync for one worker.
    progress : bool
        coffea's progress bars (iterative/futures executors).
    maxchunks : int, optional
        Process at most this many chunks per dataset (coffea's ``maxchunks``; per file
        in dask mode, ``coffea.dataset_tools.max_chunks``).
    checkpointer : coffea CheckpointerABC, optional
        coffea's chunk checkpointing (iterative/futures executors).
    uproot_options : mapping, optional
        Options for ``uproot.open`` in the file checks and, in dask mode, for
        ``preprocess`` / ``apply_to_fileset`` (coffea's ``Runner`` takes none).
    **processor_options
        ``jet_max_abs_eta``, ``require_truth_match``, ``regions``, ``variables`` (nanoaod),
        ``pt_scale`` / ``n_constituents`` (pfnano), ...

    Returns
    -------
    dict of np.ndarray
        ``X_raw`` (n, 90; (n, 0) in nanoaod mode), ``X``, ``feature_names``,
        ``raw_feature_names``, ``y`` (-1 where unknown), ``w``, ``pt``, ``eta``, ``phi``,
        ``mass``, ``event``, ``run``, ``luminosityBlock`` (0 where the file lacks them),
        ``jet_index`` (the jet's index in its event's full collection, before the
        selection), ``n_constituents``, ``dataset``, ``region_<name>`` flags,
        ``region_names`` and ``skipped_files``.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if int(chunksize) < 1:
        raise ConfigError(f"chunksize must be >= 1, got {chunksize}")
    if schema not in _SCHEMAS:
        raise ConfigError(f"schema must be one of {sorted(_SCHEMAS)}, got {schema!r}")
    norm = normalize_fileset(fileset, treename)
    if checkpointer is not None and executor == "dask":
        raise ConfigError("checkpointer works with the iterative and futures executors only")
    report = check_files(norm, skip_bad_files=skip_bad_files, uproot_options=uproot_options)
    proc = make_processor(schema, jet_collection, jet_min_pt=jet_min_pt, **processor_options)
    proc = _preflight(proc, report)
    schema_cls = _SCHEMAS[schema][1 if quiet_schema else 0]
    live = {ds: v for ds, v in report.fileset.items() if v["files"]}
    order = [(ds, list(v["files"])) for ds, v in live.items()]
    if not live:
        merged = _concat([], proc)
    elif executor == "dask":
        per_ds = _run_dask(
            live,
            proc,
            schema_cls,
            chunksize=chunksize,
            workers=workers,
            scheduler=scheduler,
            uproot_options=uproot_options,
            maxchunks=maxchunks,
            skip_bad_files=skip_bad_files,
            progress=progress,
        )
        merged = _concat([(ds, per_ds[ds]) for ds, _ in order if ds in per_ds], proc)
    else:
        chunks = _run_runner(
            live,
            proc,
            schema_cls,
            executor=executor,
            chunksize=chunksize,
            workers=workers,
            progress=progress,
            skipbadfiles=skip_bad_files,
            maxchunks=maxchunks,
            checkpointer=checkpointer,
        )
        merged = _merge(order, chunks, proc)
    merged["feature_names"] = np.array(proc.feature_names, dtype=str)
    merged["raw_feature_names"] = np.array(proc.raw_feature_names, dtype=str)
    merged["region_names"] = np.array(list(proc.regions), dtype=str)
    merged["skipped_files"] = np.array([p for _, p, _ in report.skipped], dtype=str)
    return merged


def extract_with_builder(
    fileset: Mapping[str, Any] | Sequence[str | os.PathLike[str]],
    builder: Any,
    *,
    schema: str = "nanoaod",
    executor: str = "iterative",
    chunksize: int = 50_000,
    workers: int = 1,
    client: Any = None,
    skip_bad_files: bool = False,
    quiet_schema: bool = True,
    treename: str = "Events",
    progress: bool = False,
    maxchunks: int | None = None,
    checkpointer: Any = None,
    uproot_options: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Per-jet arrays of an analyst's feature builder over a fileset.

    ``builder(events) -> {"X", "run", "luminosityBlock", "event", "jet_index", ...}`` on
    eager (virtual-mode) events; its contract and checks are in
    :mod:`advsyst.processors.builders`.  It runs in ``processor.Runner`` with the
    iterative, futures or (``client`` given) dask executor; chunks are put back in
    fileset order, so every executor returns identical arrays.

    Returns
    -------
    dict of np.ndarray
        The builder's keys (``y`` and ``w`` filled in when absent), ``dataset``,
        ``feature_names`` (the builder's, else ``f0, f1, ...``), ``region_names`` and
        ``skipped_files``.
    """
    from advsyst.processors.builders import BuilderProcessor, concat_builder_chunks

    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "dask" and client is None:
        raise ConfigError("executor 'dask' with a feature builder needs a distributed.Client")
    if int(chunksize) < 1:
        raise ConfigError(f"chunksize must be >= 1, got {chunksize}")
    if schema not in _SCHEMAS:
        raise ConfigError(f"schema must be one of {sorted(_SCHEMAS)}, got {schema!r}")
    proc = builder if isinstance(builder, BuilderProcessor) else BuilderProcessor(builder)
    norm = normalize_fileset(fileset, treename)
    report = check_files(norm, skip_bad_files=skip_bad_files, uproot_options=uproot_options)
    live = {ds: v for ds, v in report.fileset.items() if v["files"]}
    order = [(ds, list(v["files"])) for ds, v in live.items()]
    merged: dict[str, np.ndarray] = {}
    if live:
        ex = make_executor(executor, workers=workers, client=client, progress=progress,
                           desc="pass 1")  # fmt: skip
        out = run_with_runner(
            live,
            proc,
            _SCHEMAS[schema][1 if quiet_schema else 0],
            ex,
            chunksize=chunksize,
            skipbadfiles=skip_bad_files,
            maxchunks=maxchunks,
            checkpointer=checkpointer,
        )
        merged = concat_builder_chunks(order, dict((out or {}).get("chunks", {})), proc.name)
    names = proc.feature_names
    if not merged:
        d = 0 if names is None else len(names)
        merged = {
            "X": np.zeros((0, d)),
            **{k: np.zeros(0, dtype=np.int64) for k in ("run", "luminosityBlock", "jet_index")},
            "event": np.zeros(0, dtype=np.uint64),
            "y": np.zeros(0, dtype=np.int64),
            "w": np.zeros(0),
            "dataset": np.zeros(0, dtype="<U1"),
        }
    d = merged["X"].shape[1]
    merged["feature_names"] = np.array(
        names if names is not None else [f"f{i}" for i in range(d)], dtype=str
    )
    merged["region_names"] = np.array(
        [k[len("region_") :] for k in merged if k.startswith("region_")], dtype=str
    )
    merged["skipped_files"] = np.array([p for _, p, _ in report.skipped], dtype=str)
    return merged
