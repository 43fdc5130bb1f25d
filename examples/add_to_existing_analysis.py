"""Add the adversarial pseudo-systematic to an existing coffea analysis.

``TopTagAnalysis`` below is an ordinary coffea processor: a jet selection with
``PackedSelection``, event weights with ``coffea.analysis_tools.Weights`` (``genWeight`` on
simulation and a dummy ``pileup`` systematic) and a ``hist.Hist`` of the tagger score with a
``systematic`` axis.  The lines marked ``# (+) adversarial`` are all it takes to add the
CONSERVAttack / FGSM pseudo-systematics:

* ``__init__`` receives a :class:`advsyst.workflows.twopass.VariedScores`;
* ``process`` looks up the nominal and varied scores of its selected jets and fills
  ``nominal`` and every ``<name>Up`` the lookup gives;
* ``postprocess`` makes the ``<name>Down`` templates of the one-sided variations from the
  merged histogram, mirrored bin by bin around the nominal (cabinetry's ``Symmetrize``).

The attack needs dataset-level statistics, so it runs between two passes over the files
(see ``advsyst.workflows.twopass``):

1. pass 1: advsyst's feature processor -> per-jet features + keys (futures executor);
2. train a small tagger on them (an analysis would load its own);
3. run ``conservattack`` and ``fgsm`` once on all jets together -> ``VariedScores``;
4. pass 2: ``TopTagAnalysis`` with ``processor.Runner`` (futures executor);
5. print the tagged yields per systematic and write ``templates.root``
   (``{region}_{process}_{systematic}``, the naming cabinetry reads).

Run::

    python examples/add_to_existing_analysis.py            # ~20 s on 2 cores
    python examples/add_to_existing_analysis.py --quick    # 150 events, ~10 s
    python examples/add_to_existing_analysis.py --workdir out/  # keep samples and outputs
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor
from coffea.analysis_tools import PackedSelection, Weights

from advsyst.workflows.twopass import VariedScores

SIGNAL_MASS = (105.0, 210.0)  # GeV: the jet-mass window of the signal region
WORKING_POINT = 0.5  # a jet is "tagged" when its score is >= this


class TopTagAnalysis(processor.ProcessorABC):
    """Boosted top tagging: selected large-R jets, tagger score per region and systematic.

    Parameters
    ----------
    varied
        Nominal and varied tagger scores per jet (pass 1 + attack).
    jet_min_pt
        Jet selection threshold in GeV; must not be looser than pass 1's (200 GeV).
    """

    def __init__(self, varied: VariedScores, jet_min_pt: float = 250.0) -> None:
        self.varied = varied  # (+) adversarial
        self.jet_min_pt = float(jet_min_pt)

    def process(self, events: Any) -> dict[str, Any]:
        dataset = events.metadata["dataset"]
        is_data = bool(events.metadata.get("is_data", False))
        jets = events.FatJet
        jet_index = ak.local_index(jets, axis=1)  # (+) adversarial: jet key, before any cut

        # --- selection
        good = (jets.pt > self.jet_min_pt) & (abs(jets.eta) < 2.4)
        selection = PackedSelection()
        selection.add("one_good_jet", ak.num(jets[good], axis=1) >= 1)
        selection.add("leading_pt", ak.fill_none(ak.max(jets.pt, axis=1), 0.0) > 300.0)
        event_ok = selection.all("one_good_jet", "leading_pt")

        # --- weights
        weights = Weights(len(events), storeIndividual=True)
        if not is_data:
            weights.add("genWeight", np.asarray(events.genWeight, dtype=np.float64))
            ones = np.ones(len(events))
            weights.add("pileup", ones, weightUp=1.05 * ones, weightDown=0.95 * ones)  # dummy

        ev = events[event_ok]
        sel_jets = jets[good][event_ok]
        counts = ak.to_numpy(ak.num(sel_jets, axis=1))
        mass = ak.to_numpy(ak.flatten(sel_jets.mass)).astype(np.float64)
        signal = (mass >= SIGNAL_MASS[0]) & (mass < SIGNAL_MASS[1])
        regions = {"signal": signal, "control": ~signal}

        def jet_weight(modifier: str | None = None) -> np.ndarray:
            return np.repeat(weights.weight(modifier)[event_ok], counts)

        # (+) adversarial: nominal and varied scores of the selected jets.  The nominal is
        # the tagger on pass 1's features; an analysis that evaluates its tagger here
        # would keep its own score as nominal.
        scores = self.varied.lookup_jagged(
            dataset, ev.run, ev.luminosityBlock, ev.event, jet_index[good][event_ok]
        )
        scores = {k: ak.to_numpy(ak.flatten(v)) for k, v in scores.items()}

        h = hist.Hist(
            hist.axis.StrCategory([], growth=True, name="process", label="process"),
            hist.axis.StrCategory(["control", "signal"], name="region", label="region"),
            hist.axis.StrCategory([], growth=True, name="systematic", label="systematic"),
            hist.axis.Regular(20, 0.0, 1.0, name="score", label="tagger score"),
            storage=hist.storage.Weight(),
        )
        fills: dict[str, tuple[np.ndarray, np.ndarray]] = {
            "nominal": (scores["nominal"], jet_weight())
        }
        if not is_data:
            for syst in sorted(weights.variations, key=lambda s: (s.endswith("Down"), s)):
                fills[syst] = (scores["nominal"], jet_weight(syst))
            for syst in self.varied.systematics()[1:]:  # (+) adversarial
                fills[syst] = (scores[syst], jet_weight())
        for syst, (score, w) in fills.items():
            score = np.minimum(score, np.nextafter(1.0, 0.0))  # a score of 1 -> last bin
            for region, m in regions.items():
                h.fill(process=dataset, region=region, systematic=syst, score=score[m], weight=w[m])
        return {
            "hist": h,
            "cutflow": {
                dataset: {
                    "events": len(events),
                    "selected events": int(np.sum(event_ok)),
                    "selected jets": int(counts.sum()),
                }
            },
        }

    def postprocess(self, accumulator: Any) -> Any:
        accumulator["hist"] = self.varied.mirror_templates(accumulator["hist"])  # (+)
        return accumulator


# ---------------------------------------------------------------------- the steps
def make_samples(workdir: Path, events: int, seed: int = 1) -> dict[str, Any]:
    """Generate (or reuse) tt̄ and WW samples; return a coffea fileset."""
    from advsyst.data import generate_sample

    samples = workdir / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    fileset = {}
    for i, (name, label) in enumerate((("ttbar", 1), ("ww", 0))):
        path = samples / f"{name}_{events}ev_seed{seed + i}.root"
        if not path.exists():
            print(f"generating {events} {name} events -> {path}", flush=True)
            generate_sample(name, events, path, seed=seed + i, workers=1, progress=False)
        fileset[name] = {
            "files": {str(path): "Events"},
            "metadata": {"label": label, "is_data": False},
        }
    return fileset


def train_tagger(features: dict[str, np.ndarray], epochs: int, seed: int = 1) -> Any:
    """A small tagger on the jets of even-numbered events (odd ones stay unseen)."""
    from advsyst.models import train_classifier

    train = features["event"] % 2 == 0
    model, history = train_classifier(
        features["X"][train],
        features["y"][train],
        features["w"][train],
        hidden=(64, 32, 16),
        epochs=epochs,
        seed=seed,
        feature_names=[str(n) for n in features["feature_names"]],
        progress=False,
    )
    model.eval()
    print(f"tagger: {int(train.sum())} training jets, {history.n_epochs} epochs")
    return model


def variation_options(quick: bool, seed: int = 1) -> dict[str, dict[str, Any]]:
    """Options of the two variations (ConservAttack as in ``advsyst demo``)."""
    return {
        "conservattack": {
            "budget": "cumulative",
            "units": "range",
            "min_change": 0.01,
            "step": 0.01,
            "num_bins": 50,
            "n_iterations": 3 if quick else 10,
            "max_jsd_single_change": 0.05,
            "max_frob_single_change": 0.05,
            "seed": seed,
            "progress": False,
        },
        "fgsm": {"epsilon": 0.01, "units": "range"},
    }


def report(out: dict[str, Any], path: Path) -> list[str]:
    """Print the cut flow and tagged yields per systematic; write the ROOT templates."""
    from advsyst.systematics import write_root_histograms

    h = out["hist"]
    for ds, flow in sorted(out["cutflow"].items()):
        print(f"cutflow {ds}: " + ", ".join(f"{k} {v}" for k, v in flow.items()))
    hi = h.axes["score"].index(WORKING_POINT)
    procs, regs = sorted(h.axes["process"]), list(h.axes["region"])
    cols = [(p, r) for p in procs for r in regs]
    print(f"\ntagged yield (score >= {WORKING_POINT}) per systematic")
    print(f"{'systematic':<20}" + "".join(f"{p + '/' + r:>16}" for p, r in cols))
    nominal = {}

    def order(s: str) -> tuple[bool, str, bool]:  # nominal, then each name's Up and Down
        return s != "nominal", s.removesuffix("Up").removesuffix("Down"), s.endswith("Down")

    for syst in sorted(h.axes["systematic"], key=order):
        row = []
        for p, r in cols:
            y = float(h[{"process": p, "region": r, "systematic": syst}].values()[hi:].sum())
            if syst == "nominal":
                nominal[p, r] = y
            rel = y / nominal[p, r] - 1 if nominal.get((p, r)) else 0.0
            row.append(f"{y:9.1f}" + ("" if syst == "nominal" else f" {rel:+5.0%}"))
        print(f"{syst:<20}" + "".join(f"{c:>16}" for c in row))
    # the histogram has advsyst's axes (process/region/systematic/score, Weight storage),
    # so it can be written as {region}_{process}_{systematic} templates for cabinetry
    names = write_root_histograms(path, h)
    print(f"\nwrote {len(names)} histograms to {path} (e.g. {names[0]})")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", help="samples and outputs (default: a temporary directory)")
    p.add_argument("--events", type=int, default=600, help="events per process")
    p.add_argument("--epochs", type=int, default=10, help="tagger training epochs")
    p.add_argument("--workers", type=int, default=2, help="futures executor processes")
    p.add_argument("--quick", action="store_true", help="150 events, 3 epochs, short attack")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.epochs = min(args.events, 150), min(args.epochs, 3)
    logging.basicConfig(level=logging.WARNING)

    from advsyst.workflows.twopass import build_varied_scores, run_pass1, run_pass2

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        fileset = make_samples(workdir, args.events, args.seed)

        # pass 1: features and jet keys of every selected jet, merged over chunks
        features = run_pass1(fileset, executor="futures", workers=args.workers, chunksize=100)
        print(f"pass 1: {len(features['X'])} jets x {features['X'].shape[1]} features")

        tagger = train_tagger(features, args.epochs, args.seed)

        # the variations, once, on all jets together
        varied = build_varied_scores(
            features, tagger, ["conservattack", "fgsm"], variation_options(args.quick, args.seed)
        )
        varied.save(workdir / "varied_scores.npz")
        flags = varied.flags
        print(
            f"variations: {', '.join(varied.varied)}; CONSERVAttack fooled "
            f"{int(flags['conservattack.fooled'].sum())} of {len(varied)} jets"
        )

        # pass 2: the analysis, with the adversarial systematics
        analysis = TopTagAnalysis(varied)
        out = run_pass2(fileset, analysis, executor="futures", workers=args.workers, chunksize=100)
        report(out, workdir / "templates.root")
        print(f"done in {time.perf_counter() - t0:.0f}s; outputs in {workdir}")
        if args.workdir is None:
            print("(temporary directory removed; pass --workdir to keep the outputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
