"""The adversarial detector: an MLP trained to tell clean events from adversarial ones.

Following the paper (Section 8, Appendix C), the detector has the tagger's architecture
and is trained on pairs: the clean version of each attacked event (label 0) and its
adversarial version (label 1).  Events the attack did not move are left out (both
versions are identical).  A held-out half measures the detector's AUROC; its clean-event
efficiency (fraction of clean events *not* flagged) on simulation and on data is the
quantity compared between the two.

Beyond the paper, :func:`train_detector` can also show the detector *ordering-consistency*
inputs (``ordered_features``): for columns that every clean event holds in non-increasing
order (the TopoDNN constituent transverse momenta ``pt_1 >= pt_2 >= ...``), the adjacent
differences and their total positive part.  The attack moves each feature independently and
breaks that order in almost every adversarial jet, which a plain MLP on the raw features
learns only poorly.  The returned model (:class:`DetectorNet`) takes the raw features and
computes these inputs itself, so it is used and saved like any other detector.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advsyst.attacks.metrics import auroc
from advsyst.attacks.model import as_adapter
from advsyst.errors import InputError
from advsyst.models import Classifier, TrainHistory, train_classifier

__all__ = [
    "DetectorResult",
    "DetectorNet",
    "train_detector",
    "flag_adversarial",
    "ordered_columns",
    "order_inputs",
]

log = logging.getLogger(__name__)

#: the detector needs at least this many moved events to learn anything
MIN_ADVERSARIAL_EVENTS = 20


def ordered_columns(feature_names: Sequence[str] | None, prefix: str = "pt_") -> list[int]:
    """Column indices of ``{prefix}1, {prefix}2, ...`` in numeric order (``[]`` if fewer than 2).

    For the TopoDNN inputs these are the constituent transverse momenta, sorted
    non-increasingly in every clean jet.
    """
    if not feature_names:
        return []
    pat = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    found = sorted(
        (int(m.group(1)), i) for i, n in enumerate(feature_names) if (m := pat.match(str(n)))
    )
    return [i for _, i in found] if len(found) >= 2 else []


def order_inputs(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` with the ordering-consistency inputs appended: the adjacent differences
    ``x[:, index[k+1]] - x[:, index[k]]`` (<= 0 for a sorted event) and their total positive
    part.  ``index`` with fewer than two entries returns ``x`` unchanged."""
    if index.numel() < 2:
        return x
    v = x.index_select(1, index)
    d = v[:, 1:] - v[:, :-1]
    return torch.cat([x, d, torch.relu(d).sum(dim=1, keepdim=True)], dim=1)


class DetectorNet(torch.nn.Module):
    """A detector :class:`Classifier` that computes its extra inputs from the raw features.

    ``n_features`` is the raw input width; ``logits``/``forward`` follow the
    :class:`Classifier` conventions, so adapters, thresholds and ``save_model`` work as for
    a plain detector.
    """

    def __init__(self, net: Classifier, n_features: int, order_index: Sequence[int]) -> None:
        super().__init__()
        self.net = net
        self.n_features = int(n_features)
        self.advsyst_output = "probability"
        self.register_buffer("order_index", torch.as_tensor(list(order_index), dtype=torch.long))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise RuntimeError(
                "DetectorNet expects input of shape (n, "
                + str(self.n_features)
                + "), got "
                + str(list(x.shape))
            )
        return self.net.logits(order_inputs(x, self.order_index))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


@dataclass
class DetectorResult:
    """A trained detector and how well it separates held-out clean/adversarial pairs."""

    model: Classifier
    history: TrainHistory
    auroc: float
    threshold: float
    train_events: np.ndarray
    test_events: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def p_adversarial(self, X: np.ndarray) -> np.ndarray:
        """P(adversarial) per event."""
        return as_adapter(self.model, n_features=X.shape[1]).scores(X)

    def to_dict(self) -> dict[str, Any]:
        return {
            "auroc": self.auroc,
            "threshold": self.threshold,
            "n_train_events": int(len(self.train_events)),
            "n_test_events": int(len(self.test_events)),
            "history": self.history.to_dict(),
            **self.info,
        }


