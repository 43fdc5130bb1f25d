"""Shared set-up of the paper replays: generated tt̄ vs WW jets, a tagger, a side-by-side table.

``prepare()`` generates tt̄ (label 1), WW (label 0) and pseudo-data samples with the demo's
generator and cache (Pythia 8 + FastJet + a simple detector response), extracts the 87
TopoDNN inputs with the coffea feature processor, trains the paper's tagger MLP on one half
of the simulated jets and writes the other half as the study sample:

    WORKDIR/study.npz   X, y, w, feature_names  (jets the tagger never saw)
    WORKDIR/data.npz    pseudo-data jets (X, w)
    WORKDIR/tagger.pt   the tagger (TorchScript)

Everything is cached: a second replay with the same size and seed reuses it.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from advsyst._io import atomic_savez

#: generated events per simulated process (≈ 1.85 large-R jets per event)
QUICK_EVENTS = 8000
FULL_EVENTS = 27000  # ≈ 100 000 simulated jets
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

log = logging.getLogger("paper-replay")


def parser(description: str, quick_runs: int, full_runs: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_EVENTS} events/process, {quick_runs} runs")  # fmt: skip
    p.add_argument("--events", type=int, help=f"events per process (default {FULL_EVENTS})")
    p.add_argument("--runs", type=int, help=f"runs (default {full_runs}, --quick {quick_runs})")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--epochs", type=int, default=20, help="tagger epochs")
    p.add_argument("--workdir", default="paper-replay", help="samples, tagger, study outputs")
    p.add_argument("--resume", action="store_true", help="skip study runs already done")
    p.set_defaults(quick_runs=quick_runs, full_runs=full_runs)
    return p


def add_detector_options(p: argparse.ArgumentParser) -> None:
    """``--inputs`` (what the detector sees) and ``--attack-config`` (a table in
    examples/configs), shared by the detector-type replays."""
    from advsyst.workflows.studies import DETECTOR_INPUTS

    p.add_argument("--inputs", default="features", choices=list(DETECTOR_INPUTS))
    p.add_argument("--attack-config", default="paper_table14_ttww_detector.yaml",
                   help="attack table in examples/configs (cumulative_demo.yaml: the demo's)")  # fmt: skip


def sizes(args: argparse.Namespace) -> tuple[int, int]:
    events = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    runs = args.runs or (args.quick_runs if args.quick else args.full_runs)
    return events, runs


def prepare(workdir: str | Path, events: int, seed: int, epochs: int = 20) -> dict[str, Path]:
    """Samples -> features -> tagger; returns the paths of study.npz, data.npz, tagger.pt."""
    from advsyst.models import save_model, train_classifier
    from advsyst.workflows.demo import DemoConfig, _features, _samples, _Steps
    from advsyst.workflows.robustness import _stratified_split

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    work = Path(workdir) / f"ttww_{events}ev_seed{seed}"
    out = {"data": work / "study.npz", "real_data": work / "data.npz", "model": work / "tagger.pt"}
    if all(p.exists() for p in out.values()):
        log.info("using the prepared sample in %s", work)
        return out
    t0 = time.perf_counter()
    cfg = DemoConfig(events=events, data_events=events * 3 // 4, seed=seed, workers=1,
                     cache_dir=str(Path(workdir) / "samples"))  # fmt: skip
    paths = _samples(cfg, _Steps(3))
    sim, data = _features(paths, cfg)
    X, y, w = sim["X"].astype(np.float64), sim["y"].astype(np.int64), sim["w"].astype(np.float64)
    names = np.asarray([str(n) for n in sim["feature_names"]])
    i_study, i_train = _stratified_split(y, 0.5, seed)
    log.info("%d simulated jets: tagger trains on %d, the studies use %d", len(X), len(i_train),
             len(i_study))  # fmt: skip
    tagger, hist = train_classifier(X[i_train], y[i_train], w[i_train], epochs=epochs, seed=seed,
                                    feature_names=list(names), progress=True)  # fmt: skip
    save_model(tagger, out["model"], metadata={"role": "tagger", "history": hist.to_dict()})
    atomic_savez(out["data"], X=X[i_study], y=y[i_study], w=w[i_study], feature_names=names)
    atomic_savez(out["real_data"], X=data["X"].astype(np.float64),
                 w=data["w"].astype(np.float64), feature_names=names)  # fmt: skip
    log.info("prepared in %.0fs", time.perf_counter() - t0)
    return out


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """Markdown side-by-side table: quantity | ours | paper | paper reference."""
    head = ["| quantity | this replay | paper | paper reference |", "|---|---:|---:|---|"]
    return "\n".join(head + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])


def pm(d: dict[str, Any] | None, nd: int = 3) -> str:
    if not d or d.get("value") is None:
        return "n/a"
    e = d.get("error")
    return f"{d['value']:.{nd}f} ± {e:.{nd}f}" if e is not None else f"{d['value']:.{nd}f}"
