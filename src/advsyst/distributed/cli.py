"""``advsyst attack ... --workers N | --scheduler tcp://HOST:PORT [--checkpoint DIR |
--resume DIR] [--shard-output DIR]``: the sharded attack from the command line, same outputs
as ``advsyst attack`` (``OUTDIR/adversarial.npz``, ``OUTDIR/attack_result.npz``,
``OUTDIR/report.json``); with ``--shard-output DIR`` every shard writes its rows to
``DIR/shard-XXXX.npz`` on its worker instead, and ``OUTDIR/report.json`` lists them.

:func:`add_sharded_arguments` adds the options to the ``attack`` parser and
:func:`wants_sharded` / :func:`run_sharded` dispatch from ``advsyst attack``;
``python -m advsyst.distributed.cli`` is the same command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from advsyst.errors import AdvsystError, InputError

__all__ = ["add_sharded_arguments", "wants_sharded", "run_sharded", "build_parser", "main"]

log = logging.getLogger(__name__)


def add_sharded_arguments(p: argparse.ArgumentParser) -> None:
    """The sharded-attack options of ``advsyst attack``."""
    g = p.add_argument_group("sharded attack (dask.distributed)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run sharded on an existing dask cluster")
    g.add_argument(
        "--workers", type=int, metavar="N", help="run sharded on a LocalCluster of N workers"
    )
    g.add_argument("--shards", type=int, metavar="S", help="number of shards (default: workers)")
    g.add_argument("--checkpoint", metavar="DIR", help="checkpoint after every round into DIR")
    g.add_argument("--resume", metavar="DIR", help="resume the run checkpointed in DIR")
    g.add_argument(
        "--shard-output",
        metavar="DIR",
        help="every shard writes its rows to DIR/shard-XXXX.npz on its worker (storage the "
        "workers share) instead of adversarial.npz/attack_result.npz on the client; "
        "OUTDIR/report.json lists the files",
    )
    g.add_argument(
        "--scorer",
        choices=("auto", "numba", "torch"),
        help="candidate scoring on the workers: numba (CPU), torch (CUDA where the worker has a "
        "GPU, else CPU), auto (default: torch on CUDA where the worker has a GPU, else numba)",
    )


def wants_sharded(args: argparse.Namespace) -> bool:
    """Did the command line ask for the sharded attack?"""
    return any(
        getattr(args, k, None) is not None
        for k in ("scheduler", "workers", "checkpoint", "resume", "shards", "shard_output")
    )


def _client(args: argparse.Namespace) -> tuple[Any, Any]:
    import distributed

    if args.scheduler and args.workers:
        raise InputError("give either --scheduler (existing cluster) or --workers N, not both")
    if args.scheduler:
        try:
            return distributed.Client(args.scheduler, timeout="30s"), None
        except OSError as exc:
            raise InputError(f"cannot reach the dask scheduler {args.scheduler!r}: {exc}") from exc
    n = args.workers if args.workers is not None else 1
    if n < 1:
        raise InputError(f"--workers must be >= 1, got {n}")
    threads = max(1, (os.cpu_count() or 1) // n)
    cluster = distributed.LocalCluster(
        n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=None
    )
    return distributed.Client(cluster), cluster


def run_sharded(args: argparse.Namespace) -> int:
    """``advsyst attack`` with the sharded attack; the same output files."""
    from advsyst.attacks.cli import build_report, config_from_args, load_attack_data, write_outputs
    from advsyst.attacks.config import ConservAttackConfig
    from advsyst.distributed._engine_glue import check_supported
    from advsyst.distributed.sharded import sharded_attack
    from advsyst.models import load_model

    if args.checkpoint and args.resume and Path(args.checkpoint) != Path(args.resume):
        raise InputError("--checkpoint and --resume name different directories")
    cfg = config_from_args(args)
    check_supported(ConservAttackConfig.from_dict(cfg))  # before any heavy work
    X, y, w, names = load_attack_data(
        args.data, args.features, args.label, args.weight, args.sentinel
    )
    for k, v in (("y", y), ("w", w)):
        if v is not None and len(v) != len(X):
            raise InputError(f"{args.data}: {k} has {len(v)} entries but X has {len(X)} rows")
    model = load_model(args.model, device="cpu")
    client, cluster = _client(args)
    try:
        log.info(
            "sharded attack of %d events x %d features from %s on %d workers",
            X.shape[0], X.shape[1], args.data, len(client.scheduler_info()["workers"]),
        )  # fmt: skip
        res = sharded_attack(
            client,
            X,
            model,
            y=y,
            weights=w,
            feature_names=names,
            config=cfg,
            n_shards=args.shards,
            checkpoint_dir=args.resume or args.checkpoint,
            resume=args.resume is not None,
            scorer=getattr(args, "scorer", None) or "auto",
            output_dir=getattr(args, "shard_output", None),
        )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if getattr(args, "shard_output", None) is not None:
        # the rows stay in the shard files: no validation scan (it needs them on the client)
        extra = {
            "sharded": res.provenance["sharded"],
            "shard_files": [os.fspath(p) for p in res.paths],
            "binning_scan_note": "not computed with --shard-output (it needs every row on "
            "the client): run advsyst.stats.binning_scan on ShardedAttackResult.load()",
        }
        from advsyst._io import atomic_write_json

        atomic_write_json(
            Path(args.out) / "report.json", build_report(args, names, res, None, extra)
        )
        m = res.metrics
        print(
            f"fooling ratio {m['fooling_ratio']:.4f}, JSD max {m['jsd_max']:.3g}, dFN "
            f"{m['dfn']:.3g} ({len(res.paths)} shards) -> {args.shard_output}/shard-*.npz, "
            f"{args.out}/report.json"
        )
        return 0
    write_outputs(
        args,
        X,
        w,
        names,
        res,
        extra={"sharded": res.provenance["sharded"]},
        note=f" ({res.provenance['sharded']['n_shards']} shards)",
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from advsyst.attacks.cli import add_arguments

    p = argparse.ArgumentParser(
        prog="python -m advsyst.distributed.cli", description="the sharded advsyst attack"
    )
    add_arguments(p)  # includes add_sharded_arguments
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[advsyst %(asctime)s] %(message)s")
    try:
        return run_sharded(args)
    except AdvsystError as exc:
        print(f"advsyst attack: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
