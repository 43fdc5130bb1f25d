"""``advsyst attack --model MODEL.pt --data DATA.npz --config CONFIG.yaml --out OUTDIR``.

Writes ``OUTDIR/adversarial.npz`` (``X_adv``, ``fooled``), ``OUTDIR/report.json`` (metrics,
configuration, versions) and ``OUTDIR/attack_result.npz`` (the full :class:`AttackResult`).

``report.json`` also carries ``binning_scan``: the worst JSD between the clean and the
adversarial constraint set found over a scan of equal-width binnings the attack did not use
(:func:`advsyst.stats.validation.binning_scan`, continuous features only), next to the
statistical resolution (95th percentile of the bootstrap JSD) at that binning.
Every input is validated before anything is written and each file is written atomically,
so a failure leaves no half-written output.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from advsyst._io import atomic_savez, atomic_write_json, provenance
from advsyst.errors import ConfigError, InputError

__all__ = ["add_arguments", "run", "load_attack_data", "load_config", "write_outputs"]

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="tagger file: TorchScript (.pt), ONNX (.onnx) or xgboost (.json/.ubj)",
    )
    p.add_argument(
        "--data", required=True, help="features: .npz (X, y, optional w) or .csv/.parquet"
    )
    p.add_argument("--config", help="YAML file with ConservAttackConfig keys (Table 2 names)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--features", nargs="+", help="feature columns (CSV/parquet)")
    p.add_argument("--label", help="label column (CSV/parquet)")
    p.add_argument("--weight", help="event-weight column (CSV/parquet)")
    p.add_argument("--sentinel", type=float, help="missing-value sentinel in tables, e.g. -999")
    p.add_argument("--device", help="override config device (cpu, cuda, auto)")
    p.add_argument("--seed", type=int, help="override config seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--scan-bootstrap",
        type=int,
        default=200,
        help="bootstrap resamples per binning of the validation scan (0: no scan)",
    )
    from advsyst.distributed.cli import add_sharded_arguments

    add_sharded_arguments(p)  # --workers / --scheduler / --checkpoint / --resume


def load_config(path: str | None) -> dict[str, Any]:
    """Read a YAML mapping of attack parameters (empty file -> defaults)."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read config {path!r}: {exc.strerror}") from exc
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path!r} is not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"config {path!r} must be a mapping of parameter names to values")
    return cfg


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``--config`` with the command line's ``--device``, ``--seed`` and ``--no-progress``
    applied on top (one place for both the single-process and the sharded attack)."""
    cfg = load_config(args.config)
    if args.device:
        cfg["device"] = args.device
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.no_progress:
        cfg["progress"] = False
    return cfg


def load_attack_data(
    path: str,
    features: list[str] | None = None,
    label: str | None = None,
    weight: str | None = None,
    sentinel: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, list[str] | None]:
    """Return (X, y, w, feature_names) from an .npz, or a CSV/parquet table."""
    if not os.path.exists(path):
        raise InputError(f"data file {path!r} does not exist")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if "X" not in z:
                    raise InputError(f"{path!r} has no array 'X' (found {sorted(z.files)})")
                X = np.asarray(z["X"], dtype=np.float64)
                y = z["y"] if "y" in z else None
                w = z["w"] if "w" in z else None
                names = [str(s) for s in z["feature_names"]] if "feature_names" in z else None
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path!r} as .npz: {exc}") from exc
        return X, y, w, names
    from advsyst.data import load_table

    t = load_table(path, features=features, label=label, weight=weight, sentinel=sentinel)
    return t.X, t.y, t.w, list(t.feature_names)


def run(args: argparse.Namespace) -> int:
    from advsyst.attacks.conservattack import ConservAttack
    from advsyst.distributed.cli import run_sharded, wants_sharded
    from advsyst.models import load_model

    if wants_sharded(args):
        return run_sharded(args)
    if getattr(args, "scorer", None) is not None:
        raise InputError(
            "--scorer chooses the candidate scorer of the sharded attack: add --workers N or "
            "--scheduler ADDRESS (the single-process attack always scores with numba)"
        )
    cfg = config_from_args(args)
    attack = ConservAttack(cfg)  # validates the keys before any heavy work
    X, y, w, names = load_attack_data(
        args.data, args.features, args.label, args.weight, args.sentinel
    )
    if y is not None and len(y) != len(X):
        raise InputError(f"{args.data}: y has {len(y)} entries but X has {len(X)} rows")
    if w is not None and len(w) != len(X):
        raise InputError(f"{args.data}: w has {len(w)} entries but X has {len(X)} rows")
    model = load_model(
        args.model, device=attack.config.device if attack.config.device != "auto" else "cpu"
    )
    log.info("attacking %d events x %d features from %s", X.shape[0], X.shape[1], args.data)
    res = attack.run(X, model, y=y, weights=w, feature_names=names)
    write_outputs(args, X, w, names, res)
    return 0


def write_outputs(
    args: argparse.Namespace,
    X: np.ndarray,
    w: np.ndarray | None,
    names: list[str] | None,
    res: Any,
    extra: dict[str, Any] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """``OUTDIR/adversarial.npz``, ``OUTDIR/attack_result.npz`` and, last (its presence marks
    a complete run), ``OUTDIR/report.json``; every file atomically.  Returns the report."""
    out = Path(args.out)
    scan = _validation_scan(X, res, w, names, getattr(args, "scan_bootstrap", 200))
    report = build_report(args, names, res, scan, extra)
    atomic_savez(out / "adversarial.npz", X_adv=res.X_adv, fooled=res.fooled)
    res.save(out / "attack_result.npz")
    atomic_write_json(out / "report.json", report)
    m = res.metrics
    worst = f"; unseen binnings: worst JSD/resolution {scan['worst']['ratio']:.3g}" if scan else ""
    print(
        f"fooling ratio {m['fooling_ratio']:.4f}, JSD max {m['jsd_max']:.3g}, dFN {m['dfn']:.3g}"
        f"{worst}{note} -> {out}/adversarial.npz, {out}/report.json"
    )
    return report


def build_report(
    args: argparse.Namespace,
    names: list[str] | None,
    res: Any,
    scan: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``OUTDIR/report.json`` (metrics, history, scan, inputs, provenance)."""
    m = res.metrics
    return {
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
        **(extra or {}),
        **provenance(res.config, res.seed),
    }


def _validation_scan(
    X: np.ndarray, res: Any, w: np.ndarray | None, names: list[str] | None, n_bootstrap: int
) -> dict[str, Any] | None:
    """The binning scan of the constraint set (continuous features), JSON-ready."""
    if n_bootstrap <= 0:
        return None
    from advsyst.stats.validation import binning_scan

    cm = res.constraint_mask
    disc = set(res.metrics.get("discrete_features", []))
    feats = [j for j in range(X.shape[1]) if j not in disc]
    ww = None if w is None else np.asarray(w, dtype=np.float64)[cm]
    seed = 0 if res.seed is None else int(res.seed)
    log.info("validation scan over unseen binnings (%d bootstrap resamples each)", n_bootstrap)
    scan = binning_scan(
        X[cm], res.X_adv[cm], ww, features=feats, n_bootstrap=n_bootstrap, seed=seed
    )
    out = scan.to_dict(names)
    out["worst_jsd"] = out["worst"]["jsd"]
    out["noise_floor_at_worst"] = out["worst"]["floor"]
    return out
