"""``advsyst train --data FEATURES.npz --out MODEL.pt``: train the paper's MLP tagger.

Reads ``X``, ``y`` (jets with ``y < 0``, i.e. unknown labels, are dropped) and optional
``w``/``feature_names`` from an .npz (as written by ``advsyst features``) or a CSV/parquet
table, trains :func:`advsyst.models.train_classifier` and saves a TorchScript model that
``advsyst attack --model`` takes.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from advsyst.errors import InputError

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help=".npz with X, y[, w, feature_names] or a table")
    p.add_argument("--out", required=True, help="output TorchScript model (.pt)")
    p.add_argument("--features", nargs="+", help="feature columns (CSV/parquet)")
    p.add_argument("--label", help="label column (CSV/parquet)")
    p.add_argument("--weight", help="event-weight column (CSV/parquet)")
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=[300, 102, 12, 6],
        help="hidden layer widths (default: the paper's 300 102 12 6)",
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--flatness-lambda",
        type=float,
        default=0.0,
        help="input-gradient (flatness) regulariser strength",
    )


def run(args: argparse.Namespace) -> int:
    from advsyst.attacks.cli import load_attack_data
    from advsyst.models import save_model, train_classifier

    X, y, w, names = load_attack_data(args.data, args.features, args.label, args.weight)
    if y is None:
        raise InputError(f"{args.data}: no labels (y) to train on")
    y = np.asarray(y).astype(np.int64)
    keep = y >= 0
    if not keep.all():
        log.info("dropping %d rows without a label", int((~keep).sum()))
    X, y = X[keep], y[keep]
    w = None if w is None else np.asarray(w, dtype=np.float64)[keep]
    model, hist = train_classifier(
        X,
        y,
        w,
        hidden=tuple(args.hidden),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        feature_names=names,
        flatness_lambda=args.flatness_lambda,
    )
    path = save_model(model, args.out, metadata={"history": hist.to_dict(), "data": args.data})
    auc = hist.val_auroc[hist.best_epoch] if hist.val_auroc else float("nan")
    print(f"trained on {len(X)} rows x {X.shape[1]} features; validation AUROC {auc:.4f} -> {path}")
    return 0
