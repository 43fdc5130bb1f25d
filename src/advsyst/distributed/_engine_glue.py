"""The ONE place where the sharded attack touches CONSERVAttack's internals.

Everything the sharded attack (:mod:`advsyst.distributed.sharded`) needs from the engine goes
through this module: the feature setup of :meth:`ConservAttack.run`, the kernels' argument
tuples (``cand``, ``budget``, ``stats``), the two fast-path primitives
:func:`advsyst.attacks._kernels.score_block` (parallel scoring of a block against a snapshot)
and :func:`advsyst.attacks._kernels.apply_block` (the sequential exact commit with the budget
re-check), and the state of the constraint set.  When the engine changes, only this file
needs re-pointing.

Restriction (and the engine change that lifts it)
-------------------------------------------------
``score_block``/``apply_block`` use the event index ``i`` both as the row of ``X`` and as the
seed id of the per-event random draws (``randomize_step`` and ``num_candidates`` use
``_uniform(seed, it, i, j, ...)``).  On a shard, or on the coordinator's compact block, the
row is not the global event index, so configurations whose draws depend on the seed id are
refused with :class:`NotImplementedError`.  The engine change that lifts it: give
``score_block`` and ``apply_block`` an ``ids`` array (default ``events``) and pass ``ids[t]``
instead of ``i`` as the ``ev`` argument of ``score_feature`` (two call sites), then pass the
global event ids from here.

The state of the constraint set is rebuilt here from per-shard partial sums
(:class:`ReducedState`): histograms, Σw, Σw·x and Σw·(x−mean)(x−mean)ᵀ.  With one shard the
arithmetic is the same as :class:`~advsyst.attacks.conservattack._State`; with several, the
histograms are exact for integer weights and the moments differ from the single-array sums
by floating-point reassociation only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from advsyst.attacks import _kernels as K
from advsyst.attacks.config import ConservAttackConfig
from advsyst.attacks.conservattack import ConservAttack, _bool_mask, _index_list
from advsyst.attacks.model import ModelAdapter, as_adapter
from advsyst.errors import ConfigError, InputError
from advsyst.stats import FeatureBinning, check_finite, js_term

__all__ = [
    "UnsupportedBySharding",
    "check_supported",
    "make_adapter",
    "validate_shard",
    "feature_flags",
    "feature_setup",
    "kernel_tuples",
    "score",
    "commit",
    "ReducedState",
    "partial_sums",
    "partial_cov",
    "final_metrics",
    "margin",
]


class UnsupportedBySharding(ConfigError, NotImplementedError):
    """A configuration the sharded attack cannot run (yet); a :class:`ConfigError` so that
    the command line reports it like any bad configuration."""


def check_supported(cfg: ConservAttackConfig) -> None:
    """Raise :class:`UnsupportedBySharding` (a ``NotImplementedError``) for configurations
    the sharded path cannot run."""
    why = []
    if cfg.randomize_step:
        why.append("randomize_step=True (per-event draws are seeded by the event index)")
    if cfg.num_candidates:
        why.append("num_candidates (random candidates are seeded by the event index)")
    if cfg.use_disco:
        why.append("use_disco=True (the distance-correlation tracker needs every event)")
    if cfg.method != "fast":
        why.append("method='exact' (the sequential oracle has no blocks to distribute)")
    if why:
        raise UnsupportedBySharding(
            "the sharded attack does not support " + "; ".join(why) + ". Run ConservAttack "
            "on one machine for these settings (see advsyst.distributed._engine_glue)."
        )


def make_adapter(model: Any, d: int, cfg: ConservAttackConfig, device: str) -> ModelAdapter:
    """The model adapter exactly as :meth:`ConservAttack.run` builds it."""
    return as_adapter(
        model,
        n_features=d,
        output=cfg.model_output,
        device=device,
        batch_size=cfg.batch_size,
        threshold=cfg.threshold,
    )


def validate_shard(
    X: Any, y: Any, w: Any, am: Any, cm: Any, name: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """The checks of ``ConservAttack._prepare`` for one shard (the minimal constraint-set
    size is a global property and is checked on the union by the coordinator)."""
    X = check_finite(X, f"features X of {name}").copy()
    n = len(X)
    if w is None:
        w = np.ones(n)
    else:
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (n,):
            raise InputError(f"weights of {name} must have shape ({n},), got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise InputError(f"weights of {name} must be finite and non-negative")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (n,):
            raise InputError(f"labels y of {name} must have shape ({n},), got {y.shape}")
        y = y.astype(np.int64)
    am = _bool_mask(am, n, f"attack_mask of {name}")
    cm = _bool_mask(cm, n, f"constraint_mask of {name}") & (w > 0)
    return X, y, w, am, cm


def feature_flags(cfg: ConservAttackConfig, d: int, names: list[str] | None):
    """(immutable, integer) feature masks as ``ConservAttack._feature_setup`` reads them."""
    return (
        _index_list(cfg.immutable, d, "immutable", names),
        _index_list(cfg.integer_features, d, "integer_features", names),
    )


def feature_setup(
    cfg: ConservAttackConfig,
    names: list[str] | None,
    d: int,
    const: np.ndarray,
    xmin: np.ndarray,
    xmax: np.ndarray,
):
    """``ConservAttack._feature_setup`` from reduced inputs: ``const`` (constant in the
    constraint set) and the per-feature min/max over all events.  Returns
    ``(frozen, is_int, valid, lo, hi, mc, st)``."""
    immutable, is_int = feature_flags(cfg, d, names)
    if cfg.bounds is not None:
        b = np.asarray(cfg.bounds, dtype=np.float64)
        if b.shape != (2, d):
            raise ConfigError(f"bounds must be [[lo x {d}], [hi x {d}]], got shape {b.shape}")
        lo, hi = b
    else:
        lo, hi = xmin, xmax
    scale = np.where(hi > lo, hi - lo, 1.0) if cfg.units == "range" else np.ones(d)
    return immutable | const, is_int, ~const, lo, hi, cfg.min_change * scale, cfg.step * scale


def kernel_tuples(cfg: ConservAttackConfig, setup: tuple, it: int, norm0: float):
    """``(cand, budget, allow_inadmissible)`` exactly as :meth:`ConservAttack.run` builds
    them for iteration ``it``."""
    _, is_int, _, lo, hi, mc, st = setup
    mode = K.MODE_CUMULATIVE if cfg.budget == "cumulative" else K.MODE_PER_CHANGE
    allow_inadmissible = (not cfg.use_no_change) and mode == K.MODE_PER_CHANGE
    ncand = int(cfg.num_candidates or 0)
    cand = (lo, hi, mc, st, ncand, cfg.max_candidates, is_int, cfg.seed, it, cfg.randomize_step)
    budget = (
        mode,
        cfg.max_jsd_single_change,
        cfg.max_frob_single_change,
        norm0,
        cfg.alpha,
        cfg.beta,
    )
    return cand, budget, allow_inadmissible


def score(X, w, cons, events, sign, movable, cand, stats, budget, allow_inadmissible):
    """:func:`~advsyst.attacks._kernels.score_block`: (deltas, status) of ``events``."""
    return K.score_block(X, w, cons, events, sign, movable, cand, stats, budget, allow_inadmissible)


def commit(X, w, cons, sign, deltas, status, cand, stats, budget) -> int:
    """:func:`~advsyst.attacks._kernels.apply_block` on a compact block: row ``t`` of ``X``
    is the ``t``-th event of the block; returns the number of undone moves."""
    events = np.arange(len(X), dtype=np.int64)
    return int(K.apply_block(X, w, cons, events, sign, deltas, status, cand, stats, budget, True))


# --------------------------------------------------------------------------- state
def partial_sums(X: np.ndarray, w: np.ndarray, cons: np.ndarray, edges: np.ndarray | None):
    """One shard's first-pass sums over its constraint events: (histogram or None, Σw,
    Σw·x)."""
    Xc, wc = X[cons], w[cons]
    H = FeatureBinning(edges).histogram(Xc, wc) if edges is not None else None
    return H, float(wc.sum()), (wc[:, None] * Xc).sum(axis=0)


def partial_cov(X: np.ndarray, w: np.ndarray, cons: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """One shard's Σw·(x−mean)(x−mean)ᵀ over its constraint events."""
    Xc, wc = X[cons], w[cons]
    Z = Xc - mean
    return (wc[:, None] * Z).T @ Z


