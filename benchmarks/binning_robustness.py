"""Is the adversarial set visible under binnings the attack never saw?

Run from the repository root::

    python benchmarks/binning_robustness.py --quick     # n=4000, d=8, < 5 minutes on 2 cores
    python benchmarks/binning_robustness.py             # n=11000, d=30 (the issue's setting)

For each option of the JSD budget the script attacks the same seeded data set (correlated
Gaussian features with a few heavy tails, a small MLP tagger trained in the script,
cumulative budget JSD <= ``--max-jsd`` on the attack's own ``--bins`` bins and
ΔFN <= ``--max-dfn``) and prints one table row: the fooling ratio, the worst ratio
JSD(clean, adversarial) / resolution over a scan of unseen equal-width binnings
(:func:`advsyst.stats.validation.binning_scan`: 50..200 bins, 6 offsets; resolution =
95th percentile of JSD(clean, Poisson-bootstrap resample of clean) at that binning), the
feature/binning where it happens, and the attack's seconds.  Acceptance: worst ratio < 1.

Options (``ConservAttackConfig`` keys):

* ``paper``: ``robust_binnings: null`` (one binning, the paper's);
* ``offsets``: the own bin count at offsets 1/4, 1/2, 3/4 too, each limited to ``max_jsd``;
* ``multi``: 50, 71, 100, 141, 200 bins × offsets 0, 1/2 (10 binnings), each limited to
  ``max_jsd`` (``robust_noise_fraction: null``);
* ``multi+res<f>``: the same binnings, each limited to f × its resolution (the own one
  also to ``max_jsd``);
* ``dense+res0.5``: **the default** (``robust_binnings: auto``, ``robust_noise_fraction:
  0.5``): 50, 71, 100, 141, 200 bins × offsets 0, 1/4, 1/2, 3/4 (20 binnings), each below
  0.5 × its resolution, the own one also below ``max_jsd``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_throughput import make_dataset, train_tagger  # noqa: E402

from advsyst.attacks import ConservAttack  # noqa: E402
from advsyst.stats.validation import binning_scan  # noqa: E402

#: 50, 71, 100, 141, 200 bins at offsets 0 and 1/2
MULTI = [[k, o] for k in (50, 71, 100, 141, 200) for o in (0.0, 0.5)]
OPTIONS = {
    "paper": dict(robust_binnings=None),
    "offsets": dict(robust_noise_fraction=None, robust_binnings="own-offsets"),
    "multi": dict(robust_binnings=MULTI, robust_noise_fraction=None),
    "multi+res0.8": dict(robust_binnings=MULTI, robust_noise_fraction=0.8),
    "multi+res0.5": dict(robust_binnings=MULTI, robust_noise_fraction=0.5),
    "multi+res0.4": dict(robust_binnings=MULTI, robust_noise_fraction=0.4),
    "dense+res0.5": dict(robust_binnings="auto", robust_noise_fraction=0.5),  # the default
}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n=4000, d=8, 3 iterations")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--bins", type=int, default=100)
    p.add_argument("--max-jsd", type=float, default=0.02)
    p.add_argument("--max-dfn", type=float, default=0.05)
    p.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    n = a.n or (4000 if a.quick else 11000)
    d = a.d or (8 if a.quick else 30)
    iters = a.iterations or (3 if a.quick else 10)
    X, y = make_dataset(n, d, a.seed)
    X[:, ::3] = np.sign(X[:, ::3]) * np.abs(X[:, ::3]) ** 1.5  # heavier tails, like pT-ish
    model, _ = train_tagger(X, y, a.seed, 3, "cpu")
    rows = []
    print(
        f"n={n} d={d} iterations={iters} own bins={a.bins} max_jsd={a.max_jsd} "
        f"max_dfn={a.max_dfn} (cumulative)"
    )
    head = f"{'option':<14}{'fooling':>9}{'worst JSD/res':>15}{'at (feat, bins, off)':>24}"
    print(head + f"{'own-bin JSD max':>17}{'seconds':>9}")
    for name in a.options:
        opt = dict(OPTIONS[name])
        if opt.get("robust_binnings") == "own-offsets":
            opt["robust_binnings"] = [[a.bins, o] for o in (0.25, 0.5, 0.75)]
        cfg = dict(
            min_change=0.02, step=0.05, num_bins=a.bins, n_iterations=iters,
            max_jsd=a.max_jsd, max_dfn=a.max_dfn, progress=False, seed=a.seed, **opt,
        )  # fmt: skip
        t0 = time.perf_counter()
        res = ConservAttack(cfg).run(X, model, y=y)
        sec = time.perf_counter() - t0
        scan = binning_scan(X, res.X_adv, seed=a.seed + 1)
        w = scan.worst()
        row = {
            "option": name,
            "fooling_ratio": res.metrics["fooling_ratio"],
            "worst_ratio": w["ratio"],
            "worst": w,
            "own_jsd_max": res.metrics["jsd_max"],
            "seconds": sec,
        }
        rows.append(row)
        where = f"({w['feature']}, {w['bins']}, {w['offset']:.2f})"
        print(
            f"{name:<14}{row['fooling_ratio']:>9.4f}{w['ratio']:>15.3f}{where:>24}"
            f"{row['own_jsd_max']:>17.4f}{sec:>9.1f}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
