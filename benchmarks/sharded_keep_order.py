"""Sharded CONSERVAttack with ``keep_order``: what the constraint costs, next to the same
sharded run without it and the single-process run with it, measured in one run.

Run from the repository root::

    python benchmarks/sharded_keep_order.py                 # n=20000, d=16, 4 sorted, 2 workers
    python benchmarks/sharded_keep_order.py --n 100000 --sorted 8 --workers 3

The data set is ``make_dataset`` of ``attack_throughput.py`` with the first ``--sorted``
features of every event sorted non-increasingly (a stand-in for constituent pT), a small
MLP tagger, ``optimize_already_fooled: true`` (every event attacked in every iteration),
``keep_order: [[0, ..., sorted-1]]``.  ``run_sharded`` of ``sharded_attack.py`` runs each
sharded attack (in-process dask workers, the kernels warmed first).  Reported: event-
iterations per second, bytes from the workers per round (with ``keep_order`` every
proposing row ships its per-entry bounds, 16·d bytes, as with an envelope), the setup's
bytes (``keep_order`` adds one round trip of 2 integers per group and shard), whether
``X_adv`` is bit for bit the single-process run's, and the events out of order in each
result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from advsyst.attacks import ConservAttack
from advsyst.attacks.conservattack import order_violations

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_throughput import make_dataset, train_tagger  # noqa: E402
from sharded_attack import bench_config, rate, run_sharded  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--sorted", type=int, default=4, help="features kept sorted (the first k)")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--bins", type=int, default=50)
    p.add_argument("--block-size", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2, help="tagger training epochs")
    args = p.parse_args(argv)

    X, y = make_dataset(args.n, args.d, args.seed)
    k = args.sorted
    X[:, :k] = -np.sort(-X[:, :k], axis=1)
    group = [list(range(k))]
    model, desc = train_tagger(X[:20000], y[:20000], args.seed, args.epochs, "cpu")
    cfg = bench_config(args)
    ordered = {**cfg, "keep_order": group}
    ConservAttack({**ordered, "n_iterations": 1}).run(X[:400], model)  # JIT warm-up
    t0 = time.perf_counter()
    single = ConservAttack(ordered).run(X, model)
    t_single = time.perf_counter() - t0
    runs = {
        "sharded, without keep_order": run_sharded(X, model, cfg, args.workers, False),
        "sharded, keep_order": run_sharded(X, model, ordered, args.workers, False),
    }
    groups = [np.arange(k)]
    print(f"# sharded CONSERVAttack with keep_order, n={args.n}, d={args.d}, first {k} features "
          f"sorted, {args.iterations} iterations, {args.bins} bins, block {args.block_size}, "
          f"{args.workers} in-process workers, every event active")  # fmt: skip
    print(f"machine: {os.cpu_count()} cores; tagger: {desc}")
    print()
    print("| run | event-it/s | attack s | bytes from workers / round | setup bytes from "
          "workers | events out of order | X_adv = single-process keep_order run |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    print(f"| single process, keep_order | {rate(single.history):,.0f} | "
          f"{sum(h['seconds'] for h in single.history):.2f} | - | - | "
          f"{order_violations(single.X_adv, groups)} | - |")  # fmt: skip
    out: dict[str, Any] = {"single_s": t_single, "single_rate": rate(single.history)}
    for name, r in runs.items():
        Xa = r.pop("X_adv")
        same = bool(np.array_equal(Xa, single.X_adv))
        print(f"| {name} | {r['event_iterations_per_s']:,.0f} | {r['seconds']:.2f} | "
              f"{r['bytes_from_workers_per_round']:,.0f} | {r['setup_bytes_from_workers']:,} | "
              f"{order_violations(Xa, groups)} | {'yes' if same else 'no'} |")  # fmt: skip
        out[name] = {**r, "identical_to_single": same}
    return out


if __name__ == "__main__":
    main()
