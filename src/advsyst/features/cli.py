"""``advsyst features``: per-jet features from NanoAOD / PFNano ROOT files into an npz.

Examples::

    advsyst features --input ttbar.root ww.root --label 1 0 --schema pfnano \\
        --jet-collection FatJet --out features.npz
    advsyst features --input data.root --data --schema pfnano --jet-collection FatJet \\
        --out data_features.npz

The npz holds ``X_raw`` (n_jets, 90; pT_1, eta_1, phi_1, pT_2, ... of the pT-sorted,
zero-padded constituents), ``X`` (the model inputs: 87 TopoDNN features in pfnano mode,
jet variables in nanoaod mode), ``feature_names``, ``y`` (-1 where unknown), ``w``, per
jet ``pt eta phi mass event dataset``, region flags and a JSON ``provenance`` string.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from advsyst.errors import InputError

__all__ = ["add_arguments", "run"]


def _label(text: str) -> int | None:
    if text.lower() in ("none", "-1", "unknown"):
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"label must be an integer or 'none', got {text!r}"
        ) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``features`` options to ``parser``."""
    parser.add_argument(
        "--input", nargs="+", required=True, help="ROOT files (local paths or URLs)"
    )
    parser.add_argument(
        "--schema",
        choices=["pfnano", "nanoaod"],
        default="pfnano",
        help="pfnano: constituent features (TopoDNN); nanoaod: jet-level variables",
    )
    parser.add_argument("--jet-collection", default="Jet", help="Jet (AK4) or FatJet (large-R)")
    parser.add_argument(
        "--jet-min-pt",
        type=float,
        default=None,
        help="jet pT threshold in GeV (Jet 30, FatJet 200)",
    )
    parser.add_argument("--jet-max-abs-eta", type=float, default=2.4, help="jet |eta| limit")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument(
        "--label",
        nargs="+",
        type=_label,
        default=None,
        help="label per input (or one for all); 'none' = unknown. Default: truth branch if any",
    )
    parser.add_argument(
        "--truth-label-branch",
        default="truthLabel",
        help="jet branch with labels, used when --label is not given and the branch exists "
        "(default truthLabel, written by 'advsyst generate'; real NanoAOD has none); "
        "'none' = never read labels from a branch",
    )
    parser.add_argument(
        "--dataset", nargs="+", default=None, help="dataset name per input (default: file stem)"
    )
    parser.add_argument("--data", action="store_true", help="inputs are collision data")
    parser.add_argument(
        "--require-truth-match",
        action="store_true",
        help="keep only simulated jets that contain a full hadronic top/W decay",
    )
    parser.add_argument("--executor", choices=["iterative", "futures", "dask"], default="iterative")
    parser.add_argument("--chunksize", type=int, default=50_000, help="events per chunk")
    parser.add_argument("--workers", type=int, default=1, help="processes/threads")
    parser.add_argument(
        "--skip-bad-files", action="store_true", help="skip unreadable files instead of failing"
    )


def _fileset(args: argparse.Namespace) -> dict:
    n = len(args.input)
    labels = args.label
    if labels is not None and len(labels) not in (1, n):
        raise InputError(f"--label needs 1 or {n} values, got {len(labels)}")
    names = args.dataset
    if names is not None and len(names) != n:
        raise InputError(f"--dataset needs {n} values, got {len(names)}")
    fileset: dict = {}
    for i, path in enumerate(args.input):
        name = names[i] if names else Path(path.rstrip("/").split("/")[-1]).stem
        base, k = name, 1
        while name in fileset:
            k += 1
            name = f"{base}_{k}"
        meta: dict = {"is_data": True} if args.data else {}
        if labels is not None:
            meta["label"] = labels[0] if len(labels) == 1 else labels[i]
        fileset[name] = {"files": {str(path): "Events"}, "metadata": meta}
    return fileset


def run(args: argparse.Namespace) -> int:
    """Run ``advsyst features``."""
    from advsyst._io import atomic_savez, provenance
    from advsyst.processors.run import extract_features

    for path in args.input:
        if not args.skip_bad_files and "://" not in path and not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file")
    fileset = _fileset(args)
    out = extract_features(
        fileset,
        schema=args.schema,
        jet_collection=args.jet_collection,
        jet_min_pt=args.jet_min_pt,
        jet_max_abs_eta=args.jet_max_abs_eta,
        executor=args.executor,
        chunksize=args.chunksize,
        workers=args.workers,
        skip_bad_files=args.skip_bad_files,
        require_truth_match=args.require_truth_match,
        truth_label_branch=None
        if str(args.truth_label_branch).lower() == "none"
        else args.truth_label_branch,
    )
    prov = provenance(
        config={
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if not k.startswith("_")
        },
        kind="advsyst.features",
        fileset=fileset,
    )
    atomic_savez(args.out, **out, provenance=np.array(json.dumps(prov, default=str)))
    n = len(out["y"])
    per_ds = {str(d): int(c) for d, c in zip(*np.unique(out["dataset"], return_counts=True))}
    print(f"wrote {args.out}: {n} jets x {out['X'].shape[1]} features {per_ds}")
    for path in out["skipped_files"]:
        print(f"skipped unreadable file {path}")
    return 0
