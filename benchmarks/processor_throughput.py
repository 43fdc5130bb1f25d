"""Jet-feature processor throughput next to a plain uproot read of the same branches.

Run from the repository root::

    python benchmarks/processor_throughput.py --quick                 # ~1 minute
    python benchmarks/processor_throughput.py --events 5000           # generate, then time
    python benchmarks/processor_throughput.py --input a.root b.root   # your own files
    python benchmarks/processor_throughput.py --json out.json

Measured in one process on the same files, best of ``--repeat`` runs each:

* ``uproot read``: ``TTree.arrays`` of exactly the branches the processor reads (jets,
  association table, candidates, event, genWeight) - the I/O + decompression floor;
* ``uproot + features``: the same read followed by the processor's kernel (constituent
  grouping, sorting, padding, TopoDNN preprocessing) called directly, no coffea;
* ``coffea <executor>``: ``advsyst.processors.run.extract_features`` with the iterative
  Runner (virtual mode), and dask (``apply_to_fileset``) - the full user-facing path,
  including file checks and NanoEvents construction.

Throughput is selected jets per second of wall time.  Generation time (when the script
generates its input) is reported separately as seconds per event.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import awkward as ak
import uproot
from advsyst.processors.jet_features import collections_from_branches, detect_layout
from advsyst.processors.run import extract_features, make_processor

from advsyst.data import generate_sample


def _best(fn, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _branches(path: str, coll: str) -> tuple[list[str], Any]:
    with uproot.open(path) as f:
        keys = f["Events"].keys()
    layout = detect_layout(collections_from_branches(keys), coll)
    branches = layout.required(coll) + ["event"]
    if "genWeight" in keys:
        branches.append("genWeight")
    return branches, layout


def _uproot_read(paths: list[str], branches: list[str]) -> list[ak.Array]:
    out = []
    for p in paths:
        with uproot.open(p) as f:
            out.append(f["Events"].arrays(branches))
    return out


def _uproot_features(paths: list[str], branches: list[str], layout, coll: str, proc) -> int:
    n = 0
    for a in _uproot_read(paths, branches):
        inputs = {f"jet_{v}": a[f"{coll}_{v}"] for v in ("pt", "eta", "phi", "mass")}
        inputs["event"] = a["event"]
        if "genWeight" in a.fields:
            inputs["genWeight"] = a["genWeight"]
        inputs["assoc_jet"] = a[f"{layout.association}_{layout.jet_index}"]
        if layout.candidate_index:
            inputs["assoc_cand"] = a[f"{layout.association}_{layout.candidate_index}"]
        for v in ("pt", "eta", "phi"):
            inputs[f"cand_{v}"] = a[f"{layout.candidates}_{v}"]
        out = proc.compute(inputs, label=None, is_data="genWeight" not in a.fields)
        n += len(out["pt"])
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", nargs="+", default=None, help="ROOT files (default: generate)")
    ap.add_argument("--events", type=int, default=4000, help="events to generate per process")
    ap.add_argument("--quick", action="store_true", help="small sample, one repeat")
    ap.add_argument("--jet-collection", default="FatJet")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunksize", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=1, help="generation workers")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.repeat = min(args.events, 600), 1
    coll = args.jet_collection
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "jet_collection": coll,
    }
    tmpdir = None
    if args.input is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="advsyst-bench-")
        paths = []
        gen = {}
        for process, seed in (("ttbar", 1), ("ww", 2)):
            p = Path(tmpdir.name) / f"{process}.root"
            t0 = time.perf_counter()
            generate_sample(
                process, args.events, p, seed=seed, workers=args.workers, progress=False
            )
            dt = time.perf_counter() - t0
            gen[process] = {"events": args.events, "seconds_per_event": dt / args.events}
            print(
                f"generated {process}: {args.events} events, {1e3 * dt / args.events:.2f} ms/event"
            )
            paths.append(str(p))
        results["generation"] = gen
    else:
        paths = [str(p) for p in args.input]
    n_events = 0
    size = 0
    for p in paths:
        with uproot.open(p) as f:
            n_events += f["Events"].num_entries
        size += os.path.getsize(p)
    results.update({"files": len(paths), "events": n_events, "bytes": size})

    branches, layout = _branches(paths[0], coll)
    proc = make_processor("pfnano", coll)
    t_read, _ = _best(lambda: _uproot_read(paths, branches), args.repeat)
    t_feat, n_jets = _best(
        lambda: _uproot_features(paths, branches, layout, coll, proc), args.repeat
    )
    timings = {"uproot read": t_read, "uproot + features": t_feat}
    fileset = {f"f{i}": [p] for i, p in enumerate(paths)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ex in ("iterative", "dask"):
            t, res = _best(
                lambda ex=ex: extract_features(
                    fileset, jet_collection=coll, executor=ex, chunksize=args.chunksize
                ),
                args.repeat,
            )
            assert len(res["pt"]) == n_jets
            timings[f"coffea {ex}"] = t
    print(
        f"\n{n_events} events, {n_jets} selected {coll} jets, {size / 1e6:.1f} MB, layout {layout.kind}"
    )
    print(f"{'path':<20}{'seconds':>10}{'jets/s':>14}{'events/s':>14}")
    rows = {}
    for name, t in timings.items():
        rows[name] = {"seconds": t, "jets_per_s": n_jets / t, "events_per_s": n_events / t}
        print(f"{name:<20}{t:>10.3f}{n_jets / t:>14.0f}{n_events / t:>14.0f}")
    results.update({"jets": n_jets, "timings": rows})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if tmpdir is not None:
        tmpdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
