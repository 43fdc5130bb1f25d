"""``advsyst attack ... --workers N | --scheduler tcp://HOST:PORT [--checkpoint DIR |
--resume DIR]``: the sharded attack from the command line, same outputs as ``advsyst attack``
(``OUTDIR/adversarial.npz``, ``OUTDIR/attack_result.npz``, ``OUTDIR/report.json``).

:func:`add_sharded_arguments` adds the options to the ``attack`` parser and
:func:`wants_sharded` / :func:`run_sharded` dispatch; until ``advsyst.attacks.cli`` calls
them, ``python -m advsyst.distributed.cli`` is the same command with these options.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from advsyst._io import atomic_savez, atomic_write_json, provenance
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


def wants_sharded(args: argparse.Namespace) -> bool:
    """Did the command line ask for the sharded attack?"""
    return any(
        getattr(args, k, None) is not None
        for k in ("scheduler", "workers", "checkpoint", "resume", "shards")
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
    from advsyst.attacks.cli import _validation_scan, load_attack_data, load_config
    from advsyst.attacks.config import ConservAttackConfig
    from advsyst.distributed._engine_glue import check_supported
    from advsyst.distributed.sharded import sharded_attack
    from advsyst.models import load_model

    if args.checkpoint and args.resume and Path(args.checkpoint) != Path(args.resume):
        raise InputError("--checkpoint and --resume name different directories")
    cfg = load_config(args.config)
    if args.device:
        cfg["device"] = args.device
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.no_progress:
        cfg["progress"] = False
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
        )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    out = Path(args.out)
    m = res.metrics
    scan = _validation_scan(X, res, w, names, getattr(args, "scan_bootstrap", 200))
    report = {
        "fooling_ratio": m["fooling_ratio"],
        "jsd_mean": m["jsd_mean"],
        "jsd_max": m["jsd_max"],
        "dfn": m["dfn"],
        "n_events": m["n_events"],
        "n_features": m["n_features"],
        "seconds": m["seconds"],
        "binning_scan": scan,
        "negative_slots": m.get("negative_slots"),
        "envelope": m.get("envelope"),
        "metrics": m,
        "history": res.history,
        "feature_names": names,
        "inputs": {
            "model": os.path.abspath(args.model),
            "data": os.path.abspath(args.data),
            "config": os.path.abspath(args.config) if args.config else None,
        },
        "sharded": res.provenance["sharded"],
        **provenance(res.config, res.seed),
    }
    atomic_savez(out / "adversarial.npz", X_adv=res.X_adv, fooled=res.fooled)
    res.save(out / "attack_result.npz")
    atomic_write_json(out / "report.json", report)  # last: its presence marks a complete run
    print(
        f"fooling ratio {m['fooling_ratio']:.4f}, JSD max {m['jsd_max']:.3g}, dFN {m['dfn']:.3g}"
        f" ({res.provenance['sharded']['n_shards']} shards) -> {out}/adversarial.npz, "
        f"{out}/report.json"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from advsyst.attacks.cli import add_arguments

    p = argparse.ArgumentParser(
        prog="python -m advsyst.distributed.cli", description="the sharded advsyst attack"
    )
    add_arguments(p)
    add_sharded_arguments(p)
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
