"""``advsyst demo``: the main job, end to end, on generated samples (nothing downloaded).

1. Generate tt̄ (label 1), WW (label 0) and pseudo-data samples in PFNano layout (Pythia 8
   + FastJet + a simple detector response), cached for reruns.
2. Pass 1: the coffea feature processor turns large-R jets into the 87 TopoDNN inputs.
3. Train the tagger (the paper's MLP) on half of the simulated jets.
4. Regions: the most discriminating single feature's optimal cut splits a
   background-enriched control region from the signal region.
5. CONSERVAttack on a detector-training slice and on the analysis slice of simulation.
6. Train the adversarial detector on the first; measure its clean-event efficiency on
   simulation and on pseudo-data.
7. Pass 2: fill ``hist`` objects with the nominal and every registered variation
   (conservattack, conservattack_detected, fgsm, ngm, noise, shift) per process and region.
8. Bands, the uncertainty table, the fit inputs (ROOT templates and ``cabinetry.yml``,
   usable from the output folder as it is), the pyhf workspace built from them by
   cabinetry and a cabinetry fit, plots, ``report.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advsyst._io import atomic_write_json, atomic_write_text, provenance

__all__ = ["DemoConfig", "run_demo", "add_arguments", "run"]

log = logging.getLogger(__name__)


def _default_attack() -> dict[str, Any]:
    return {
        "budget": "cumulative",
        "units": "range",
        "min_change": 0.01,
        "step": 0.01,
        "num_bins": 50,
        "n_iterations": 10,
        "alpha": 6.5,
        "beta": 1.0,
        "max_jsd_single_change": 0.05,
        "max_frob_single_change": 0.05,
        "use_no_change": True,
        # the constituent pT (pt_1 >= pt_2 >= ...) stay sorted: without it almost every
        # adversarial jet breaks the order, which makes it unphysical and easy to detect
        "keep_order": ["pt_*"],
        "progress": False,
    }


@dataclass
class DemoConfig:
    """Sizes, seeds and parameters of the demo (every field lands in ``config.json``)."""

    events: int = 8000  # generated events per simulated process
    data_events: int = 8000  # pseudo-data events (a mixture of processes)
    seed: int = 1
    sqrt_s: float = 13000.0
    workers: int = 2
    jet_collection: str = "FatJet"
    jet_min_pt: float | None = None  # processor default
    tagger_epochs: int = 20
    tagger_hidden: tuple[int, ...] = (300, 102, 12, 6)
    detector_epochs: int = 20
    # the detector also sees the constituent-pT ordering inputs (advsyst.workflows.detector)
    detector_order_inputs: bool = True
    attack: dict[str, Any] = field(default_factory=_default_attack)
    fgsm_epsilon: float = 0.01  # in units of each feature's range
    noise_sigma: float = 0.01
    shift_epsilon: float = 0.02
    working_point: float = 0.5
    detector_clean_efficiency: float = 0.9  # sets the detector threshold on clean simulation
    physics_budget: float = 0.05  # the analysis' physics-systematic budget on the tagged yield
    restrict_to_control: bool = False
    cache_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Steps:
    """Per-step log lines with timings (the demo's progress report)."""

    def __init__(self, total: int):
        self.total, self.i, self.t0, self.times = total, 0, time.perf_counter(), {}

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        if self.i:
            self.times[self.name] = now - self.t_step
        self.i += 1
        self.name, self.t_step = what, now
        log.info("[%d/%d] %s (%.0fs elapsed)", self.i, self.total, what, now - self.t0)

    def done(self) -> dict[str, float]:
        self.times[self.name] = time.perf_counter() - self.t_step
        return self.times


def _sample_plan(cfg: DemoConfig) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Sample name -> (cache path, generate_sample keywords); the path encodes every setting."""
    cache = Path(
        cfg.cache_dir or os.environ.get("ADVSYST_CACHE", Path.home() / ".cache" / "advsyst")
    )
    s = int(cfg.sqrt_s)
    plan = {
        "ttbar": dict(process="ttbar", n_events=cfg.events, seed=cfg.seed, pseudo_data=False),
        "ww": dict(process="ww", n_events=cfg.events, seed=cfg.seed + 1, pseudo_data=False),
        "data": dict(process="mix", n_events=cfg.data_events, seed=cfg.seed + 2, pseudo_data=True),
    }
    return {
        name: (cache / f"{name}_{kw['n_events']}ev_seed{kw['seed']}_{s}GeV_w{cfg.workers}.root", kw)
        for name, kw in plan.items()
    }


def _missing_samples(cfg: DemoConfig) -> list[str]:
    return [name for name, (path, _) in _sample_plan(cfg).items() if not path.exists()]


def _samples(cfg: DemoConfig, steps: _Steps) -> dict[str, Path]:
    """Generate the samples that are not cached yet; return every sample's path."""
    from advsyst.data import generate_sample

    paths = {}
    for name, (path, kw) in _sample_plan(cfg).items():
        if path.exists():
            log.info("using cached sample %s", path)
        else:
            steps(f"generating {kw['n_events']} {name} events")
            path.parent.mkdir(parents=True, exist_ok=True)
            generate_sample(out=path, sqrt_s=cfg.sqrt_s, workers=cfg.workers, progress=True, **kw)
        paths[name] = path
    return paths


def _features(paths: dict[str, Path], cfg: DemoConfig) -> tuple[dict, dict]:
    from advsyst.processors.run import extract_features

    opts = {"jet_collection": cfg.jet_collection, "schema": "pfnano", "executor": "iterative"}
    if cfg.jet_min_pt is not None:
        opts["jet_min_pt"] = cfg.jet_min_pt
    sim = extract_features(
        {
            "ttbar": {
                "files": {str(paths["ttbar"]): "Events"},
                "metadata": {"label": 1, "is_data": False},
            },
            "ww": {
                "files": {str(paths["ww"]): "Events"},
                "metadata": {"label": 0, "is_data": False},
            },
        },
        **opts,
    )
    data = extract_features(
        {
            "data": {
                "files": {str(paths["data"]): "Events"},
                "metadata": {"label": None, "is_data": True},
            }
        },
        **opts,
    )
    return sim, data


def run_demo(out: str | os.PathLike[str], cfg: DemoConfig | None = None) -> dict[str, Any]:
    """Run the whole chain; returns a summary dict (also in ``out/summary.json``)."""
    import advsyst.systematics as S
    from advsyst.attacks import ConservAttack
    from advsyst.attacks.metrics import auroc
    from advsyst.models import save_model, train_classifier
    from advsyst.systematics import plots
    from advsyst.systematics.variations import CACHE_KEY
    from advsyst.workflows.detector import ordered_columns, train_detector

    cfg = cfg or DemoConfig()
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    steps = _Steps(11 + len(_missing_samples(cfg)))
    rng = np.random.default_rng(cfg.seed)

    paths = _samples(cfg, steps)
    steps("pass 1: coffea feature processor over the samples")
    sim, data = _features(paths, cfg)
    names = [str(n) for n in sim["feature_names"]]
    X, y, w = sim["X"].astype(np.float64), sim["y"].astype(np.int64), sim["w"].astype(np.float64)
    proc = sim["dataset"].astype(str)
    log.info(
        "simulation: %d jets (%d tt̄, %d WW) x %d features; pseudo-data: %d jets",
        len(X),
        int((proc == "ttbar").sum()),
        int((proc == "ww").sum()),
        X.shape[1],
        len(data["X"]),
    )
    # splits by a seeded permutation: half tagger training, a quarter for the detector's
    # own attack, a quarter for the analysis (attack + histograms)
    perm = rng.permutation(len(X))
    q = len(X) // 4
    i_train, i_det, i_ana = (
        np.sort(perm[: 2 * q]),
        np.sort(perm[2 * q : 3 * q]),
        np.sort(perm[3 * q :]),
    )

    steps(f"training the tagger on {len(i_train)} jets")
    tagger, thist = train_classifier(
        X[i_train],
        y[i_train],
        w[i_train],
        hidden=cfg.tagger_hidden,
        epochs=cfg.tagger_epochs,
        seed=cfg.seed,
        feature_names=names,
        progress=True,
    )
    tagger.eval()
    save_model(tagger, out / "tagger.pt", metadata={"role": "tagger", "history": thist.to_dict()})
    from advsyst.attacks.model import as_adapter

    adapter = as_adapter(tagger, n_features=X.shape[1])
    auc_test = auroc(y[i_ana], adapter.scores(X[i_ana]), w[i_ana])
    log.info("tagger AUROC on the analysis slice: %.4f", auc_test)

    steps("regions: optimal single-feature cut")
    Xa, ya, wa, pa = X[i_ana], y[i_ana], w[i_ana], proc[i_ana]
    split = S.optimal_cut_regions(Xa, ya, wa, feature_names=names)
    masks = split.masks(Xa)

    attack_cfg = dict(cfg.attack, seed=cfg.seed)
    steps(f"CONSERVAttack on the detector-training slice ({len(i_det)} jets)")
    det_attack = ConservAttack(attack_cfg).run(
        X[i_det], tagger, weights=w[i_det], feature_names=names
    )
    steps("training the adversarial detector")
    det = train_detector(
        X[i_det],
        det_attack.X_adv,
        w[i_det],
        moved=det_attack.moved,
        seed=cfg.seed,
        epochs=cfg.detector_epochs,
        feature_names=names,
        ordered_features=ordered_columns(names) if cfg.detector_order_inputs else None,
        progress=True,
    )
    # working point: the threshold that keeps `detector_clean_efficiency` of the held-out
    # clean simulated jets of the detector slice unflagged
    threshold = float(
        np.quantile(det.p_adversarial(X[i_det[det.test_events]]), cfg.detector_clean_efficiency)
    )
    det.threshold = threshold
    log.info(
        "detector threshold %.4f keeps %.0f%% of held-out clean jets unflagged",
        threshold,
        100 * cfg.detector_clean_efficiency,
    )
    save_model(
        det.model, out / "detector.pt", metadata={"role": "adversarial detector", **det.to_dict()}
    )

    steps(f"CONSERVAttack on the analysis slice ({len(i_ana)} jets, all processes together)")
    ana_opts = dict(attack_cfg)
    constraint = masks["control"] if cfg.restrict_to_control else None
    attack = ConservAttack(ana_opts).run(
        Xa, tagger, weights=wa, constraint_mask=constraint, feature_names=names
    )
    attack.save(out / "attack_result.npz")

    steps("detector efficiency on simulation and pseudo-data")
    p_mc = det.p_adversarial(Xa)
    p_data = det.p_adversarial(data["X"].astype(np.float64))
    w_data = data["w"].astype(np.float64)
    thr, eff_mc, err_mc = S.detector_efficiency_curve(p_mc, wa)
    _, eff_data, err_data = S.detector_efficiency_curve(p_data, w_data, thr)
    deff = S.detector_efficiency(p_mc, threshold, wa, p_data, w_data)
    cmp = S.compare_data_mc(eff_mc, err_mc, eff_data, err_data)

    steps("pass 2: histograms with every registered variation")
    variations = ["conservattack", "conservattack_detected", "fgsm", "ngm", "noise", "shift"]
    options = {
        "conservattack": ana_opts
        | ({"restrict_to_control": True} if cfg.restrict_to_control else {}),
        "conservattack_detected": ana_opts
        | ({"restrict_to_control": True} if cfg.restrict_to_control else {}),
        "fgsm": {"epsilon": cfg.fgsm_epsilon, "units": "range"},
        "ngm": {"epsilon": cfg.fgsm_epsilon, "units": "range"},
        "noise": {"sigma": cfg.noise_sigma, "seed": cfg.seed, "units": "range"},
        "shift": {"epsilon": cfg.shift_epsilon},
    }
    ctx = S.VariationContext(
        weights=wa,
        control_mask=masks["control"],
        detector=det.model,
        detector_threshold=threshold,
        seed=cfg.seed,
        feature_names=names,
    )
    ctx.extra[CACHE_KEY] = attack  # the analysis attack above: reused, not rerun
    ctx.extra["conservattack_options"] = options["conservattack"]
    h, outcomes = S.evaluate_dataset(
        Xa, tagger, variations, ctx, options, processes=pa, region_masks=masks
    )
    bands = {
        p: {
            v: {k: b.to_dict() for k, b in S.yield_bands(o, cfg.working_point).items()}
            for v, o in ov.items()
        }
        for p, ov in outcomes.items()
    }

    steps("uncertainty table, fit inputs, workspace and fit through cabinetry")
    table = S.build_uncertainty_table(
        outcomes, budget=cfg.physics_budget, working_point=cfg.working_point, detector=deff
    )
    table.to_markdown(out / "uncertainty_table.md")
    table.to_csv(out / "uncertainty_table.csv")
    table.to_json(out / "uncertainty_table.json", seed=cfg.seed, config=cfg.to_dict())
    # the demo has no collision data normalised like the simulation: the observation is
    # the Asimov data set ({region}_asimov_nominal in histograms.root)
    fit_inputs = S.write_fit_inputs(
        out,
        h,
        signal_process="ttbar",
        systematics=["conservattack", "conservattack_detected"],
    )
    hist_names = fit_inputs.histograms
    ws, fit = _workspace_and_fit(fit_inputs, h)
    S.write_workspace(out / "workspace.json", ws)

    steps("plots")
    jsd = np.asarray(attack.metrics["jsd"])
    made = [
        plots.plot_score_variations(
            h, out / "plots" / f"score_{p}_conservattack.png", process=p, variation="conservattack"
        )
        for p in outcomes
    ]
    made += [
        plots.plot_marginals(
            Xa, attack.X_adv, jsd, out / "plots" / "marginals.png", feature_names=names, weights=wa
        ),
        plots.plot_correlation_matrices(
            Xa, attack.X_adv, out / "plots" / "correlations.png", weights=wa
        ),
        plots.plot_attack_history(attack.history, out / "plots" / "attack_history.png"),
        plots.plot_detector_efficiency(
            thr,
            eff_mc,
            err_mc,
            eff_data,
            err_data,
            out / "plots" / "detector_efficiency.png",
            label_mc="simulation (clean)",
            label_data="pseudo-data",
        ),
    ]

    steps("report")
    times = steps.done()
    summary = {
        "n_jets": {
            "simulation": int(len(X)),
            "pseudo_data": int(len(data["X"])),
            "train": int(len(i_train)),
            "detector": int(len(i_det)),
            "analysis": int(len(i_ana)),
        },
        "tagger": {"auroc_analysis": float(auc_test), "best_epoch": thist.best_epoch},
        "regions": {k: v for k, v in split.to_dict().items() if k != "auroc"},
        "attack": attack.summary(),
        "attack_history": attack.history,
        "detector": {
            "auroc": det.auroc,
            "threshold": threshold,
            "efficiency": deff.to_dict(),
            "curve_comparison": cmp,
        },
        "bands": bands,
        "table": table.to_dict(),
        "fit": fit,
        "histograms": hist_names,
        "plots": [str(p) for p in made],
        "seconds": times,
    }
    atomic_write_json(
        out / "config.json",
        provenance(cfg.to_dict(), cfg.seed, samples={k: str(v) for k, v in paths.items()}),
    )
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", _report(summary, cfg, table.to_markdown(), names))
    log.info("done in %.0fs; outputs in %s", sum(times.values()), out)
    return summary


def _workspace_and_fit(fit_inputs: Any, h: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workspace built by cabinetry from ``cabinetry.yml`` and cabinetry's fit of it;
    without cabinetry (not installed: it is in the ``analysis`` extra) the same model
    built directly and fitted with pyhf."""
    import advsyst.systematics as S

    try:
        import cabinetry
    except ImportError:
        cabinetry = None
    if cabinetry is None:
        import pyhf

        log.warning("cabinetry is not installed: building the workspace directly with pyhf")
        ws = S.build_pyhf_workspace(
            h,
            signal_process="ttbar",
            data="asimov",
            systematics=["conservattack", "conservattack_detected"],
            empty_bins="keep",
        )
        model = pyhf.Workspace(ws).model()
        data = pyhf.Workspace(ws).data(model)
        bestfit, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
        pars = model.config.par_names
        unc = [float("nan")] * len(pars)
        builder = "advsyst.systematics.build_pyhf_workspace (cabinetry not installed)"
    else:
        quiet = logging.getLogger("cabinetry")  # its per-parameter fit printout, at INFO
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            ws = S.build_workspace(fit_inputs.config_file)
            model, data = cabinetry.model_utils.model_and_data(ws)
            res = cabinetry.fit.fit(model, data)
        finally:
            quiet.setLevel(level)
        pars, bestfit, unc = list(res.labels), res.bestfit, res.uncertainty
        twice_nll = res.best_twice_nll
        builder = "cabinetry.templates.collect + cabinetry.workspace.build, cabinetry.fit.fit"
    ipoi = model.config.poi_index
    return ws, {
        "poi": model.config.poi_name,
        "poi_bestfit": float(bestfit[ipoi]),
        "poi_uncertainty": float(unc[ipoi]),
        "twice_nll": float(twice_nll),
        "parameters": list(pars),
        "builder": builder,
        "config": fit_inputs.config_file.name,
    }


def _fmt(x: Any, nd: int = 4) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _report(s: dict[str, Any], cfg: DemoConfig, table_md: str, names: list[str]) -> str:
    a, d, r = s["attack"], s["detector"], s["regions"]
    eff = d["efficiency"]
    jsd_note = "cumulative (every feature's JSD and the ΔFN of the returned set)"
    lines = [
        "# advsyst demo report",
        "",
        "Every number below comes from `summary.json` in this folder; the configuration, seeds "
        "and package versions are in `config.json`.",
        "",
        "## Samples and tagger",
        f"- Simulated large-R jets: {s['n_jets']['simulation']} (tt̄ = label 1, WW = label 0); "
        f"pseudo-data jets: {s['n_jets']['pseudo_data']} (different tune and detector response, "
        "no labels, no genWeight).",
        f"- Split: {s['n_jets']['train']} jets train the tagger, {s['n_jets']['detector']} feed the "
        f"detector's own attack, {s['n_jets']['analysis']} form the analysis sample.",
        f"- Tagger AUROC on the analysis sample: **{s['tagger']['auroc_analysis']:.4f}** "
        "(area under the ROC curve of tt̄ vs WW; 0.5 = no separation).",
        "",
        "## Regions",
        f"- Control/signal split on `{r.get('feature_name') or r.get('feature')}` at "
        f"{_fmt(r.get('threshold'))}: the single input feature whose optimal cut separates the "
        "classes best; the background-enriched side is the control region.",
        "",
        "## CONSERVAttack",
        f"- Budget mode: {jsd_note}; limits JSD ≤ {cfg.attack['max_jsd_single_change']}, "
        f"ΔFN ≤ {cfg.attack['max_frob_single_change']}.",
        f"- Fooling ratio: **{a['fooling_ratio']:.4f}** = fraction of analysis jets whose predicted "
        "class flips.",
        f"- Largest per-feature JSD to the clean histogram: {a['jsd_max']:.4g}; mean {a['jsd_mean']:.4g}.",
        f"- ΔFN = ‖C_adv − C_clean‖_F / ‖C_clean‖_F = {a['dfn']:.4g} (relative change of the "
        "Pearson correlation matrix).",
        f"- Jets moved: {a['moved_fraction']:.3f} of the analysis sample; "
        f"attack time {a['seconds']:.1f}s.",
        "",
        "## Adversarial detector",
        f"- AUROC on held-out clean/adversarial pairs: **{d['auroc']:.4f}** (0.5 = cannot tell).",
        f"- Working point: P(adversarial) ≥ {d['threshold']:.4f} flags a jet; this threshold keeps "
        f"{cfg.detector_clean_efficiency:.0%} of held-out clean simulated jets unflagged.",
        f"- Clean-event efficiency at that threshold (fraction of clean jets "
        f"*not* flagged): simulation {eff['mc']['value']:.4f} ± {eff['mc']['error']:.4f}, "
        f"pseudo-data {(eff['data'] or {}).get('value', float('nan')):.4f} ± "
        f"{(eff['data'] or {}).get('error', float('nan')):.4f}; pull {eff['pull']:.2f} — "
        "a large pull means the detector sees data and simulation differently.",
        "",
        "## Uncertainty table",
        f"Tagged yield = weighted jets with score ≥ {cfg.working_point}. Fooling ratio (FR) = "
        "weighted fraction of jets whose class flips; corrected FR counts only flips the detector "
        "does not flag. The verdict compares them with the physics-systematic budget "
        f"({cfg.physics_budget}) as documented in `advsyst.systematics.tables`. The band is "
        "the tagged yield × (1 ± FR of the tagged jets of that region and process).",
        "",
        table_md,
        "",
        "## Fit",
        f"- Maximum-likelihood fit of `workspace.json` (built by: {s['fit']['builder']}) to "
        f"Asimov data: {s['fit']['poi']} = {s['fit']['poi_bestfit']:.4f} ± "
        f"{s['fit']['poi_uncertainty']:.4f} (expected 1).",
        '- Reproduce it from this folder: `python -c "import cabinetry; '
        "cabinetry.templates.collect(cabinetry.configuration.load('cabinetry.yml'))\"`, "
        "then `cabinetry workspace cabinetry.yml ws.json` and `cabinetry fit ws.json`.",
        "",
        "## Outputs",
        "- `histograms.root`: templates `{region}_{process}_{variation}`; a variation "
        "without down features has its `Down` template mirrored bin by bin around the "
        "nominal (cabinetry's `Symmetrize` convention, floored at 0); the observation is "
        "`{region}_asimov_nominal`.",
        "- `cabinetry.yml`: cabinetry configuration for these templates (relative paths: "
        "run cabinetry from this folder).",
        "- `workspace.json`: the pyhf workspace cabinetry builds from it, the adversarial "
        "systematics as normsys + histosys.",
        "- `uncertainty_table.{md,csv,json}`, `plots/*.png`, `tagger.pt`, `detector.pt`, "
        "`attack_result.npz`.",
        "",
        "## Timings (s)",
        *[f"- {k}: {v:.1f}" for k, v in s["seconds"].items()],
        "",
    ]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--events", type=int, default=d.events, help="events per simulated process")
    p.add_argument("--data-events", type=int, help="pseudo-data events (default: --events)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="generation processes")
    p.add_argument("--sqrt-s", type=float, default=d.sqrt_s)
    p.add_argument("--epochs", type=int, default=d.tagger_epochs, help="tagger/detector epochs")
    p.add_argument(
        "--restrict-to-control",
        action="store_true",
        help="monitor the attack's statistics in the control region only",
    )
    p.add_argument("--cache-dir", help="sample cache (default ~/.cache/advsyst or $ADVSYST_CACHE)")


def run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        events=args.events,
        data_events=args.data_events or args.events,
        seed=args.seed,
        workers=args.workers,
        sqrt_s=args.sqrt_s,
        tagger_epochs=args.epochs,
        detector_epochs=args.epochs,
        restrict_to_control=args.restrict_to_control,
        cache_dir=args.cache_dir,
    )
    s = run_demo(args.out, cfg)
    out = Path(args.out)
    print(
        f"advsyst demo: tagger AUROC {s['tagger']['auroc_analysis']:.3f}, fooling ratio "
        f"{s['attack']['fooling_ratio']:.3f}, detector AUROC {s['detector']['auroc']:.3f}"
    )
    print(
        f"outputs in {out.resolve()}: report.md, histograms.root, cabinetry.yml, workspace.json, "
        "uncertainty_table.{md,csv,json}, plots/"
    )
    return 0