def train_detector(
    X_clean: np.ndarray,
    X_adv: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    moved: np.ndarray | None = None,
    train_fraction: float = 0.5,
    threshold: float = 0.5,
    seed: int = 0,
    hidden: tuple[int, ...] = (300, 102, 12, 6),
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    feature_names: list[str] | None = None,
    ordered_features: Sequence[int] | None = None,
    progress: bool = True,
) -> DetectorResult:
    """Train the clean-vs-adversarial MLP on paired events.

    Parameters
    ----------
    X_clean, X_adv
        Clean and attacked features of the same events (n, d).
    moved
        Events the attack changed (default: rows that differ).
    train_fraction
        Fraction of moved events used for training; the rest measure the AUROC.
    ordered_features
        Columns every clean event holds in non-increasing order (see
        :func:`ordered_columns`); the detector then also sees :func:`order_inputs` and the
        returned model is a :class:`DetectorNet` taking the raw features.
    """
    X_clean = np.asarray(X_clean, dtype=np.float64)
    X_adv = np.asarray(X_adv, dtype=np.float64)
    if X_clean.shape != X_adv.shape:
        raise InputError(f"clean {X_clean.shape} and adversarial {X_adv.shape} shapes differ")
    n = len(X_clean)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights must have shape ({n},), got {w.shape}")
    if moved is None:
        moved = (X_clean != X_adv).any(axis=1)
    idx = np.nonzero(moved)[0]
    if len(idx) < MIN_ADVERSARIAL_EVENTS:
        raise InputError(
            f"only {len(idx)} events were moved by the attack; the detector needs at least "
            f"{MIN_ADVERSARIAL_EVENTS} (loosen the attack budget or use more events)"
        )
    rng = np.random.default_rng(seed)
    idx = rng.permutation(idx)
    n_train = int(round(train_fraction * len(idx)))
    tr, te = np.sort(idx[:n_train]), np.sort(idx[n_train:])

    def pairs(ev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = np.concatenate([X_clean[ev], X_adv[ev]])
        y = np.concatenate([np.zeros(len(ev), np.int64), np.ones(len(ev), np.int64)])
        return X, y, np.concatenate([w[ev], w[ev]])

    Xtr, ytr, wtr = pairs(tr)
    order = [int(i) for i in (ordered_features or [])]
    if order and (min(order) < 0 or max(order) >= X_clean.shape[1] or len(set(order)) < len(order)):
        raise InputError(
            f"ordered_features must be distinct column indices below {X_clean.shape[1]}, "
            f"got {order}"
        )
    index = torch.as_tensor(order, dtype=torch.long)
    if len(order) >= 2:
        Xtr = order_inputs(torch.as_tensor(Xtr), index).numpy()
        if feature_names is not None:
            feature_names = [*feature_names, *[f"order_{k}" for k in range(len(order))]]
    log.info("training the adversarial detector on %d clean/adversarial pairs", len(tr))
    model, hist = train_classifier(
        Xtr,
        ytr,
        wtr,
        hidden=hidden,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        feature_names=feature_names,
        progress=progress,
    )
    if len(order) >= 2:
        model = DetectorNet(model, X_clean.shape[1], order)
    model.eval()
    auc = float("nan")
    if len(te):
        Xte, yte, wte = pairs(te)
        with torch.no_grad():
            auc = float(auroc(yte, as_adapter(model, n_features=Xte.shape[1]).scores(Xte), wte))
    log.info("detector AUROC on %d held-out pairs: %.4f", len(te), auc)
    return DetectorResult(model, hist, auc, threshold, tr, te, {"seed": seed})


def flag_adversarial(
    detector: DetectorResult | torch.nn.Module, X: np.ndarray, threshold: float | None = None
) -> np.ndarray:
    """Events the detector flags as adversarial (P(adv) >= threshold)."""
    if isinstance(detector, DetectorResult):
        thr = detector.threshold if threshold is None else threshold
        return detector.p_adversarial(X) >= thr
    return as_adapter(detector, n_features=X.shape[1]).scores(X) >= (
        0.5 if threshold is None else threshold
    )