def _total(parts: list) -> Any:
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


class ReducedState:
    """The kernels' ``stats`` (see :mod:`advsyst.attacks._kernels`) built from per-shard
    partial sums; the same fields as ``conservattack._State``."""

    FIELDS = ("edges", "H0", "H", "Ssum", "mean", "cov", "sig", "Ccur", "C0", "valid", "F2")
    SCALARS = ("T", "W", "norm0")

    def __init__(self, **arrays: Any):
        for k, v in arrays.items():
            setattr(self, k, v)
        self.lo_e = self.edges[:, 0].copy()
        width = self.edges[:, -1] - self.edges[:, 0]
        self.inv_w = (self.edges.shape[1] - 1) / width

    @classmethod
    def initial(cls, edges, valid, H_parts, W_parts, swx_parts, cov_fn) -> ReducedState:
        """The clean state; ``cov_fn(mean)`` returns the shards' partial covariances."""
        H0 = _total(H_parts)
        T = float(_total(W_parts))
        st = cls(edges=edges, valid=valid, H0=H0, T=T, W=T, norm0=1.0, F2=np.zeros(1))
        st.H = H0.copy()
        st._moments(_total(swx_parts) / st.W, cov_fn)
        st.C0 = st.Ccur.copy()
        st.norm0 = float(np.linalg.norm(st.C0)) or 1.0
        st.resync(H0.copy(), st.mean, st.cov)
        return st

    def _moments(self, mean: np.ndarray, cov_fn) -> None:
        self.mean = mean
        self.cov = _total(cov_fn(mean)) / self.W
        var = np.diag(self.cov)
        self.sig = np.sqrt(np.clip(var, 0, None))
        s = np.where(self.valid, self.sig, 1.0)
        C = self.cov / s[:, None] / s[None, :]
        C[~self.valid, :] = 0.0
        C[:, ~self.valid] = 0.0
        self.Ccur = np.ascontiguousarray(C)

    def resync(self, H: np.ndarray, mean: np.ndarray | None = None, cov: Any = None) -> None:
        """Replace the tracked statistics by ones recomputed from the shards (``H`` summed
        histograms; ``cov`` a function ``mean -> partial covariances`` or a finished
        covariance), dropping rounding drift as ``_State.resync`` does."""
        self.H = H
        self.Ssum = js_term(self.H0 / self.T, self.H / self.T).sum(axis=1)
        if callable(cov):
            self._moments(mean, cov)
        self.F2 = np.array([float(((self.Ccur - self.C0) ** 2).sum())])

    def kernel_args(self) -> tuple:
        return (
            self.edges,
            self.lo_e,
            self.inv_w,
            self.H0,
            self.H,
            self.T,
            self.Ssum,
            self.mean,
            self.cov,
            self.sig,
            self.Ccur,
            self.C0,
            self.valid,
            self.F2,
            self.W,
        )

    def jsd(self) -> np.ndarray:
        return np.sqrt(np.clip(self.Ssum, 0, None))

    def dfn(self) -> float:
        return float(np.sqrt(self.F2[0]) / self.norm0)

    # -- shipping and checkpointing -------------------------------------------------
    MUTABLE = ("H", "Ssum", "mean", "cov", "sig", "Ccur", "F2")

    def snapshot(self) -> dict[str, np.ndarray]:
        """The arrays the commits mutate (what a worker needs each round)."""
        return {k: getattr(self, k) for k in self.MUTABLE}

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(getattr(self, k)) for k in self.FIELDS}
        out.update({k: np.asarray(getattr(self, k)) for k in self.SCALARS})
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ReducedState:
        kw = {k: np.array(a[k]) for k in cls.FIELDS}
        kw.update({k: float(a[k]) for k in cls.SCALARS})
        return cls(**kw)

    @classmethod
    def for_worker(cls, const: dict[str, Any], snap: dict[str, np.ndarray]) -> tuple:
        """The ``stats`` tuple on a worker from the constant part and a snapshot."""
        st = cls.__new__(cls)
        for k, v in {**const, **snap}.items():
            setattr(st, k, v)
        return st.kernel_args()

    def constants(self) -> dict[str, Any]:
        return {
            k: getattr(self, k) for k in ("edges", "lo_e", "inv_w", "H0", "T", "C0", "valid", "W")
        }


