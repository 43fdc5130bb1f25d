"""The whole flow on an analyst's own inputs: per-particle ONNX tagger, NLO weights, dask, fit.

What the analyst brings, and what advsyst adds:

* ``particle_builder`` -- the analyst's pass-1 feature builder (contract in
  ``advsyst.processors.builders``): the pT-ordered constituents of each selected FatJet,
  ``(jets, P, F)`` padded with zeros, flattened by ``advsyst.models.ParticleLayout``;
* a per-particle tagger (a small DeepSets trained here for a few epochs) exported to ONNX
  and loaded back with ``load_model`` + ``per_particle(model, layout)``: it receives its
  own ``(jets, P, F)`` shape and the mask, and the attack never moves padded entries;
* an NLO-like tt̄ sample, 25 % of its events with negative ``genWeight``
  (``advsyst generate --negative-weight-fraction 0.25``), normalised per dataset to
  ``xsec * lumi / sum(genWeight)`` from the fileset metadata and the ``Runs`` tree;
* ``ParticleTagAnalysis`` -- pass 2 written for ``coffea.dataset_tools.apply_to_fileset``
  (dask-awkward, ``hist.dask``), run with ``run_pass2(..., mode="dask")``.  It fills the
  nominal and ``<name>Up`` templates; the down templates are mirrored after the merge with
  ``varied.mirror_templates`` (cabinetry's ``Symmetrize`` convention).  Lines marked ``# (+)``
  are all that the adversarial systematics add (``# (~)``: the existing fill, now per
  systematic with the looked-up score).

Then the uncertainty table and the detector's data-vs-simulation efficiencies come from
the two-pass result (``VariedScores.outcomes()``, ``.detector_efficiency()``), and a
cabinetry fit of the signal strength uses the templates (``write_fit_inputs``,
``build_workspace``, ``cabinetry.fit.fit``).

The attack uses ``robust_binnings: null`` (the paper's single binning of the dataset-level
budgets): the binning-robust default costs about 15x more on a per-particle input of
~100 columns, too much for an example.  Padding is protected by the context's
``movable`` mask (``ParticleLayout.movable``): no variation moves a padded entry.

Pseudo-data is a 50/50 mixture (by events) of tt̄ and WW, so each simulated sample gets
the luminosity that makes its expected yield its share of the pseudo-data (a real
analysis has one ``lumi`` for all).

Outputs in ``DIR``: ``uncertainty_table.md`` (+ ``.json``), ``detector_efficiency.json``,
``templates_dask.root`` (``{region}_{process}_{systematic}``, normalised),
``fit/cabinetry.yml`` (+ ``fit/histograms.root``), ``fit_result.json`` (mu and its
uncertainty), ``varied_scores.npz``, ``tagger.onnx``, ``conservattack_features.npz`` (the
simulated jets' flat features before and after CONSERVAttack) and ``summary.json``.

Run::

    python examples/analysis_full.py --out out/            # 400 events per sample
    python examples/analysis_full.py --out out/ --quick    # 120 events, 2 score bins
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import awkward as ak
import dask_awkward as dak
import hist
import hist.dask
import numpy as np
import torch
from coffea import processor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analysis_dask_awkward import (  # noqa: E402  (the sibling example: samples, detector)
    SIGNAL_MASS,
    make_fileset,
    normalise,
    train_detector,
)

from advsyst._io import atomic_path, atomic_write_json  # noqa: E402
from advsyst.models import ParticleLayout  # noqa: E402
from advsyst.workflows.twopass import VariedScores  # noqa: E402

JET_MIN_PT = 200.0
N_PARTICLES = 30
LAYOUT = ParticleLayout(N_PARTICLES, 3, feature_names=["ptrel", "deta", "dphi"])
MIX = {"ttbar": 0.5, "ww": 0.5}  # pseudo-data fractions (advsyst.data.generate.DEFAULT_MIX)


# ---------------------------------------------------------------------- pass 1: features
def _flat(a: Any) -> np.ndarray:
    return ak.to_numpy(ak.flatten(a))


def particle_builder(events: Any) -> dict[str, Any]:
    """Constituents (pT / jet pT, deta, dphi; pT-ordered, zero-padded) of the selected jets."""
    jets, pf, link = events.FatJet, events.PFCands, events.FatJetPFCands
    njet, npf = ak.to_numpy(ak.num(jets, axis=1)), ak.to_numpy(ak.num(pf, axis=1))
    nlink = ak.to_numpy(ak.num(link, axis=1))
    j = np.repeat(np.cumsum(njet) - njet, nlink) + _flat(link.jetIdx)  # chunk-wide jet
    c = np.repeat(np.cumsum(npf) - npf, nlink) + _flat(link.pFCandsIdx)  # chunk-wide cand
    pt, eta, phi = _flat(pf.pt)[c], _flat(pf.eta)[c], _flat(pf.phi)[c]
    jpt, jeta, jphi = _flat(jets.pt), _flat(jets.eta), _flat(jets.phi)
    order = np.lexsort((-pt, j))  # by jet, then decreasing pT
    j, pt, eta, phi = j[order], pt[order], eta[order], phi[order]
    rank = np.arange(len(j)) - np.searchsorted(j, j)  # slot of each constituent
    keep = rank < N_PARTICLES
    x = np.zeros((len(jpt), N_PARTICLES, 3))
    x[j[keep], rank[keep]] = np.column_stack(
        [pt / jpt[j], eta - jeta[j], (phi - jphi[j] + np.pi) % (2 * np.pi) - np.pi]
    )[keep]
    mask = np.zeros(x.shape[:2], dtype=bool)
    mask[j[keep], rank[keep]] = True
    good_j = (jets.pt > JET_MIN_PT) & (abs(jets.eta) < 2.4)
    good = _flat(good_j)
    n = ak.to_numpy(ak.num(jets[good_j], axis=1))
    mass = _flat(jets.mass)[good]
    signal = (mass >= SIGNAL_MASS[0]) & (mass < SIGNAL_MASS[1])
    return {
        "X": LAYOUT.flatten(x[good], mask[good]),  # checks that padding is recognised
        "run": np.repeat(ak.to_numpy(events.run), n),
        "luminosityBlock": np.repeat(ak.to_numpy(events.luminosityBlock), n),
        "event": np.repeat(ak.to_numpy(events.event), n),
        "jet_index": _flat(ak.local_index(jets, axis=1)[good_j]),
        "region_CR": ~signal,
        "region_SR": signal,
    }


particle_builder.feature_names = LAYOUT.column_names()
particle_builder.selection = {"jet_collection": "FatJet", "jet_min_pt": JET_MIN_PT,
                              "jet_max_abs_eta": 2.4}  # fmt: skip


# ---------------------------------------------------------------------- the tagger
class DeepSets(torch.nn.Module):
    """phi per particle, masked sum, rho: a permutation-invariant probability."""

    def __init__(self, h: int = 16) -> None:
        super().__init__()
        f = LAYOUT.n_features
        self.phi = torch.nn.Sequential(
            torch.nn.Linear(f, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU()
        )
        self.rho = torch.nn.Sequential(
            torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)
        )

    def logit(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.phi(x * torch.tensor([5.0, 3.0, 3.0])) * mask.unsqueeze(-1).to(x.dtype)
        return self.rho(z.sum(dim=1))[:, 0]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x, mask))


def train_and_export(X: np.ndarray, y: np.ndarray, w: np.ndarray, steps: int, seed: int,
                     path: Path) -> Path:  # fmt: skip
    """Full-batch Adam on ``|w|``-weighted BCE; the tagger goes to ONNX (output ``prob``)."""
    torch.manual_seed(seed)
    net = DeepSets()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt = torch.tensor(LAYOUT.unflatten(X), dtype=torch.float32)
    mt = torch.tensor(LAYOUT.mask(X))
    yt, wt = torch.tensor(y, dtype=torch.float32), torch.tensor(np.abs(w) / np.abs(w).mean())
    for step in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net.logit(xt, mt), yt, weight=wt.float()
        )
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            print(f"  tagger step {step + 1}/{steps}: loss {loss.item():.4f}", flush=True)
    net.eval()
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(2, LAYOUT.n_particles, LAYOUT.n_features),
                  torch.ones(2, LAYOUT.n_particles, dtype=torch.bool)),
            str(tmp), dynamo=False, input_names=["x", "mask"], output_names=["prob"],
            dynamic_axes={"x": {0: "n"}, "mask": {0: "n"}, "prob": {0: "n"}},
        )  # fmt: skip
    return path


# ---------------------------------------------------------------------- pass 2: analysis
class ParticleTagAnalysis(processor.ProcessorABC):
    """Tagger score per process, region and systematic (eager or dask-awkward events)."""

    def __init__(self, varied: VariedScores, processes: list[str], bins: int = 4):
        self.varied = varied  # (+)
        self.processes = processes
        self.bins = bins

    def process(self, events: Any) -> dict[str, Any]:
        lib = dak if isinstance(events, dak.Array) else ak
        dataset = events.metadata["dataset"]
        is_data = bool(events.metadata.get("is_data", False))
        jets = events.FatJet
        jet_index = lib.local_index(jets, axis=1)  # (+) the jet key, before any cut
        good = (jets.pt > JET_MIN_PT) & (abs(jets.eta) < 2.4)
        signal = (jets.mass >= SIGNAL_MASS[0]) & (jets.mass < SIGNAL_MASS[1])
        weight = jets.pt * 0 + (1.0 if is_data else events.genWeight)
        scores = self.varied.lookup_jagged(dataset, events.run, events.luminosityBlock,  # (+)
                                           events.event, jet_index[good])  # fmt: skip
        h = (hist.dask.Hist if lib is dak else hist.Hist)(
            hist.axis.StrCategory(self.processes, name="process"),
            hist.axis.StrCategory(["control", "signal"], name="region"),
            hist.axis.StrCategory(self.varied.systematics(), name="systematic"),  # (+)
            hist.axis.Regular(self.bins, 0.0, 1.0, name="score", label="tagger score"),
            storage=hist.storage.Weight(),
        )
        systematics = self.varied.systematics()  # (+) nominal and the Up templates
        for syst in systematics[:1] if is_data else systematics:  # (+)
            for region, m in (("signal", signal[good]), ("control", ~signal[good])):
                h.fill(process=dataset, region=region, systematic=syst,  # (~) syst, score
                       score=lib.flatten(scores[syst][m]) * (1 - 1e-12),
                       weight=lib.flatten(weight[good][m]))  # fmt: skip
        return {"hist": h}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


# ---------------------------------------------------------------------- the steps
def fit_signal_strength(h: hist.Hist, out: Path) -> dict[str, Any]:
    """Fit inputs with collision data as the observation, workspace and fit by cabinetry."""
    import cabinetry

    from advsyst.systematics import build_workspace, write_fit_inputs

    inputs = write_fit_inputs(out / "fit", h, signal_process="ttbar")
    model, data = cabinetry.model_utils.model_and_data(build_workspace(inputs.config_file))
    res = cabinetry.fit.fit(model, data)
    i = model.config.poi_index
    return {
        "poi": model.config.poi_name,
        "mu": float(res.bestfit[i]),
        "mu_uncertainty": float(res.uncertainty[i]),
        "converged": True,  # cabinetry.fit.fit raises when the minimisation fails
        "best_twice_nll": float(res.best_twice_nll),
        "parameters": dict(zip(res.labels, map(float, res.bestfit), strict=True)),
        "uncertainties": dict(zip(res.labels, map(float, res.uncertainty), strict=True)),
        "config": str(inputs.config_file),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--workdir", type=Path, help="samples (default: OUT)")
    p.add_argument("--events", type=int, default=400, help="events per sample")
    p.add_argument("--steps", type=int, default=200, help="tagger training steps")
    p.add_argument("--epochs", type=int, default=10, help="detector epochs")
    p.add_argument("--workers", type=int, default=1, help="dask threads in pass 2")
    p.add_argument("--bins", type=int, default=4, help="score bins of the templates")
    p.add_argument("--quick", action="store_true", help="120 events, short training/attack")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.steps, args.epochs = min(args.events, 120), 60, 3
        args.bins = min(args.bins, 2)  # tagged / untagged: every bin has simulation

    from advsyst.models import load_model, per_particle
    from advsyst.systematics import (
        VariationContext,
        build_uncertainty_table,
        write_root_histograms,
    )
    from advsyst.workflows.twopass import build_varied_scores, run_pass1, run_pass2

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    fileset = make_fileset(args.workdir or args.out, args.events, args.seed)
    for name, frac in MIX.items():  # expected yield = this process's share of pseudo-data
        meta = fileset[name]["metadata"]
        meta["lumi"] = frac * args.events / meta["xsec"]

    # pass 1: the analyst's builder; labels from metadata, weights normalised and signed
    f = run_pass1(fileset, builder=particle_builder, chunksize=100, progress=False)
    data = f["dataset"] == "data"
    sim = ~data
    n_neg = int((f["w"][sim] < 0).sum())
    print(f"pass 1: {len(f['X'])} jets x {f['X'].shape[1]} columns ({LAYOUT.n_particles} "
          f"particles x {LAYOUT.n_features} features, own builder); {n_neg} simulated jets "
          f"with negative weight")  # fmt: skip

    # the per-particle tagger, trained briefly, exported to ONNX and loaded back
    onnx_path = train_and_export(f["X"][sim], f["y"][sim], f["w"][sim], args.steps, args.seed,
                                 args.out / "tagger.onnx")  # fmt: skip
    tagger = per_particle(load_model(onnx_path), LAYOUT)
    detector = train_detector(f, sim, tagger, args.epochs, args.seed)
    options = {
        "conservattack": {"budget": "cumulative", "units": "range", "min_change": 0.01,
                          "step": 0.01, "num_bins": 20, "n_iterations": 2 if args.quick else 5,
                          "max_jsd": 0.05, "max_dfn": 0.05, "seed": args.seed,
                          "robust_binnings": None,
                          "progress": False},
        "fgsm": {"epsilon": 0.02, "units": "range"},
    }  # fmt: skip
    context = VariationContext(
        y=f["y"], weights=f["w"], control_mask=f["region_CR"],
        feature_names=LAYOUT.column_names(), detector=detector, detector_threshold=0.5,
        movable=LAYOUT.movable(f["X"]),  # (+) padded particle slots never move
    )  # fmt: skip
    varied = build_varied_scores(f, tagger, list(options), options, context=context,
                                 vary_mask=sim, data_mask=data)  # fmt: skip
    varied.save(args.out / "varied_scores.npz")
    X_adv = context.extra["conservattack_result"].X_adv
    fixed = ~LAYOUT.movable(f["X"][sim])
    padded_unchanged = bool((X_adv[fixed] == f["X"][sim][fixed]).all())
    mask_kept = bool((LAYOUT.mask(X_adv) == LAYOUT.mask(f["X"][sim])).all())
    with atomic_path(args.out / "conservattack_features.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, X=f["X"][sim], X_adv=X_adv)  # simulated jets, pass-1 order
    print(f"conservattack: padded entries unchanged: {padded_unchanged} ({int(fixed.sum())} "
          f"entries), masks kept: {mask_kept}, moved jets "
          f"{int(np.any(X_adv != f['X'][sim], axis=1).sum())} of {int(sim.sum())}")  # fmt: skip

    # the uncertainty table and the detector's data-vs-simulation efficiency
    eff = varied.detector_efficiency()
    atomic_write_json(args.out / "detector_efficiency.json", eff.to_dict())
    print(f"detector clean-jet efficiency at P(adv) < {eff.threshold:g}: simulation "
          f"{eff.mc.value:.3f} +- {eff.mc.error:.3f}, data {eff.data.value:.3f} +- "
          f"{eff.data.error:.3f} (pull {eff.pull:+.2f})")  # fmt: skip
    table = build_uncertainty_table(varied.outcomes(), budget=0.05, detector=eff)
    print(table.to_markdown(args.out / "uncertainty_table.md"))
    table.to_json(args.out / "uncertainty_table.json", config=options, seed=args.seed)

    # pass 2 in dask mode; down templates mirrored after the merge
    processes = list(fileset)
    out = run_pass2(fileset, ParticleTagAnalysis(varied, processes, args.bins), mode="dask",
                    chunksize=100, workers=args.workers, progress=False)  # fmt: skip
    h = varied.mirror_templates(out["hist"])  # (+) cabinetry's Symmetrize, after the merge
    factors = {ds: v["factor"] for ds, v in varied.provenance["pass1"]["normalization"].items()}
    h = normalise(h, factors)
    names = write_root_histograms(args.out / "templates_dask.root", h)
    print(f"wrote {len(names)} histograms to {args.out / 'templates_dask.root'}")

    fit = fit_signal_strength(h, args.out)
    atomic_write_json(args.out / "fit_result.json", fit)
    print(f"cabinetry fit: {fit['poi']} = {fit['mu']:.3f} +- {fit['mu_uncertainty']:.3f} "
          f"(-2 ln L = {fit['best_twice_nll']:.2f})")  # fmt: skip
    summary = {
        "n_jets": len(f["X"]),
        "n_columns": int(f["X"].shape[1]),
        "n_negative_weight_jets": n_neg,
        "padded_entries": int(fixed.sum()),
        "padded_unchanged": padded_unchanged,
        "masks_kept": mask_kept,
        "templates": names,
        "score_bins": args.bins,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(args.out / "summary.json", summary)
    print(f"done in {summary['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
