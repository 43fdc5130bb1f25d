"""Training of :class:`~advsyst.models.mlp.Classifier` with weighted cross-entropy.

Adam, per-event weights, a stratified validation split, early stopping on the weighted
validation loss (the best weights are restored), and an optional flatness regulariser in
the spirit of the loss-surface paper (``papers/stein_loss_surface_2303.14511.txt``): the
penalty ``flatness_lambda * mean_i ||d loss_i / d z_i||^2`` on the input gradient of each
event's loss, computed by double back-propagation.  ``z`` is the standardised input the
network sees, so the penalty does not depend on the units of the raw features.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from advsyst.attacks.metrics import auroc
from advsyst.attacks.model import resolve_device
from advsyst.errors import InputError
from advsyst.models.mlp import DEFAULT_HIDDEN, Classifier, Standardize

__all__ = ["TrainHistory", "train_classifier"]

log = logging.getLogger(__name__)


@dataclass
class TrainHistory:
    """Per-epoch record of a training run.

    ``train_loss`` is the weighted cross-entropy averaged over the epoch (without the
    flatness penalty, which is in ``train_penalty``); ``val_loss`` and ``val_auroc`` are
    evaluated in eval mode after each epoch (NaN without a validation split).
    ``best_epoch`` is 0-based; the returned model holds that epoch's weights.
    """

    train_loss: list[float] = field(default_factory=list)
    train_penalty: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_auroc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (NaN becomes ``None``)."""
        out = asdict(self)
        for key in ("train_loss", "train_penalty", "val_loss", "val_auroc", "epoch_seconds"):
            out[key] = [None if not np.isfinite(v) else float(v) for v in out[key]]
        return out


# ---------------------------------------------------------------------- validation
def _column_names(bad_cols: np.ndarray, feature_names: Sequence[str] | None) -> str:
    cols = [int(c) for c in bad_cols]
    if feature_names is not None:
        return ", ".join(f"{feature_names[c]!r} (column {c})" for c in cols[:20])
    return ", ".join(str(c) for c in cols[:20]) + (" ..." if len(cols) > 20 else "")