# --------------------------------------------------------------------------- results
def final_metrics(
    cfg: ConservAttackConfig, X0, X, y, w, am, cm, valid, edges, pred_clean, pred_adv, scores
) -> dict[str, Any]:
    """``ConservAttack._final_metrics`` on the union (recomputed from scratch; raises
    :class:`~advsyst.errors.BudgetViolation` if a cumulative budget is exceeded); the AUROC
    from scores the workers computed (``scores = (clean, adversarial)`` or None)."""
    m = ConservAttack(cfg)._final_metrics(
        X0, X, None, w, am, cm, valid, FeatureBinning(edges), pred_clean, pred_adv, None
    )
    if y is not None and scores is not None and len(np.unique(y)) == 2:
        from advsyst.attacks.metrics import auroc

        m["auroc_clean"] = float(auroc(y, scores[0], w))
        m["auroc_adv"] = float(auroc(y, scores[1], w))
    return m


def margin(adapter: ModelAdapter, X: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The ``order: margin`` key of :meth:`ConservAttack.run`."""
    return ConservAttack._margin(adapter, X, target)


def fooling(pred_clean, pred_adv, am, w) -> tuple[float, float]:
    """Partial sums of :meth:`ConservAttack._fooling`: (Σw over attacked, Σw over flipped)."""
    wa = w[am]
    return float(wa.sum()), float((wa * (pred_clean[am] != pred_adv[am])).sum())
