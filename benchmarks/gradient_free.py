"""What gradient-free (finite-difference) attacks cost, next to torch autograd, in one run.

Run from the repository root::

    python benchmarks/gradient_free.py --quick     # n=4000, d=30, 2 iterations, ~1 minute
    python benchmarks/gradient_free.py             # n=20000, d=30, 3 iterations
    python benchmarks/gradient_free.py --json out.json

One seeded synthetic data set (correlated Gaussian features, labels from a noisy
non-linear rule) and, trained in the script:

* the paper's MLP tagger (``advsyst.models.Classifier``, 300-102-12-6, batch norm), used
  as a torch module (autograd), as its ONNX export evaluated by onnxruntime with gradients
  through the torch replay of the graph (autograd), and as the same ONNX file with
  finite differences forced;
* an xgboost BDT (``predict_proba``, sign of finite differences) and a scikit-learn
  gradient-boosted classifier exported to ONNX by skl2onnx (onnxruntime, sign of finite
  differences).

For each it prints model rows per event for one gradient (forward passes; autograd also
does one backward pass), seconds of one gradient on all n events, and a short CONSERVAttack
run (cumulative budget): seconds per iteration, model rows per attacked event and
iteration, fooling ratio.  For the MLP the fraction of finite-difference signs that agree
with autograd is printed too.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch

from advsyst._io import atomic_write_json
from advsyst.attacks import ConservAttack, as_adapter
from advsyst.models import Classifier, load_model


def make_dataset(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian features and labels from a noisy non-linear rule."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    X = rng.normal(size=(n, d)) @ A
    X = (X - X.mean(0)) / X.std(0)
    z = X[:, 0] + 0.8 * X[:, 1] * X[:, 2] - 0.5 * X[:, 3] ** 2 + 0.3 * rng.normal(size=n)
    return X, (z > np.median(z)).astype(np.int64)


def train_mlp(X: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Classifier:
    torch.manual_seed(seed)
    m = Classifier(X.shape[1], mean=X.mean(0), std=X.std(0))
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(512):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy(m(Xt[idx])[:, 0], yt[idx]).backward()
            opt.step()
    return m.eval()


def export_onnx(m: torch.nn.Module, d: int, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m, (torch.zeros(2, d),), str(path), dynamo=False, input_names=["x"],
            output_names=["p"], dynamic_axes={"x": {0: "n"}, "p": {0: "n"}},
        )  # fmt: skip
    return path


def measure(name: str, model: Any, X: np.ndarray, y: np.ndarray, cfg: dict, **kw) -> dict:
    """One gradient on all events, then a short attack, with model-row accounting."""
    a = as_adapter(model, n_features=X.shape[1], batch_size=cfg["batch_size"], **kw)
    target = a.predict(X)
    a.calls = a.rows = 0
    t0 = time.perf_counter()
    g = a.loss_gradient(X, target)
    t_grad = time.perf_counter() - t0
    rows_grad = a.rows / len(X)
    a.calls = a.rows = 0
    res = ConservAttack(cfg).run(X, a, y=y)
    hist = res.history
    attacked = sum(h["events_attacked"] for h in hist)
    return {
        "model": name,
        "gradient": getattr(
            a,
            "gradient_mode",
            "autograd" if type(a).__name__ == "ModelAdapter" else "finite-difference sign",
        ),  # fmt: skip
        "rows_per_event_gradient": rows_grad,
        "seconds_gradient": t_grad,
        "seconds_per_iteration": float(np.mean([h["seconds"] for h in hist])),
        "rows_per_attacked_event_iteration": a.rows / max(attacked, 1),
        "fooling_ratio": res.metrics["fooling_ratio"],
        "jsd_max": res.metrics["jsd_max"],
        "_grad": g,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n=4000, 2 iterations")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=30)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write every number here")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.iterations = 4000, 2
    import sklearn
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = make_dataset(args.n, args.d, args.seed)
    ntrain = min(len(X), 20000)
    t0 = time.perf_counter()
    mlp = train_mlp(X[:ntrain], y[:ntrain], epochs=3, seed=args.seed)
    bdt = xgboost.XGBClassifier(n_estimators=100, max_depth=4, random_state=args.seed)
    bdt.fit(X[:ntrain], y[:ntrain])
    gbc = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=args.seed)
    gbc.fit(X[:ntrain], y[:ntrain])
    print(f"# trained the taggers in {time.perf_counter() - t0:.1f} s")
    cfg = {"min_change": 0.005, "step": 0.05, "num_bins": 50, "n_iterations": args.iterations,
           "max_jsd_single_change": 0.02, "max_frob_single_change": 0.02,
           "budget": "cumulative", "progress": False, "batch_size": 65536, "seed": args.seed}  # fmt: skip
    rows = []
    with TemporaryDirectory() as tmp:
        onnx_mlp = export_onnx(mlp, args.d, Path(tmp) / "mlp.onnx")
        onx = to_onnx(gbc, X[:1].astype(np.float32), options={"zipmap": False})
        (Path(tmp) / "gbc.onnx").write_bytes(onx.SerializeToString())
        ConservAttack(dict(cfg, n_iterations=1)).run(X[:200], mlp)  # warm the numba JIT
        rows.append(measure("MLP, torch", mlp, X, y, cfg))
        rows.append(measure("MLP, ONNX", load_model(onnx_mlp), X, y, cfg))
        rows.append(
            measure("MLP, ONNX", load_model(onnx_mlp), X, y, cfg, gradient="finite-difference")
        )
        rows.append(measure("BDT, xgboost", bdt, X, y, cfg))
        rows.append(measure("BDT, sklearn->ONNX", load_model(Path(tmp) / "gbc.onnx"), X, y, cfg))
    ref = rows[0]["_grad"]
    big = np.abs(ref) > 1e-3 * np.abs(ref).max()
    for r in rows[1:3]:
        r["sign_agreement_with_autograd"] = float(
            (np.sign(r["_grad"][big]) == np.sign(ref[big])).mean()
        )
    for r in rows:
        r["nonzero_gradient_fraction"] = float((r.pop("_grad") != 0).mean())
    print(f"# n={args.n} d={args.d} iterations={args.iterations} threads={torch.get_num_threads()}"
          f" torch {torch.__version__} xgboost {xgboost.__version__} sklearn {sklearn.__version__}")  # fmt: skip
    print("| model | gradient | rows/event (1 gradient) | s (1 gradient, all n) "
          "| s/iteration (attack) | rows/attacked event-iteration (whole run) | nonzero grad | "
          "sign = autograd | fooling ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        agree = r.get("sign_agreement_with_autograd")
        print(
            f"| {r['model']} | {r['gradient']} | {r['rows_per_event_gradient']:.0f} | "
            f"{r['seconds_gradient']:.3f} | {r['seconds_per_iteration']:.2f} | "
            f"{r['rows_per_attacked_event_iteration']:.0f} | {r['nonzero_gradient_fraction']:.2f} | "
            f"{'-' if agree is None else f'{agree:.3f}'} | {r['fooling_ratio']:.3f} |"
        )
    base = rows[0]["seconds_gradient"]
    for r in rows[1:]:
        print(f"# {r['model']} ({r['gradient']}): one gradient costs "
              f"{r['seconds_gradient'] / base:.1f}x torch autograd")  # fmt: skip
    if args.json:
        atomic_write_json(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