def _validate(
    X: Any, y: Any, w: Any, feature_names: Sequence[str] | None, n_classes: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D (events, features) array, got shape {X.shape}")
    n, d = X.shape
    if feature_names is not None and len(feature_names) != d:
        raise InputError(f"{len(feature_names)} feature names given for {d} feature columns")
    bad = ~np.isfinite(X)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        raise InputError(
            f"X contains NaN/inf in {int(bad.sum())} entries, feature column(s) "
            f"{_column_names(cols, feature_names)}"
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"y has shape {y.shape} but X has {n} events")
    y = y.astype(np.float64)
    if not np.isfinite(y).all() or (y != np.round(y)).any() or (y < 0).any():
        raise InputError("y must hold non-negative integer class labels (0/1 for binary)")
    y = y.astype(np.int64)
    classes = np.unique(y)
    if len(classes) < 2:
        raise InputError(f"y holds a single class ({classes.tolist()}); need at least two")
    k = int(n_classes) if n_classes is not None else max(2, int(y.max()) + 1)
    if y.max() >= k:
        raise InputError(f"label {int(y.max())} out of range for n_classes={k}")
    if w is None:
        w = np.ones(n)
    else:
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if len(w) != n:
            raise InputError(f"w has {len(w)} entries but X has {n} events")
        if not np.isfinite(w).all():
            raise InputError("w (event weights) contains NaN/inf")
        if w.sum() <= 0:
            raise InputError("w (event weights) must have a positive sum")
    return X, y, w, k


def _split(y: np.ndarray, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Stratified train/validation split of the event indices."""
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(val_fraction * len(idx)))
        n_val = min(n_val, len(idx) - 1)  # keep every class in training
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ---------------------------------------------------------------------- losses
def _per_event_loss(z: torch.Tensor, yb: torch.Tensor, n_classes: int) -> torch.Tensor:
    if n_classes == 2:
        return F.binary_cross_entropy_with_logits(z[:, 0], yb.to(z.dtype), reduction="none")
    return F.cross_entropy(z, yb, reduction="none")


def _evaluate(
    model: Classifier, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    model.eval()
    losses, scores = [], []
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            z = model.logits(X[s : s + batch_size])
            losses.append(_per_event_loss(z, y[s : s + batch_size], model.n_classes))
            scores.append(z)
    loss = torch.cat(losses)
    wsum = float(w.sum())
    val_loss = float((loss * w).sum()) / wsum if wsum > 0 else float("nan")
    z = torch.cat(scores).cpu().numpy().astype(np.float64)
    yn, wn = y.cpu().numpy(), w.cpu().numpy().astype(np.float64)
    if len(np.unique(yn)) < 2:
        return val_loss, float("nan")
    if model.n_classes == 2:
        return val_loss, auroc(yn, z[:, 0], wn)
    # k classes: mean one-vs-rest AUROC of the logits
    aucs = [auroc(yn == c, z[:, c], wn) for c in range(model.n_classes) if (yn == c).any()]
    return val_loss, float(np.mean(aucs))


# ---------------------------------------------------------------------- training
def train_classifier(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    *,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    val_fraction: float = 0.2,
    seed: int = 0,
    patience: int = 5,
    feature_names: Sequence[str] | None = None,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
    flatness_lambda: float = 0.0,
    batchnorm: bool = True,
    dropout: float = 0.0,
    n_classes: int | None = None,
) -> tuple[Classifier, TrainHistory]:
    """Train a :class:`Classifier` on raw features with weighted cross-entropy.

    Parameters
    ----------
    X, y, w
        Features ``(n, d)``, integer labels ``(n,)`` (0/1 for binary) and optional
        per-event weights (negative ones allowed).  A batch's loss is
        ``sum(w * l) / (batch size * mean training weight)``; the validation loss is
        ``sum(w * l) / sum(w)``.
    hidden, batchnorm, dropout
        Architecture (see :func:`~advsyst.models.mlp.build_mlp`).
    epochs, batch_size, lr, weight_decay
        Adam settings; ``epochs`` is the maximum number of epochs.
    val_fraction
        Fraction of each class held out for validation and early stopping (0 disables
        both: the last epoch is kept).
    seed
        Seeds the split, the initial weights, the batch order and dropout; the global
        torch RNG is left as it was.
    patience
        Epochs without a lower validation loss before stopping.
    feature_names
        Stored in the model and used in error messages.
    progress
        Log one INFO line per epoch (DEBUG otherwise).
    device
        Training device (``"auto"`` picks CUDA when available).
    flatness_lambda
        Weight of the input-gradient (flatness) penalty; 0 disables it.
    n_classes
        Number of classes; inferred from ``y`` by default (2 unless labels exceed 1).

    Returns
    -------
    (model, history)
        The model in eval mode on ``device`` with the best validation weights, and a
        :class:`TrainHistory`.
    """
    t_start = time.perf_counter()
    X, y, w, k = _validate(X, y, w, feature_names, n_classes)
    if int(epochs) < 1 or int(batch_size) < 1 or int(patience) < 1:
        raise InputError(
            f"epochs, batch_size and patience must be >= 1, got {epochs}, {batch_size}, {patience}"
        )
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if float(flatness_lambda) < 0:
        raise InputError(f"flatness_lambda must be >= 0, got {flatness_lambda}")
    dev = resolve_device(device)
    emit = log.info if progress else log.debug
    config = {
        "hidden": [int(h) for h in hidden],
        "batchnorm": bool(batchnorm),
        "dropout": float(dropout),
        "n_classes": k,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "val_fraction": float(val_fraction),
        "patience": int(patience),
        "flatness_lambda": float(flatness_lambda),
        "n_events": int(len(X)),
        "n_features": int(X.shape[1]),
        "device": str(dev),
    }
    history = TrainHistory(seed=int(seed), config=config)
    rng = np.random.default_rng(seed)
    if val_fraction > 0:
        tr_idx, va_idx = _split(y, float(val_fraction), rng)
    else:
        tr_idx, va_idx = np.arange(len(y)), np.zeros(0, dtype=np.int64)

    std = Standardize.from_data(X[tr_idx], feature_names=feature_names)
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(seed))
        model = Classifier(
            X.shape[1],
            hidden=hidden,
            batchnorm=batchnorm,
            dropout=dropout,
            n_classes=k,
            mean=std.mean.numpy(),
            std=std.std.numpy(),
            feature_names=feature_names,
        ).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

        def to_t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=dev)

        Xt, yt, wt = (
            to_t(X[tr_idx], torch.float32),
            to_t(y[tr_idx], torch.long),
            to_t(w[tr_idx], torch.float32),
        )
        Xv, yv, wv = (
            to_t(X[va_idx], torch.float32),
            to_t(y[va_idx], torch.long),
            to_t(w[va_idx], torch.float32),
        )
        best_loss, best_state, bad_epochs = float("inf"), None, 0
        w_mean = float(w[tr_idx].mean())
        if w_mean <= 0:
            raise InputError("the training events' weights must have a positive sum")
        lam = float(flatness_lambda)
        for epoch in range(int(epochs)):
            t0 = time.perf_counter()
            model.train()
            order = torch.as_tensor(rng.permutation(len(Xt)), device=dev)
            sum_loss = sum_pen = sum_w = 0.0
            for s in range(0, len(order), int(batch_size)):
                idx = order[s : s + int(batch_size)]
                if batchnorm and len(idx) < 2:  # BatchNorm cannot train on one event
                    continue
                xb, yb, wb = Xt[idx], yt[idx], wt[idx]
                # normalise by the mean training weight, not the batch's own sum: stable
                # with negative (NLO generator) weights and small batches
                denom = len(idx) * w_mean
                if lam > 0:
                    zin = model.standardize(xb).detach().requires_grad_(True)
                    per = _per_event_loss(model.net(zin), yb, k)
                    (g,) = torch.autograd.grad(per.sum(), zin, create_graph=True)
                    pen = ((g * g).sum(dim=1) * wb).sum() / denom
                else:
                    per = _per_event_loss(model.logits(xb), yb, k)
                    pen = torch.zeros((), device=dev)
                loss = (per * wb).sum() / denom
                opt.zero_grad(set_to_none=True)
                (loss + lam * pen).backward()
                opt.step()
                sum_loss += float(loss.detach()) * denom
                sum_pen += float(pen.detach()) * denom
                sum_w += denom
            history.train_loss.append(sum_loss / sum_w if sum_w else float("nan"))
            history.train_penalty.append(sum_pen / sum_w if sum_w else float("nan"))
            if len(va_idx):
                vl, va = _evaluate(model, Xv, yv, wv, max(int(batch_size), 4096))
            else:
                vl, va = float("nan"), float("nan")
            history.val_loss.append(vl)
            history.val_auroc.append(va)
            history.epoch_seconds.append(time.perf_counter() - t0)
            emit(
                "epoch %d/%d: train loss %.5f%s, val loss %.5f, val AUROC %.4f (%.2fs)",
                epoch + 1,
                int(epochs),
                history.train_loss[-1],
                f" (+ flatness {history.train_penalty[-1]:.4g})" if lam > 0 else "",
                vl,
                va,
                history.epoch_seconds[-1],
            )
            if len(va_idx) == 0:  # no validation: keep the last epoch
                history.best_epoch = epoch
                continue
            if vl < best_loss:
                best_loss, bad_epochs, history.best_epoch = vl, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= int(patience):
                    history.stopped_early = True
                    emit(
                        "early stopping after epoch %d (best epoch %d)",
                        epoch + 1,
                        history.best_epoch + 1,
                    )
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:  # no (finite) validation loss: the last epoch is kept
        history.best_epoch = history.n_epochs - 1
    model.eval()
    history.seconds = time.perf_counter() - t_start
    return model, history
