"""A weighted standard scaler that serialises to plain dictionaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from advsyst.errors import InputError

__all__ = ["StandardScaler"]


@dataclass
class StandardScaler:
    """``(x - mean) / scale`` per column, fitted with optional event weights.

    Columns with zero spread (e.g. always-zero padding) get ``scale = 1``.
    """

    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def fit(self, X: np.ndarray, w: np.ndarray | None = None) -> StandardScaler:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise InputError(f"StandardScaler.fit needs a non-empty 2-D array, got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise InputError("StandardScaler.fit: X contains NaN or inf")
        w = np.ones(X.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
        if w.shape != (X.shape[0],) or w.sum() <= 0:
            raise InputError("StandardScaler.fit: weights must have one entry per row, sum > 0")
        mean = np.average(X, axis=0, weights=w)
        var = np.average((X - mean) ** 2, axis=0, weights=w)
        scale = np.sqrt(var)
        self.mean = mean
        self.scale = np.where(scale > 0, scale, 1.0)
        return self

    def _check(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None or self.scale is None:
            raise InputError("StandardScaler is not fitted")
        return self.mean, self.scale

    def transform(self, X: np.ndarray) -> np.ndarray:
        mean, scale = self._check()
        return (np.asarray(X, dtype=np.float64) - mean) / scale

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        mean, scale = self._check()
        return np.asarray(Z, dtype=np.float64) * scale + mean

    def fit_transform(self, X: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        return self.fit(X, w).transform(X)

    def to_dict(self) -> dict[str, Any]:
        mean, scale = self._check()
        return {"kind": "standard", "mean": mean.tolist(), "scale": scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StandardScaler:
        return cls(mean=np.asarray(d["mean"], float), scale=np.asarray(d["scale"], float))
