"""Tagger and detector architectures: a standardising MLP with one sigmoid output.

The default layer sizes follow the CONSERVAttack paper's tagger and detector tables
(Appendix C): four hidden dense layers of 300, 102, 12 and 6 units, each followed by a
ReLU and then batch normalisation, and a single output unit.

This module deliberately does *not* use ``from __future__ import annotations``:
TorchScript reads the class-level annotations of :class:`Classifier` (``List[str]``,
``int``, ``str``) to keep ``feature_names``, ``n_features`` and ``advsyst_output`` as
attributes of the scripted module, and it cannot resolve postponed (string) annotations
there.
"""

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from advsyst.errors import InputError

__all__ = ["Standardize", "build_mlp", "Classifier"]

log = logging.getLogger(__name__)

DEFAULT_HIDDEN = (300, 102, 12, 6)


class Standardize(nn.Module):
    """Fixed affine standardisation ``(x - mean) / std`` with buffers saved in the model.

    Parameters
    ----------
    mean, std
        Per-feature location and scale, shape ``(d,)``.  A zero (or non-finite) ``std``
        is replaced by 1 with a logged warning, so constant features pass through shifted.
    feature_names
        Only used to name zero-variance features in the warning.
    """

    def __init__(
        self,
        mean: "np.ndarray | torch.Tensor | Sequence[float]",
        std: "np.ndarray | torch.Tensor | Sequence[float]",
        feature_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        std_np = np.asarray(std, dtype=np.float64).reshape(-1)
        if mean_t.shape[0] != std_np.shape[0]:
            raise InputError(
                f"Standardize: mean has {mean_t.shape[0]} entries but std has {std_np.shape[0]}"
            )
        bad = ~np.isfinite(std_np) | (std_np <= 0)
        if bad.any():
            idx = np.flatnonzero(bad)
            names = [feature_names[i] for i in idx] if feature_names is not None else idx.tolist()
            log.warning("zero-variance feature(s) %s: scale set to 1 in Standardize", names)
            std_np = np.where(bad, 1.0, std_np)
        self.register_buffer("mean", mean_t.clone())
        self.register_buffer("std", torch.as_tensor(std_np.astype(np.float32)))

    @classmethod
    def from_data(cls, X: np.ndarray, feature_names: Sequence[str] | None = None) -> "Standardize":
        """Build from the (unweighted) mean and standard deviation of ``X`` (n, d)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0:
            raise InputError(f"Standardize.from_data needs a non-empty (n, d) array, got {X.shape}")
        return cls(X.mean(axis=0), X.std(axis=0), feature_names=feature_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_mlp(
    n_features: int,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    batchnorm: bool = True,
    dropout: float = 0.0,
    n_outputs: int = 1,
) -> nn.Sequential:
    """Dense -> ReLU -> BatchNorm blocks followed by a linear output layer (logits).

    Parameters
    ----------
    n_features
        Input width.
    hidden
        Hidden layer widths; ``()`` gives a linear model.
    batchnorm
        Add ``BatchNorm1d`` after each ReLU (the paper's order).
    dropout
        Dropout probability after each block (0 disables it).
    n_outputs
        Output width: 1 for a binary logit, ``k`` for ``k``-class logits.
    """
    if int(n_features) < 1:
        raise InputError(f"n_features must be >= 1, got {n_features}")
    if not 0.0 <= float(dropout) < 1.0:
        raise InputError(f"dropout must be in [0, 1), got {dropout}")
    if int(n_outputs) < 1:
        raise InputError(f"n_outputs must be >= 1, got {n_outputs}")
    layers: list[nn.Module] = []
    width = int(n_features)
    for h in hidden:
        if int(h) < 1:
            raise InputError(f"hidden layer widths must be >= 1, got {tuple(hidden)}")
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        if batchnorm:
            layers.append(nn.BatchNorm1d(int(h)))
        if dropout > 0:
            layers.append(nn.Dropout(float(dropout)))
        width = int(h)
    layers.append(nn.Linear(width, int(n_outputs)))
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """Standardize + MLP (+ sigmoid for binary models), taking raw features.

    Binary models (``n_classes=2``) return ``(n, 1)`` probabilities of class 1 and have
    ``advsyst_output == "probability"``; ``k``-class models return ``(n, k)`` logits and
    have ``advsyst_output == "logit"``.  ``advsyst_output``, ``n_features``,
    ``n_classes`` and ``feature_names`` survive ``torch.jit.script`` and save/load.

    Parameters
    ----------
    n_features
        Input width.
    hidden, batchnorm, dropout
        Passed to :func:`build_mlp`.
    n_classes
        2 for a binary tagger (one sigmoid output), ``k > 2`` for ``k`` logits.
    mean, std
        Standardisation constants (defaults: 0 and 1).
    feature_names
        Optional names of the ``n_features`` input columns.
    """

    advsyst_output: str = "probability"
    n_features: int
    n_classes: int
    feature_names: list[str]

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        batchnorm: bool = True,
        dropout: float = 0.0,
        n_classes: int = 2,
        mean: "np.ndarray | Sequence[float] | None" = None,
        std: "np.ndarray | Sequence[float] | None" = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        n_features = int(n_features)
        if int(n_classes) < 2:
            raise InputError(f"n_classes must be >= 2, got {n_classes}")
        names = [str(n) for n in feature_names] if feature_names is not None else []
        if names and len(names) != n_features:
            raise InputError(f"{len(names)} feature names given for {n_features} features")
        self.n_features = n_features
        self.n_classes = int(n_classes)
        self.feature_names = names
        # instance attribute (not only the class default) so that TorchScript keeps it
        self.advsyst_output = "probability" if self.n_classes == 2 else "logit"
        self.standardize = Standardize(
            np.zeros(n_features) if mean is None else mean,
            np.ones(n_features) if std is None else std,
            feature_names=names or None,
        )
        if self.standardize.mean.shape[0] != n_features:
            raise InputError(
                f"standardisation has {self.standardize.mean.shape[0]} entries, "
                f"expected {n_features}"
            )
        self.net = build_mlp(
            n_features,
            hidden,
            batchnorm=batchnorm,
            dropout=dropout,
            n_outputs=1 if self.n_classes == 2 else self.n_classes,
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid/softmax outputs, ``(n, 1)`` or ``(n, k)``."""
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise RuntimeError(
                "Classifier expects input of shape (n, "
                + str(self.n_features)
                + "), got "
                + str(list(x.shape))
            )
        return self.net(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.logits(x)
        if self.n_classes == 2:
            return torch.sigmoid(z)
        return z
