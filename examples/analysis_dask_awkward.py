"""One analysis, coffea's eager and dask modes: own features, NLO weights, adversarial systematics.

What an analyst brings, and what advsyst adds:

* ``jet_builder`` — the analyst's pass-1 feature builder, ``events -> per-jet arrays``
  (the tagger's inputs and the jet keys; contract in ``advsyst.processors.builders``);
* the fileset's metadata — ``label``, ``is_data``, ``xsec`` (pb) and ``lumi`` (pb^-1):
  pass 1 normalises simulation to ``xsec * lumi / sum(genWeight)`` with the ``Runs``
  tree's ``genEventSumw``; the tt̄ sample is NLO-like, 25 % of its events have a
  negative ``genWeight``, and the attack runs on the signed weights;
* ``TopTagAnalysis`` — a processor written for ``coffea.dataset_tools.apply_to_fileset``
  (dask-awkward arrays, ``hist.dask``) that also runs in ``processor.Runner``.  The lines
  marked ``# (+)`` are all the adversarial systematics take.

Steps: generate samples (cached), pass 1 with the builder, train a small tagger on
simulation and a small adversarial detector (clean vs FGSM jets), run ``conservattack``
and ``fgsm`` once on every simulated jet, print the detector's data-vs-simulation
efficiency and the uncertainty table built from the two-pass result, run pass 2 in eager mode *and* in dask
mode, check that the histograms are identical, and write ``DIR/templates_eager.root`` and
``DIR/templates_dask.root`` (``{region}_{process}_{systematic}``, the names cabinetry
reads) plus ``DIR/uncertainty_table.md`` and ``DIR/varied_scores.npz``.

Run::

    python examples/analysis_dask_awkward.py --out out/        # 600 events per sample
    python examples/analysis_dask_awkward.py --out out/ --quick  # 150 events
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import awkward as ak
import dask_awkward as dak
import hist
import hist.dask
import numpy as np
from coffea import processor

from advsyst.workflows.twopass import VariedScores

FEATURES = ["pt", "mass", "msoftdrop", "tau21", "tau32", "chHEF", "neHEF"]
SIGNAL_MASS = (105.0, 210.0)
JET_MIN_PT = 200.0
LUMI = 1000.0  # pb^-1
SAMPLES = {  # name: (process, label, xsec in pb, negative-weight fraction, pseudo-data)
    "ttbar": ("ttbar", 1, 831.76, 0.25, False),
    "ww": ("ww", 0, 118.7, 0.0, False),
    "data": ("mix", None, None, 0.0, True),
}


# ---------------------------------------------------------------------- pass 1: features
def jet_builder(events: Any) -> dict[str, Any]:
    """The analyst's feature builder: jet-level tagger inputs of the selected FatJets."""
    jets = events.FatJet
    good = (jets.pt > JET_MIN_PT) & (abs(jets.eta) < 2.4)
    sel = jets[good]
    n = ak.to_numpy(ak.num(sel, axis=1))

    def col(x: Any) -> np.ndarray:
        return ak.to_numpy(ak.flatten(x)).astype(np.float64)

    tau1, tau2, tau3 = col(sel.tau1), col(sel.tau2), col(sel.tau3)
    X = np.column_stack(
        [
            col(sel.pt),
            col(sel.mass),
            col(sel.msoftdrop),
            np.divide(tau2, tau1, out=np.zeros_like(tau2), where=tau1 > 0),
            np.divide(tau3, tau2, out=np.zeros_like(tau3), where=tau2 > 0),
            col(sel.chHEF),
            col(sel.neHEF),
        ]
    )
    mass = X[:, 1]
    return {
        "X": X,
        "run": np.repeat(ak.to_numpy(events.run), n),
        "luminosityBlock": np.repeat(ak.to_numpy(events.luminosityBlock), n),
        "event": np.repeat(ak.to_numpy(events.event), n),
        "jet_index": ak.flatten(ak.local_index(jets, axis=1)[good]),
        "region_CR": (mass < SIGNAL_MASS[0]) | (mass >= SIGNAL_MASS[1]),
        "region_SR": (mass >= SIGNAL_MASS[0]) & (mass < SIGNAL_MASS[1]),
    }


jet_builder.feature_names = FEATURES
jet_builder.selection = {"jet_collection": "FatJet", "jet_min_pt": JET_MIN_PT,
                         "jet_max_abs_eta": 2.4}  # fmt: skip


