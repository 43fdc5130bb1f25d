"""Why is the detector weak?  Measure its held-out AUROC and corrected fooling ratio per cause.

On the prepared tt̄ vs WW study sample (see ``common.prepare``), one attack of the
detector-training slice and one of the test slice per budget mode, then detector variants:

* ``paper``          the paper's detector: features only, trained on fooled adversaries,
                     Table 22 MLP, threshold 0.5 (the reference every change is measured against)
* ``moved``          trained on every moved event (what the demo does) instead of fooled ones
* ``+score``         the detector also sees the tagger's logit
* ``margin only``    no training: P(adv) = 1 - |2 p - 1| (adversaries sit at the tagger's
                     decision boundary) -- a baseline that needs no detector at all
* ``epochs=60``      longer training, ``wide`` (512, 256, 64) MLP
* ``gbdt``           a gradient-boosted tree detector (scikit-learn), another architecture
* ``cal90``          the paper's detector with the working point calibrated to keep 90 % of
                     held-out clean jets (the demo's working point)

Corrected fooling ratio = weighted fraction of test jets that are fooled *and* not flagged.

    python examples/paper/diagnose_detector.py --quick --workdir out/
"""

from __future__ import annotations

import json
import time

import common
import numpy as np

from advsyst.attacks.cli import load_attack_data, load_config
from advsyst.attacks.conservattack import ConservAttack
from advsyst.attacks.metrics import auroc
from advsyst.attacks.model import as_adapter
from advsyst.models import load_model
from advsyst.workflows.detector import train_detector
from advsyst.workflows.robustness import _stratified_split
from advsyst.workflows.studies import detector_inputs

BUDGETS = {
    "per_change (paper Table 14)": "paper_table14_ttww_detector.yaml",
    "cumulative (demo)": "cumulative_demo.yaml",
}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], quick_runs=1, full_runs=1)
    p.add_argument("--variants", nargs="+")
    p.add_argument("--budgets", nargs="+", choices=list(BUDGETS), default=list(BUDGETS))
    args = p.parse_args()
    events, _ = common.sizes(args)
    paths = common.prepare(args.workdir, events, args.seed, args.epochs)
    X, y, w, _ = load_attack_data(str(paths["data"]))
    tagger = load_model(paths["model"])
    tr, te = _stratified_split(y, 0.5, args.seed)
    rows: list[dict] = []
    for budget in args.budgets:
        cfg = load_config(str(common.CONFIGS / BUDGETS[budget])) | {"progress": False}
        t0 = time.perf_counter()
        a_tr = ConservAttack(cfg).run(X[tr], tagger, weights=w[tr])
        t_attack = time.perf_counter() - t0
        a_te = ConservAttack(cfg).run(X[te], tagger, weights=w[te])
        print(f"{budget}: fooling ratio train {a_tr.fooling_ratio:.3f}, test "
              f"{a_te.fooling_ratio:.3f}; attack {1e3 * t_attack / len(tr):.2f} ms/jet "
              f"({len(tr)} jets, {t_attack:.0f}s)", flush=True)  # fmt: skip
        _variants(args, X, w, tr, te, tagger, a_tr, a_te, budget, rows)
    print()
    print("| budget | detector | AUROC | corrected FR | clean eff. | threshold |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['budget']} | {r['variant']} | {r['auroc']:.3f} | {r['corrected_fr']:.3f} "
              f"| {r['clean_eff']:.3f} | {r['thr']:.3f} |")  # fmt: skip


def _variants(args, X, w, tr, te, tagger, a_tr, a_te, budget: str, rows: list[dict]) -> None:
    """Train and score every detector variant on one budget mode's adversaries."""
    sel = a_te.fooled
    wte = w[te]

    def score(pc: np.ndarray, pa: np.ndarray, thr: float) -> dict:
        yy = np.r_[np.zeros(sel.sum()), np.ones(sel.sum())]
        auc = auroc(yy, np.r_[pc[sel], pa[sel]], np.r_[wte[sel], wte[sel]])
        corr = (wte * (a_te.fooled & (pa < thr))).sum() / wte.sum()
        eff = (wte * (pc < thr)).sum() / wte.sum()
        return {"auroc": auc, "corrected_fr": corr, "clean_eff": eff, "thr": thr}

    def nn(name: str, mode: str = "features", **kw) -> None:
        if args.variants and name not in args.variants:
            return
        t1 = time.perf_counter()
        select = kw.pop("select", "fooled")
        cal = kw.pop("cal", None)
        m = a_tr.fooled if select == "fooled" else a_tr.moved
        Xc = detector_inputs(X[tr], tagger, mode)
        Xa = detector_inputs(a_tr.X_adv, tagger, mode)
        det = train_detector(Xc, Xa, w[tr], moved=m, seed=args.seed, progress=False,
                             train_fraction=0.8, **kw)  # fmt: skip
        f = lambda Z: as_adapter(det.model, n_features=Z.shape[1]).scores(Z)  # noqa: E731
        pc = f(detector_inputs(X[te], tagger, mode))
        pa = f(detector_inputs(a_te.X_adv, tagger, mode))
        thr = 0.5
        if cal is not None:
            thr = float(np.quantile(f(Xc[det.test_events]), cal))
        rows.append({"budget": budget, "variant": name, **score(pc, pa, thr),
                     "pairs": int(len(det.train_events)),
                     "seconds": time.perf_counter() - t1})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    nn("paper")
    nn("moved", select="moved")
    nn("+score", "features+score")
    nn("cal90", cal=0.9)
    nn("+score cal90", "features+score", cal=0.9)
    nn("epochs=60", epochs=60)
    nn("wide", hidden=(512, 256, 64))
    if not args.variants or "margin only" in args.variants:
        ad = as_adapter(tagger, n_features=X.shape[1])
        pc = 1 - np.abs(2 * ad.scores(X[te]) - 1)
        pa = 1 - np.abs(2 * ad.scores(a_te.X_adv) - 1)
        rows.append({"budget": budget, "variant": "margin only", **score(pc, pa, 0.5)})
        print(json.dumps(rows[-1]), flush=True)
    if not args.variants or "gbdt" in args.variants:
        from sklearn.ensemble import HistGradientBoostingClassifier

        m = a_tr.fooled
        Xp = np.r_[X[tr][m], a_tr.X_adv[m]]
        yp = np.r_[np.zeros(m.sum()), np.ones(m.sum())]
        g = HistGradientBoostingClassifier(max_iter=300, random_state=args.seed).fit(Xp, yp)
        pc, pa = g.predict_proba(X[te])[:, 1], g.predict_proba(a_te.X_adv)[:, 1]
        rows.append({"budget": budget, "variant": "gbdt", **score(pc, pa, 0.5)})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
