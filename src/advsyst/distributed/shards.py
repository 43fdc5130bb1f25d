"""Shards of the sharded attack: where their clean data comes from, and the worker-side
actor that holds one shard, scores its events and applies accepted moves.

A shard's rows are reproducible from its :class:`ShardSource` (an ``.npz`` file on storage
the workers share, or arrays the client passed), which is how a lost shard is rebuilt: load
the clean data again and replay the shard's accepted moves from the coordinator's log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from advsyst._io import atomic_savez
from advsyst.attacks.config import ConservAttackConfig
from advsyst.distributed import _engine_glue as G
from advsyst.errors import AdvsystError, InputError

__all__ = ["ShardSource", "ShardLostError", "ShardActor", "fingerprint"]

log = logging.getLogger(__name__)


class ShardLostError(AdvsystError, RuntimeError):
    """A shard could not be rebuilt from its source (missing or changed data)."""


def fingerprint(*arrays: np.ndarray | None) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes (None counts as absent)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class ShardSource:
    """Where one shard's clean data comes from.

    Either ``path``: an ``.npz`` on storage every worker can read with ``X`` and optionally
    ``y``, ``w``, ``attack_mask``, ``constraint_mask``, ``movable`` (an (n, d) boolean mask
    as the ``movable`` argument of :meth:`~advsyst.attacks.ConservAttack.run`), of which rows ``start:stop`` are
    taken; or ``arrays``: a dict of the same keys held by the client (re-sent to the new
    worker when the shard is rebuilt).
    """

    path: str | None = None
    start: int = 0
    stop: int | None = None
    arrays: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.arrays is None):
            raise InputError("a ShardSource needs exactly one of path= or arrays=")

    def describe(self) -> str:
        if self.path is not None:
            return f"{self.path}[{self.start}:{'' if self.stop is None else self.stop}]"
        return "arrays held by the client"

    def load(self) -> dict[str, Any]:
        """The clean data: {"X", "y", "w", "attack_mask", "constraint_mask", "movable"} (None
        if absent)."""
        keys = ("X", "y", "w", "attack_mask", "constraint_mask", "movable")
        if self.arrays is not None:
            return {k: self.arrays.get(k) for k in keys}
        if not os.path.exists(self.path):
            raise ShardLostError(f"shard source {self.path!r} does not exist")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if "X" not in z:
                    raise InputError(f"{self.path!r} has no array 'X' (found {sorted(z.files)})")
                sl = slice(self.start, self.stop)
                return {k: (np.asarray(z[k][sl]) if k in z else None) for k in keys}
        except (OSError, ValueError) as exc:
            raise ShardLostError(f"cannot read shard source {self.path!r}: {exc}") from exc


class ShardActor:
    """One shard on a worker (a dask actor).

    Holds the shard's clean and current rows, its masks, predictions, the gradient signs of
    the running iteration and a copy of the best iteration's rows.  The coordinator calls it
    to reduce statistics, to score blocks (:func:`advsyst.distributed._engine_glue.score`) and
    to apply the moves it accepted.
    """

    def __init__(
        self,
        shard_id: int,
        n_shards: int,
        source: ShardSource,
        payload: tuple[str, Any],
        config: dict[str, Any],
        device: str = "cpu",
        scorer: str = "numba",
    ):
        from advsyst.attacks.model import resolve_device
        from advsyst.distributed.attack import deserialize_model

        self.shard_id, self.n_shards, self.source = shard_id, n_shards, source
        self.cfg = ConservAttackConfig.from_dict(config)
        self.device = str(resolve_device(device))  # "auto": CUDA when this worker has it
        # candidate scoring: numba, or torch on CUDA when this worker sees a GPU ("auto")
        self.scorer, self.scorer_device = G.resolve_scorer(scorer)
        self.model = deserialize_model(payload, self.device)
        self._load()

    # ------------------------------------------------------------------ data
    def _load(self) -> None:
        raw = self.source.load()
        name = f"shard {self.shard_id} ({self.source.describe()})"
        X, y, w, am, cm = G.validate_shard(
            raw["X"], raw["y"], raw["w"], raw["attack_mask"], raw["constraint_mask"], name
        )
        self.user_movable = raw.get("movable")
        extra = () if self.user_movable is None else (np.asarray(self.user_movable),)
        self.fp = fingerprint(X, y, w, am, cm, *extra)
        self.X0, self.y, self.w, self.am, self.cm = X, y, w, am, cm
        self.X = X.copy()
        self.n, self.d = X.shape
        # global event ids (the coordinator's order key; seed the per-event draws)
        self.ids = np.arange(self.n, dtype=np.int64) * self.n_shards + self.shard_id
        self.adapter = G.make_adapter(self.model, self.d, self.cfg, self.device)
        self.sign = np.zeros((0, self.d))
        self.events = np.zeros(0, dtype=np.int64)
        self.best = None

    def info(self) -> dict[str, Any]:
        """Sizes, fingerprint, device."""
        return {
            "n": self.n,
            "d": self.d,
            "fingerprint": self.fp,
            "device": self.device,
            "scorer": f"{self.scorer}:{self.scorer_device}",
            "pid": os.getpid(),
        }

    def summary(self) -> dict[str, Any]:
        """The setup's first reductions of the clean data (:func:`G.shard_summary`)."""
        return G.shard_summary(self.X0, self.w, self.am, self.cm, self.cfg.max_discrete_values)

    def clean_stats(self, mean: np.ndarray, layout: Any, want_w2: bool) -> dict[str, Any]:
        """The setup's second reductions (:func:`G.shard_clean_stats`)."""
        return G.shard_clean_stats(self.X0, self.w, self.cm, mean, layout, want_w2)

    def setup(self, setup: G.Setup) -> None:
        """Movable mask, per-entry bounds, clean predictions and target."""
        cfg = self.cfg
        self.setup_t = setup
        self.layout = setup.layout()
        self.movable = G.movable_mask(
            self.X0, self.am, setup.frozen, self.user_movable, cfg.default_value
        )
        self.lo, self.hi, self.env = G.shard_bounds(cfg, setup, self.X0)
        self.groups = setup.groups
        # keep_order: per-entry bounds from the rows at the start of every iteration
        self.per_entry = self.env is not None or bool(self.groups)
        self._iteration_bounds()
        self.pred_clean = self.adapter.predict(self.X0)
        if cfg.target == "label":
            if self.y is None:
                raise InputError(f"target='label' needs labels y (shard {self.shard_id} has none)")
            self.target = self.y
        else:
            self.target = self.pred_clean
        self.pred_adv = self.pred_clean.copy()
        self.best = self.X.copy()

    def order_counts(self, columns: list[np.ndarray]) -> np.ndarray:
        """The clean events breaking either order per ``keep_order`` group
        (:func:`G.shard_order_counts`)."""
        return G.shard_order_counts(self.X0, columns)

    def _iteration_bounds(self) -> None:
        """The bounds of the coming iteration's moves (``blo``/``bhi``): the envelope bounds,
        narrowed by ``order_bounds`` of the current rows with ``keep_order``."""
        self.blo, self.bhi = G.order_bounds(self.X, self.groups, self.lo, self.hi)

    def cov(self, mean: np.ndarray) -> np.ndarray:
        return G.partial_cov(self.X, self.w, self.cm, mean)

    def sums(self) -> tuple:
        """First-pass sums of the current rows (for the end-of-iteration resync)."""
        return G.partial_sums(self.X, self.w, self.cm, self.layout)

    # ------------------------------------------------------------------ iterations
    def begin_iteration(self) -> dict[str, Any]:
        """Active events of the iteration, their gradient signs, and (order: margin) their
        margins; with ``keep_order`` the iteration's bounds from the rows at its start."""
        cfg = self.cfg
        self._iteration_bounds()
        fooled = self.am & (self.pred_adv != self.target)
        active = self.am & (~fooled | cfg.optimize_already_fooled)
        self.events = np.nonzero(active)[0]
        out: dict[str, Any] = {"count": len(self.events), "events": self.events}
        if len(self.events):
            Xe = self.X[self.events]
            grad = self.adapter.loss_gradient(Xe, self.target[self.events])
            self.sign = np.sign(grad)
            if cfg.order == "margin":
                out["margin"] = G.margin(self.adapter, Xe, self.target[self.events])
        else:
            self.sign = np.zeros((0, self.d))
        self.start_X = self.X[self.events].copy()
        return out

    def apply_moves(self, moves: tuple | None) -> None:
        """Set accepted values: ``moves = (local rows, features, values)``."""
        if moves is not None and len(moves[0]):
            self.X[moves[0], moves[1]] = moves[2]

    def step(
        self,
        moves: tuple | None,
        pos: np.ndarray,
        consts: dict[str, Any] | None,
        snap: dict[str, np.ndarray],
        it: int,
    ) -> dict[str, Any]:
        """Apply the previous round's accepted moves, then score the active events at
        positions ``pos`` of this iteration's list against the snapshot ``snap``.

        Returns the proposals of the events with at least one: their indices into ``pos``,
        local rows, current rows, weights, constraint flags, signs, deltas and statuses.
        """
        t0 = time.perf_counter()
        self.apply_moves(moves)
        if consts is not None:
            self.consts = consts
        stats = G.ReducedState.for_worker(self.consts, snap)
        cand, budget, allow = G.kernel_tuples(
            self.cfg, self.setup_t, it, self.consts["norm0"], self.blo, self.bhi
        )
        ev = self.events[pos]
        sign = self.sign[pos]
        deltas, status = G.score(
            self.X, self.w, self.cm, ev, sign, self.movable, cand, stats, budget, allow,
            self.ids, self.scorer, self.scorer_device,
        )  # fmt: skip
        idx = np.nonzero((status != 0).any(axis=1))[0]
        rows = ev[idx]
        out = {}
        if self.per_entry:  # the per-entry bounds of the proposing rows, for the commit
            out = {"lo": self.blo[rows], "hi": self.bhi[rows]}
        return {
            **out,
            "idx": idx,
            "rows": rows,
            "x": self.X[rows],
            "w": self.w[rows],
            "cons": self.cm[rows],
            "sign": sign[idx],
            "deltas": deltas[idx],
            "status": status[idx],
            "seconds": time.perf_counter() - t0,
        }

    def end_iteration(self, moves: tuple | None) -> dict[str, Any]:
        """Apply the last moves, predict the iteration's events; fooling sums, move counts
        and the first-pass sums for the resync."""
        self.apply_moves(moves)
        ev = self.events
        changed = self.X[ev] != self.start_X
        if len(ev):
            self.pred_adv[ev] = self.adapter.predict(self.X[ev])
        return {
            "fooling": G.fooling(self.pred_clean, self.pred_adv, self.am, self.w),
            # as ConservAttack.run's history: attacked events whose prediction flipped
            "n_fooled": int((self.am & (self.pred_adv != self.pred_clean)).sum()),
            "entries": int(changed.sum()),
            "moved": int(changed.any(axis=1).sum()),
            "sums": self.sums(),
        }

    def mark_best(self) -> None:
        self.best = self.X.copy()

    # ------------------------------------------------------------------ recovery
    def rebuild(self, expected_fp: str, log: tuple, it: int, best_it: int) -> dict[str, Any]:
        """Bring a freshly loaded and set-up shard to where the run is: replay the logged
        moves ``log = (iteration, local row, feature, value)`` of the iterations before
        ``it`` (copying the rows after ``best_it``), predict, begin iteration ``it`` (its
        gradient signs and ``keep_order`` bounds are those of the rows at its start) and
        replay its moves so far.
        Returns what :meth:`begin_iteration` returned."""
        if self.fp != expected_fp:
            raise ShardLostError(
                f"shard {self.shard_id} cannot be rebuilt: its source "
                f"{self.source.describe()} now holds different data (fingerprint "
                f"{self.fp[:12]} != {expected_fp[:12]} recorded at the start of the run)"
            )
        its, rows, feats, vals = log
        self.X = self.X0.copy()
        self.best = self.X.copy()
        for k in range(1, it):
            sel = its == k
            self.X[rows[sel], feats[sel]] = vals[sel]
            if k == best_it:
                self.best = self.X.copy()
        self.pred_adv = self.adapter.predict(self.X)
        begin = self.begin_iteration()
        sel = its == it
        self.X[rows[sel], feats[sel]] = vals[sel]
        if best_it == it:
            self.best = self.X.copy()
        return begin

    # ------------------------------------------------------------------ results
    def finish(self, track_best: bool) -> dict[str, Any]:
        """Fix the result's rows (the best iteration's with ``track_best``), predict them, and
        return the first reductions of the final recheck (:func:`G.shard_final`, size
        independent of the shard's events)."""
        X = self.best if (track_best and self.best is not None) else self.X
        pred_adv = self.adapter.predict(X) if track_best else self.pred_adv
        self.result = {"X": X, "pred_adv": pred_adv, "fooled": self.am & (pred_adv != self.target)}
        self.ratios = (
            G.envelope_ratios(self.X0, X, self.env) if self.env is not None else np.zeros(0)
        )
        return G.shard_final(
            self.setup_t, self.X0, X, self.y, self.w, self.am, self.cm, self.pred_clean,
            pred_adv, self.lo, self.hi, self.env,
        )  # fmt: skip

    def final_cov(self, mean0: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The partial covariances of the clean and the result's rows at the global means."""
        return G.final_covs(self.X0, self.result["X"], self.w, self.cm, mean0, mean)

    def final_count(self, thresholds: np.ndarray) -> np.ndarray:
        """How many of the shard's envelope ratios are <= each threshold."""
        return G.count_le(self.ratios, thresholds)

    def final_auroc(self) -> dict[str, Any] | None:
        """The shard's AUROC piece (:func:`G.auroc_part`: labels, weights, the scores of the
        clean and the result's rows); None without labels or for a model with more than two
        classes."""
        if self.y is None or self.adapter.n_classes != 2:
            return None
        X = self.result["X"]
        return G.auroc_part(self.y, self.w, (self.adapter.scores(self.X0), self.adapter.scores(X)))

    def final_rows(self, layout: str, offset: int) -> dict[str, np.ndarray]:
        """The result's rows of this shard (the arrays of an AttackResult) and their global
        rows: ``local row · n_shards + shard`` (``layout="roundrobin"``) or ``offset + local
        row`` (``"concat"``)."""
        r = self.result
        rows = self.ids if layout == "roundrobin" else offset + np.arange(self.n, dtype=np.int64)
        return {
            "X_adv": r["X"],
            "fooled": r["fooled"],
            "moved": (r["X"] != self.X0).any(axis=1),
            "pred_clean": self.pred_clean,
            "pred_adv": r["pred_adv"],
            "attack_mask": self.am,
            "constraint_mask": self.cm,
            "rows": rows,
        }

    def write_rows(self, path: str, layout: str, offset: int) -> dict[str, Any]:
        """Write :meth:`final_rows` atomically to ``path`` (``.npz`` on storage the client
        reads); returns the path, the number of rows and the file's size."""
        atomic_savez(path, **self.final_rows(layout, offset))
        return {"path": path, "n": self.n, "bytes": os.path.getsize(path)}