# ---------------------------------------------------------------------- pass 2: analysis
class TopTagAnalysis(processor.ProcessorABC):
    """Tagger score per process, region and systematic; eager or dask-awkward events.

    Simulation is filled with ``genWeight`` (+-1 here: sums are exact, so both modes give
    bit-identical histograms); :func:`normalise` applies ``xsec * lumi / sum(genWeight)``
    per process afterwards.
    """

    def __init__(self, varied: VariedScores, processes: list[str], jet_min_pt: float = 250.0):
        self.varied = varied  # (+)
        self.processes = processes
        self.jet_min_pt = jet_min_pt

    def process(self, events: Any) -> dict[str, Any]:
        lazy = isinstance(events, dak.Array)
        lib = dak if lazy else ak
        dataset = events.metadata["dataset"]
        is_data = bool(events.metadata.get("is_data", False))
        jets = events.FatJet
        jet_index = lib.local_index(jets, axis=1)  # (+) the jet key, before any cut
        good = (jets.pt > self.jet_min_pt) & (abs(jets.eta) < 2.4)
        signal = (jets.mass >= SIGNAL_MASS[0]) & (jets.mass < SIGNAL_MASS[1])
        weight = jets.pt * 0 + (1.0 if is_data else events.genWeight)  # per jet
        scores = self.varied.lookup_jagged(  # (+) eager or lazy alike
            dataset, events.run, events.luminosityBlock, events.event, jet_index[good],
            jets=jets[good],
        )  # fmt: skip
        h = (hist.dask.Hist if lazy else hist.Hist)(
            hist.axis.StrCategory(self.processes, name="process", label="process"),
            hist.axis.StrCategory(["control", "signal"], name="region", label="region"),
            hist.axis.StrCategory(self.varied.systematics(), name="systematic"),  # (+)
            hist.axis.Regular(20, 0.0, 1.0, name="score", label="tagger score"),
            storage=hist.storage.Weight(),
        )
        systematics = ["nominal"] if is_data else self.varied.systematics()  # (+)
        for syst in systematics:
            for region, m in (("signal", signal[good]), ("control", ~signal[good])):
                score = lib.flatten(scores[syst][m])
                h.fill(
                    process=dataset,
                    region=region,
                    systematic=syst,
                    score=score * (1 - 1e-12),  # a score of exactly 1 -> last bin
                    weight=lib.flatten(weight[good][m]),
                )
        return {"hist": h}

    def postprocess(self, accumulator: Any) -> Any:
        # (+) one-sided variations: Down = the merged Up template mirrored (Symmetrize)
        accumulator["hist"] = self.varied.mirror_templates(accumulator["hist"])
        return accumulator


def normalise(h: hist.Hist, factors: dict[str, float]) -> hist.Hist:
    """Scale each process by its ``xsec * lumi / sum(genWeight)`` (variances by its square)."""
    out = h.copy()
    view = out.view(flow=True)
    for i, p in enumerate(out.axes["process"]):
        f = factors.get(p, 1.0)
        view["value"][i] *= f
        view["variance"][i] *= f * f
    return out


# ---------------------------------------------------------------------- the steps
def make_fileset(workdir: Path, events: int, seed: int) -> dict[str, Any]:
    from advsyst.data import generate_sample

    samples = workdir / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    fileset = {}
    for i, (name, (proc, label, xsec, neg, pseudo)) in enumerate(SAMPLES.items()):
        path = samples / f"{name}_{events}ev_seed{seed + i}_neg{neg:g}.root"
        if not path.exists():
            print(f"generating {events} {name} events -> {path}", flush=True)
            extra = {"negative_weight_fraction": neg} if neg else {}
            generate_sample(proc, events, path, seed=seed + i, pseudo_data=pseudo, workers=1,
                            progress=False, **extra)  # fmt: skip
        meta: dict[str, Any] = {"is_data": pseudo}
        if not pseudo:
            meta.update(label=label, xsec=xsec, lumi=LUMI)
        fileset[name] = {"files": {str(path): "Events"}, "metadata": meta}
    return fileset


def train_tagger(f: dict[str, np.ndarray], sim: np.ndarray, epochs: int, seed: int) -> Any:
    from advsyst.models import train_classifier

    model, _ = train_classifier(
        f["X"][sim], f["y"][sim], np.abs(f["w"][sim]), hidden=(32, 16), epochs=epochs,
        seed=seed, feature_names=FEATURES, progress=False,
    )  # fmt: skip
    return model.eval()


