"""Bytes and seconds of the sharded attack's end, by number of events.

For each n, one sharded run (LocalCluster of in-process workers) prints what the shards
sent for the final recheck from per-shard reductions (``final_bytes_from_workers``, the
AUROC's per-event scores apart), its round trips and seconds, next to the baseline
measured in the same run: the bytes of gathering the result's rows on the client
(``gather_bytes_from_workers``, what the end-of-run gather sent, without the clean X0 and
the scores the old recheck also gathered), and the bytes the shards wrote with
``output_dir``.

    python benchmarks/sharded_final_bytes.py --sizes 400 4000 40000
    python benchmarks/sharded_final_bytes.py --features 30 --bins 200 --robust --envelope 0.3
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def toy(n: int, d: int, seed: int = 4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 1] += 0.5 * X[:, 0]
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(d, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.linspace(-1.0, 2.0, d)[None, :]
        m[0].bias.zero_()
    return X, (X[:, 0] > 0).astype(int), torch.jit.script(m.eval())


def main(argv: list[str] | None = None) -> int:
    import distributed

    from advsyst.distributed import sharded_attack

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[400, 4000, 40000])
    p.add_argument("--features", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bins", type=int, default=20)
    p.add_argument(
        "--envelope", type=float, help="relative envelope (adds the exact quantile search)"
    )
    p.add_argument("--robust", action="store_true", help="robust_binnings: auto (20 binnings)")
    args = p.parse_args(argv)
    cfg = {
        "min_change": 0.01,
        "step": 0.02,
        "num_bins": args.bins,
        "n_iterations": 1,
        "max_jsd": 0.03,
        "max_dfn": 0.03,
        "block_size": 256,
        "progress": False,
        "robust_binnings": "auto" if args.robust else None,
    }
    if args.envelope is not None:
        cfg["envelope"] = {"*": {"relative": args.envelope}}
    head = (
        f"{'n':>7} {'final B':>9} {'trips':>5} {'final s':>8} {'AUROC B':>9} "
        f"{'gather B (baseline)':>20} {'gather s':>8} {'written B':>10}"
    )
    print(head)
    with (
        distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for n in args.sizes:
            X, y, model = toy(n, args.features)
            t0 = time.perf_counter()
            g = sharded_attack(client, X, model, y=y, config=cfg)
            o = sharded_attack(client, X, model, y=y, config=cfg, output_dir=f"{tmp}/{n}")
            tg, to = g.provenance["sharded"]["timing"], o.provenance["sharded"]["timing"]
            assert tg["final_bytes_from_workers"] == to["final_bytes_from_workers"]
            print(
                f"{n:>7} {to['final_bytes_from_workers']:>9} {to['final_round_trips']:>5} "
                f"{to['final']:>8.3f} {to['final_auroc_bytes_from_workers']:>9} "
                f"{tg['gather_bytes_from_workers']:>20} {tg['gather']:>8.3f} "
                f"{to['written_bytes']:>10}   ({time.perf_counter() - t0:.1f} s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
