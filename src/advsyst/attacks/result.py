"""The result of an attack: adversarial features, flags, history, exact metrics, provenance."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advsyst._io import atomic_path, to_jsonable
from advsyst.errors import InputError

__all__ = ["AttackResult"]

_ARRAYS = ("X_adv", "fooled", "moved", "pred_clean", "pred_adv", "attack_mask", "constraint_mask")


class MetricsView:
    """What every attack result offers on its ``metrics`` dict (one definition for the
    in-memory :class:`AttackResult` and the sharded result that keeps its rows in files)."""

    metrics: dict[str, Any]

    @property
    def fooling_ratio(self) -> float:
        return float(self.metrics.get("fooling_ratio", np.nan))

    def summary(self) -> dict[str, Any]:
        """The scalar metrics (no per-feature arrays)."""
        return {k: v for k, v in self.metrics.items() if np.ndim(v) == 0}


@dataclass
class AttackResult(MetricsView):
    """Output of :class:`~advsyst.attacks.ConservAttack` (and compatible attacks).

    Attributes
    ----------
    X_adv
        Adversarial features (n, d), float64.
    fooled
        Per event: the prediction differs from the attack target (clean prediction or label;
        the same as "the prediction changed" for ``target="prediction"``).
    moved
        Per event: at least one feature changed.
    pred_clean, pred_adv
        Predicted classes before and after.
    history
        One dict per iteration: ``iteration``, ``fooling_ratio``, ``n_fooled``,
        ``events_moved``, ``entries_moved``, ``undone`` (moves applied and taken back by the
        re-check, every undo counted), ``jsd_mean``, ``jsd_max``, ``dfn``, ``seconds``.
        ``fooling_ratio`` and ``n_fooled`` have one definition here and in ``metrics``:
        attacked events whose predicted class differs from the clean prediction (weighted
        fraction, and unweighted count).
    metrics
        Exact final metrics, recomputed from scratch: ``fooling_ratio``, ``jsd`` (per
        feature), ``jsd_mean``, ``jsd_max``, ``dfn``, ``n_events``, ``n_features``, ...
    config
        The configuration used (dict), ``seed`` the seed, ``provenance`` versions etc.
    """

    X_adv: np.ndarray
    fooled: np.ndarray
    moved: np.ndarray
    pred_clean: np.ndarray
    pred_adv: np.ndarray
    attack_mask: np.ndarray
    constraint_mask: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    best_iteration: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write arrays and metadata into one ``.npz`` (atomically)."""
        meta = {
            "history": self.history,
            "metrics": self.metrics,
            "config": self.config,
            "seed": self.seed,
            "best_iteration": self.best_iteration,
            "provenance": self.provenance,
        }
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    **{k: getattr(self, k) for k in _ARRAYS},
                    meta=np.array(json.dumps(to_jsonable(meta))),
                )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AttackResult:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in _ARRAYS}
                meta = json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read attack result {os.fspath(path)!r}: {exc}") from exc
        m = meta["metrics"]
        if "jsd" in m:
            m["jsd"] = np.asarray(m["jsd"], dtype=np.float64)
        return cls(**arrays, **meta)