def train_detector(f: dict[str, np.ndarray], sim: np.ndarray, tagger: Any, epochs: int,
                   seed: int) -> Any:  # fmt: skip
    """A small adversarial detector: clean simulated jets (0) vs their FGSM versions (1)."""
    from advsyst.models import train_classifier
    from advsyst.systematics import VariationContext, run_variation

    X = f["X"][sim]
    ctx = VariationContext(y=f["y"][sim], weights=f["w"][sim])
    adv = run_variation("fgsm", X, tagger, context=ctx, epsilon=0.02, units="range").up
    det, _ = train_classifier(
        np.vstack([X, adv]), np.r_[np.zeros(len(X)), np.ones(len(X))].astype(int),
        hidden=(32, 16), epochs=epochs, seed=seed, progress=False,
    )  # fmt: skip
    return det.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--workdir", type=Path, help="samples (default: OUT)")
    p.add_argument("--events", type=int, default=600, help="events per sample")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="dask threads in pass 2")
    p.add_argument("--quick", action="store_true", help="150 events, 3 epochs, short attack")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.epochs = min(args.events, 150), min(args.epochs, 3)

    from advsyst.systematics import (
        VariationContext,
        build_uncertainty_table,
        write_root_histograms,
    )
    from advsyst.workflows.twopass import build_varied_scores, run_pass1, run_pass2

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    fileset = make_fileset(args.workdir or args.out, args.events, args.seed)

    # pass 1: the analyst's builder; labels from metadata, weights normalised and signed
    f = run_pass1(fileset, builder=jet_builder, chunksize=100, progress=False)
    data = f["dataset"] == "data"
    print(f"pass 1: {len(f['X'])} jets x {f['X'].shape[1]} features (own builder); "
          f"{int((f['w'][~data] < 0).sum())} simulated jets with negative weight")  # fmt: skip

    tagger = train_tagger(f, ~data, args.epochs, args.seed)
    options = {
        "conservattack": {"budget": "cumulative", "units": "range", "min_change": 0.01,
                          "step": 0.01, "num_bins": 30, "n_iterations": 2 if args.quick else 5,
                          "max_jsd": 0.05, "max_dfn": 0.05, "seed": args.seed,
                          "progress": False},
        "fgsm": {"epsilon": 0.02, "units": "range"},
    }  # fmt: skip
    detector = train_detector(f, ~data, tagger, args.epochs, args.seed)
    context = VariationContext(
        y=f["y"], weights=f["w"], control_mask=f["region_CR"], feature_names=FEATURES,
        detector=detector, detector_threshold=0.5,
    )  # fmt: skip
    varied = build_varied_scores(f, tagger, list(options), options, context=context,
                                 vary_mask=~data, data_mask=data)  # fmt: skip
    varied.save(args.out / "varied_scores.npz")

    # the uncertainty table and the detector's data-vs-simulation efficiency, straight
    # from the two-pass result
    eff = varied.detector_efficiency()
    print(f"detector clean-jet efficiency at P(adv) < {eff.threshold:g}: simulation "
          f"{eff.mc.value:.3f} +- {eff.mc.error:.3f}, data {eff.data.value:.3f} +- "
          f"{eff.data.error:.3f} (pull {eff.pull:+.2f})")  # fmt: skip
    table = build_uncertainty_table(varied.outcomes(), budget=0.05, detector=eff)
    print(table.to_markdown(args.out / "uncertainty_table.md"))

    # pass 2, twice: processor.Runner (eager) and apply_to_fileset (dask-awkward)
    processes = list(fileset)
    factors = {ds: v["factor"] for ds, v in varied.provenance["pass1"]["normalization"].items()}
    hists = {}
    for mode in ("eager", "dask"):
        analysis = TopTagAnalysis(varied, processes)
        out = run_pass2(fileset, analysis, mode=mode, chunksize=100, workers=args.workers,
                        progress=False)  # fmt: skip
        hists[mode] = out["hist"]
    same = np.array_equal(hists["eager"].view(flow=True), hists["dask"].view(flow=True))
    print(f"eager and dask histograms identical: {same}")
    if not same:
        raise SystemExit("eager and dask modes disagree")
    for mode, h in hists.items():
        path = args.out / f"templates_{mode}.root"
        names = write_root_histograms(path, normalise(h, factors))
        print(f"wrote {len(names)} histograms to {path}")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
