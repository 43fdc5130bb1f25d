"""The ONE place where the sharded attack touches CONSERVAttack's internals.

Everything the sharded attack (:mod:`advsyst.distributed.sharded`) needs from the engine goes
through this module: the input checks and feature setup of :meth:`ConservAttack.run`
(bounds, discrete supports, the binning-robust rows and their limits, per-entry envelopes),
the kernels' argument tuples (``cand``, ``budget``, ``stats``), the two fast-path primitives
:func:`advsyst.attacks._kernels.score_block` (parallel scoring of a block against a snapshot)
and :func:`advsyst.attacks._kernels.apply_block` (the sequential exact commit with the budget
re-check), called through :func:`advsyst.attacks._jit.call`, and the state of the
constraint set.  The scoring may instead run through the kernel's torch port
:func:`advsyst.attacks._torch_scorer.score_block_torch` (``scorer="torch"``, on CUDA where
a worker has a GPU), which picks the same moves.  When the engine changes, only this file
(and the torch port) needs re-pointing.

Setup from per-shard reductions
-------------------------------
The clean events never travel to the coordinator.  The setup of :meth:`ConservAttack.run`
runs on reductions the shards compute, in two round trips whose size does not depend on
the number of events (a third with ``keep_order``: see below):

1. :func:`shard_summary`: the sums the global checks read (``_set_sums``: constraint-set
   size and the totals of the signed weights), Σw·x, the minimum and maximum of every
   feature over the constraint set (the attack's binning) and over every event (the
   bounds), and each feature's distinct values up to ``max_discrete_values`` (discrete
   supports; None beyond).  :func:`setup_from_summaries` merges them (the supports by
   union), checks (``_check_sets``), builds the binning and the extra binnings of the
   binning-robust budget (``ConservAttack._robust_binnings``) and asks for
2. :func:`shard_clean_stats`: Σw·(x−mean)(x−mean)ᵀ at the global mean and the stacked
   clean histograms of Σw (and of Σw², when the robust limits need the bootstrap
   resolution: ``resolution_from_histograms`` works on the summed histograms alone) at
   every tracked binning.

From these, ``ConservAttack._features_from`` (constant and discrete features, bounds,
steps), ``ConservAttack._robust_limits`` and :class:`ReducedState` (the clean state) run
as on one machine.  Minima, maxima and distinct values are exact; the histograms are
exact for integer weights; the moments differ from the single-array sums by
floating-point reassociation only.  The per-entry envelope bounds are computed on each
shard for its own rows (``ConservAttack._envelope`` is row-wise) and travel with the
proposals to the commit.

The final recheck
-----------------
The budgets are rechecked at the end from per-shard reductions too
(:mod:`advsyst.attacks._final`, the same functions :meth:`ConservAttack.run` applies to its
whole data set as one part): :func:`shard_final` (clean and adversarial histograms at every
tracked binning, Σw, Σw·x, fooling sums, counts, the envelope counts and the bound check,
done on the shard), then the partial covariances at the global means, the exact envelope
quantiles by a k-ary search on counts, and the AUROC from every event's clean and
adversarial score with its label (and weight unless all are 1): the one piece whose size
grows with the data (a rank statistic has no fixed-size exact reduction).  :func:`recheck` assembles them with
``ConservAttack.recheck``.  Only the result's rows, when the caller asks for an in-memory
:class:`~advsyst.attacks.result.AttackResult`, travel to the client.

Seeded draws
------------
``randomize_step`` and ``num_candidates`` draw per (seed, iteration, event id, feature).
The kernels take the event ids apart from the rows (``ids``, one per row of ``X``): the
single process passes ``arange(n)``; a shard passes its rows' global ids ``local row · S +
shard`` (the coordinator's order key, the global row for an in-memory ``X`` split
round-robin) and the commit the ids of the block's events, so the draws are those of the
single-process run.  (Per-entry bounds are indexed by the row, which is right on both
sides: the shard's own rows, and the block's rows shipped with the proposals.)

``keep_order``
--------------
The groups are resolved on the coordinator (:func:`order_groups`): the names there, the
direction from the shards' counts of clean events that break a non-increasing or a
non-decreasing order (:func:`shard_order_counts`, summed; the same
``order_group_columns``/``order_directions`` as ``resolve_order_groups``, so the same
:class:`InputError`).  Each shard computes ``order_bounds`` for its own rows at the start of
every iteration from their values then (row-wise, so equal to the single-process bounds)
and ships them like envelope bounds with its proposals.  A shard rebuilt mid-iteration
replays the moves of the earlier iterations, begins the iteration (recomputing the bounds)
and only then replays the iteration's moves.  The final recheck sums the shards'
``events_out_of_order``.

After every iteration the state is resynchronised from per-shard partial sums
(:class:`ReducedState`, a ``_State`` whose ``_histograms``/``_moments`` read the sums):
histograms on every tracked binning, Σw·x and Σw·(x−mean)(x−mean)ᵀ.  With one shard the
arithmetic is the same as ``_State.resync``; with several, the histograms are exact for
integer weights and the moments differ from the single-array sums by floating-point
reassociation only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from advsyst.attacks import _final as F
from advsyst.attacks import _kernels as K
from advsyst.attacks._jit import call
from advsyst.attacks._torch_scorer import SCORERS, resolve_scorer
from advsyst.attacks.config import ConservAttackConfig
from advsyst.attacks.conservattack import (
    ConservAttack,
    _bool_mask,
    _check_sets,
    _distinct_values,
    _integer_labels,
    _movable_mask,
    _set_sums,
    _State,
    order_bounds,
    order_counts,
    order_directions,
    order_group_columns,
)
from advsyst.attacks.model import ModelAdapter, as_adapter
from advsyst.errors import ConfigError, InputError
from advsyst.stats import FeatureBinning, check_finite

__all__ = [
    "UnsupportedBySharding",
    "Setup",
    "check_supported",
    "make_adapter",
    "validate_shard",
    "setup_in_memory",
    "shard_summary",
    "shard_clean_stats",
    "setup_from_summaries",
    "shard_bounds",
    "order_groups",
    "shard_order_counts",
    "order_bounds",
    "movable_mask",
    "kernel_tuples",
    "SCORERS",
    "resolve_scorer",
    "score",
    "commit",
    "ReducedState",
    "Sums",
    "partial_sums",
    "partial_cov",
    "shard_final",
    "recheck",
    "margin",
]


class UnsupportedBySharding(ConfigError, NotImplementedError):
    """A configuration the sharded attack cannot run (yet); a :class:`ConfigError` so that
    the command line reports it like any bad configuration."""


def check_supported(cfg: ConservAttackConfig) -> None:
    """Raise :class:`UnsupportedBySharding` (a ``NotImplementedError``) for configurations
    the sharded path cannot run."""
    why = []
    if cfg.use_disco:
        why.append(
            "use_disco=True (the distance-correlation tracker holds an O(m^2) distance matrix "
            "of a subsample of every event and updates it move by move; run ConservAttack on "
            "one machine)"
        )
    if cfg.method != "fast":
        why.append(
            "method='exact' (the sequential oracle scores each feature against the state "
            "left by every earlier move: one event per round, nothing to distribute); use "
            "method='fast' with the same budget: every move is still re-checked against the "
            "exact global state when it is applied, so the budgets hold exactly"
        )
    if why:
        raise UnsupportedBySharding("the sharded attack does not support " + "; ".join(why))


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
    """The per-row checks of ``ConservAttack._prepare`` for one shard (the global ones -
    constraint-set size, positive totals of the signed weights - run on the union in
    :func:`setup_from_summaries`)."""
    X = check_finite(X, f"features X of {name}").copy()
    if X.ndim != 2:
        raise InputError(f"features X of {name} must be 2-D, got shape {X.shape}")
    n = len(X)
    if w is None:
        w = np.ones(n)
    else:
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (n,):
            raise InputError(f"weights of {name} must have shape ({n},), got {w.shape}")
        if not np.isfinite(w).all():
            raise InputError(f"weights of {name} contain NaN/inf")
    if y is not None:
        y = _integer_labels(y, n)
    am = _bool_mask(am, n, f"attack_mask of {name}")
    cm = _bool_mask(cm, n, f"constraint_mask of {name}") & (w != 0)
    return X, y, w, am, cm


@dataclass
class Setup:
    """What :meth:`ConservAttack.run` derives before its first iteration (the outputs of
    ``_feature_setup`` and ``_robust_rows``), shipped to every shard."""

    frozen: np.ndarray
    kind: np.ndarray
    sup: np.ndarray
    discrete: np.ndarray
    valid: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mc: np.ndarray
    st: np.ndarray
    binning: FeatureBinning
    spec: list
    extra: list
    limits: np.ndarray
    names: list[str] | None
    #: the ``keep_order`` groups (``resolve_order_groups``), each non-increasing
    groups: list[np.ndarray] = field(default_factory=list)

    def layout(self) -> SimpleNamespace:
        """What ``_State._histograms`` reads besides the data (for :func:`partial_sums`)."""
        return _layout([self.binning, *self.extra])


def _layout(binnings: list[FeatureBinning]) -> SimpleNamespace:
    kmax = max(b.num_bins for b in binnings)
    return SimpleNamespace(
        binnings=binnings, d=binnings[0].n_features, edges=np.empty((0, kmax + 1))
    )


def shard_summary(X: np.ndarray, w: np.ndarray, am: np.ndarray, cm: np.ndarray,
                  max_values: int) -> dict[str, Any]:  # fmt: skip
    """One shard's first reductions for the setup (see the module docstring); its size is
    O(d · max_values), whatever the number of events."""
    Xc, wc = X[cm], w[cm]
    d = X.shape[1]
    inf = np.full(d, np.inf)

    def ext(A, f, empty):
        return f(A, axis=0) if len(A) else empty

    return {
        "sets": _set_sums(w, am, cm),
        "swx": (wc[:, None] * Xc).sum(axis=0),
        "ranges": (
            ext(Xc, np.min, inf),
            ext(Xc, np.max, -inf),
            ext(X, np.min, inf),
            ext(X, np.max, -inf),
        ),  # fmt: skip
        "values": _distinct_values(X, max_values),
    }


def shard_clean_stats(
    X: np.ndarray, w: np.ndarray, cm: np.ndarray, mean: np.ndarray, layout, want_w2: bool
) -> dict[str, np.ndarray]:
    """One shard's second reductions: Σw·(x−mean)(x−mean)ᵀ and the stacked clean
    histograms of Σw (and Σw² with ``want_w2``; None when every weight is 1: then it is the
    Σw histogram) at every binning of ``layout``."""
    out = {"cov": partial_cov(X, w, cm, mean), "H": partial_sums(X, w, cm, layout)[0]}
    if want_w2:
        unit = bool(np.all(w[cm] == 1.0))
        out["H2"] = None if unit else partial_sums(X, w * w, cm, layout)[0]
    return out


def _merge_values(parts: list[list], max_values: int) -> list[np.ndarray | None]:
    """Union of the shards' distinct values per feature (None beyond ``max_values``)."""
    out: list[np.ndarray | None] = []
    for per_shard in zip(*parts):
        if any(u is None for u in per_shard):
            out.append(None)
            continue
        u = np.unique(np.concatenate(per_shard))
        out.append(u if len(u) <= max_values else None)
    return out


def setup_from_summaries(
    cfg: ConservAttackConfig,
    d: int,
    summaries: list[dict[str, Any]],
    names: list[str] | None,
    clean_stats: Any,
    order_counts_fn: Any = None,
) -> tuple[Setup, ReducedState]:
    """The engine's checks and setup from the shards' :func:`shard_summary` results;
    ``clean_stats(mean, layout, want_w2)`` returns every shard's :func:`shard_clean_stats`;
    ``order_counts_fn(columns)`` (needed with ``keep_order``: one more round trip of
    2 integers per group and shard) every shard's :func:`shard_order_counts`.
    Returns the setup and the clean state."""
    eng = ConservAttack(cfg)
    names = _check_sets(d, _total([p["sets"] for p in summaries]), names)
    W = float(_total([p["sets"] for p in summaries])[1])
    swx = _total([p["swx"] for p in summaries])
    mean = swx / W
    rng = [p["ranges"] for p in summaries]
    ranges = tuple(f([r[k] for r in rng], axis=0) for k, f in enumerate((np.min, np.max) * 2))
    values = _merge_values([p["values"] for p in summaries], cfg.max_discrete_values)
    # FeatureBinning.from_data on the constraint set: equal width over its [min, max]
    binning = FeatureBinning.equal_width(ranges[0], ranges[1], cfg.num_bins)
    spec, extra = eng._robust_binnings(binning)
    want_w2 = eng._robust_needs_resolution(spec)
    binnings = [binning, *extra]
    stats = clean_stats(mean, _layout(binnings), want_w2)
    covs = [s["cov"] for s in stats]
    var = np.diag(_total(covs)) / W
    frozen, kind, sup, discrete, valid, lo, hi, mc, st = eng._features_from(
        var, ranges, values, names
    )
    H = _total([s["H"] for s in stats])
    hists = None
    if want_w2:
        H2 = _total([s["H"] if s["H2"] is None else s["H2"] for s in stats])
        rows = [slice(r * d, (r + 1) * d) for r in range(len(binnings))]
        hists = [(H[rr, : b.n_slots], H2[rr, : b.n_slots]) for rr, b in zip(rows, binnings)]
    limits = eng._robust_limits(spec, hists, d)
    groups = order_groups(cfg, d, names, order_counts_fn)
    setup = Setup(frozen, kind, sup, discrete, valid, lo, hi, mc, st, binning, spec, extra,
                  limits, names, groups)  # fmt: skip

    def cov_fn(m: np.ndarray) -> list[np.ndarray]:
        if not np.array_equal(m, mean):  # the clean state's mean is the one asked for
            raise AssertionError("clean covariance asked at another mean")
        return covs

    state = ReducedState(Sums(H=H, swx=swx, cov_fn=cov_fn), np.array([W]), np.array([True]),
                         binning, valid, extra, limits)  # fmt: skip
    return setup, state


def order_groups(
    cfg: ConservAttackConfig, d: int, names: list[str] | None, order_counts_fn: Any
) -> list[np.ndarray]:
    """``resolve_order_groups`` on the union of the shards without gathering it: the names
    are resolved here, the shards count the events that break either order
    (``order_counts_fn(columns)``: their :func:`shard_order_counts`), the summed counts
    decide each group's direction (or raise the same :class:`InputError`)."""
    if not cfg.keep_order:
        return []
    full = names or [str(j) for j in range(d)]
    resolved = order_group_columns(cfg.keep_order, full)
    if order_counts_fn is None:
        raise ConfigError("keep_order needs the shards' order counts (order_counts_fn)")
    counts = _total(order_counts_fn([c for _, c in resolved]))
    return order_directions(resolved, counts, full)


def shard_order_counts(X0: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """One shard's ``order_counts``: per group, its clean events that break a
    non-increasing and a non-decreasing order ((groups, 2) integers)."""
    return order_counts(X0, columns)


def setup_in_memory(
    cfg: ConservAttackConfig, X0, y, w, am, cm, names
) -> tuple[Setup, ReducedState, np.ndarray, np.ndarray]:
    """:func:`setup_from_summaries` with the whole set as one shard (what the coordinator
    does with one worker): the setup, the clean state, and the checked weights and
    constraint mask.  For the kernels' tests and benchmarks on one machine."""
    X0, y, w, am, cm = validate_shard(X0, y, w, am, cm, "data")
    summaries = [shard_summary(X0, w, am, cm, cfg.max_discrete_values)]

    def clean_stats(mean, layout, want_w2):
        return [shard_clean_stats(X0, w, cm, mean, layout, want_w2)]

    setup, state = setup_from_summaries(
        cfg, X0.shape[1], summaries, names, clean_stats,
        lambda cols: [shard_order_counts(X0, cols)],
    )  # fmt: skip
    return setup, state, w, cm


def shard_bounds(cfg: ConservAttackConfig, setup: Setup, X0: np.ndarray):
    """``ConservAttack._envelope`` for a shard's rows: (lo, hi, env) with lo/hi (1, d) per
    feature, or (n, d) per entry when ``config.envelope`` is set (env: widths or None)."""
    return ConservAttack(cfg)._envelope(X0, setup.names, setup.lo, setup.hi)


def movable_mask(X0, am, frozen, user, default_value) -> np.ndarray:
    """``ConservAttack.run``'s (n, d) movable mask for a shard's rows."""
    return _movable_mask(X0, am, frozen, user, default_value)


def kernel_tuples(cfg: ConservAttackConfig, setup: Setup, it: int, norm0: float, lo, hi):
    """``(cand, budget, allow_inadmissible)`` exactly as :meth:`ConservAttack.run` builds
    them for iteration ``it``; ``lo``/``hi`` the bounds from :func:`shard_bounds` (rows of
    the events the kernel indexes)."""
    mode = K.MODE_CUMULATIVE if cfg.budget == "cumulative" else K.MODE_PER_CHANGE
    allow_inadmissible = (not cfg.use_no_change) and mode == K.MODE_PER_CHANGE
    ncand = int(cfg.num_candidates or 0)
    cand = K.make_cand(lo, hi, setup.mc, setup.st, ncand, cfg.max_candidates, setup.kind,
                       cfg.seed, it, cfg.randomize_step, setup.sup)  # fmt: skip
    budget = (
        mode,
        cfg.max_jsd_single_change,
        cfg.max_frob_single_change,
        norm0,
        cfg.alpha,
        cfg.beta,
    )
    return cand, budget, allow_inadmissible


def score(
    X, w, cons, events, sign, movable, cand, stats, budget, allow_inadmissible,
    ids=None, scorer="numba", device="cpu",
):  # fmt: skip
    """(deltas, status) of ``events`` (rows of ``X``): :func:`~advsyst.attacks._kernels.score_block`
    (``scorer="numba"``) or its torch port
    :func:`~advsyst.attacks._torch_scorer.score_block_torch` on ``device``
    (``scorer="torch"``); :func:`resolve_scorer` turns the user's option into this pair.
    ``ids`` (one per row of ``X``) are the global event ids seeding the draws (default: the
    rows)."""
    if ids is None:
        ids = np.arange(len(X), dtype=np.int64)
    if scorer == "torch":
        from advsyst.attacks._torch_scorer import score_block_torch

        return score_block_torch(
            X, w, cons, events, sign, movable, cand, stats, budget, allow_inadmissible,
            device=device, ids=np.asarray(ids, dtype=np.int64)[events],  # per event, not row
        )  # fmt: skip
    if scorer != "numba":
        raise ConfigError(f"scorer implementation must be 'numba' or 'torch', got {scorer!r}")
    return call(K.score_block, X, w, cons, events, ids, sign, movable, cand, stats, budget,
                allow_inadmissible)  # fmt: skip


def commit(X, w, cons, sign, deltas, status, cand, stats, budget, ids) -> int:
    """:func:`~advsyst.attacks._kernels.apply_block` on a compact block: row ``t`` of ``X``
    (and of per-entry bounds in ``cand``) is the ``t``-th event of the block, ``ids[t]`` its
    global event id (seeds the re-scoring's draws); returns the number of undone moves."""
    events = np.arange(len(X), dtype=np.int64)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    return int(call(K.apply_block, X, w, cons, events, ids, sign, deltas, status, cand, stats,
                    budget, True))  # fmt: skip


# --------------------------------------------------------------------------- state
@dataclass
class Sums:
    """The reduced data a :class:`ReducedState` resyncs from: the summed stacked
    histograms, Σw·x, and ``cov_fn(mean)`` returning the shards' partial covariances."""

    H: np.ndarray
    swx: np.ndarray
    cov_fn: Any


def partial_sums(X: np.ndarray, w: np.ndarray, cons: np.ndarray, layout: SimpleNamespace):
    """One shard's first-pass sums over its constraint events: (stacked histograms of every
    tracked binning as ``_State._histograms`` lays them out, Σw, Σw·x)."""
    return F.partial_sums(X, w, cons, layout.binnings)


#: one shard's Σw·(x−mean)(x−mean)ᵀ over its constraint events
partial_cov = F.partial_cov


def _total(parts: list) -> Any:
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


class ReducedState(_State):
    """``conservattack._State`` that can also be built and resynced from per-shard
    :class:`Sums` (``ReducedState(sums, [W], [True], binning, ...)``: ``_State.__init__``
    itself with the constraint set's total weight ``W``)."""

    FIELDS = ("edges", "lo_e", "inv_w", "H0", "H", "hs", "Ssum", "mean", "cov", "sig",
              "Ccur", "C0", "valid", "F2")  # fmt: skip
    SCALARS = ("W", "norm0")
    #: the arrays the commits mutate (what a worker needs each round)
    MUTABLE = ("H", "hs", "Ssum", "mean", "cov", "sig", "Ccur", "F2")
    CONSTANTS = ("edges", "lo_e", "inv_w", "H0", "C0", "valid", "W", "norm0")

    def _histograms(self, src: Any) -> np.ndarray:
        if isinstance(src, Sums):
            return src.H.copy()  # the clean H0 and the tracked H must not share memory
        return super()._histograms(src)

    def _moments(self, src: Any) -> None:
        if not isinstance(src, Sums):
            return super()._moments(src)
        self.mean = src.swx / self.W
        self.cov = _total(src.cov_fn(self.mean)) / self.W
        self._correlation()

    # -- shipping and checkpointing -------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.MUTABLE}

    def constants(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.CONSTANTS}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k)) for k in (*self.FIELDS, *self.SCALARS)}

    def restore(self, a: dict[str, np.ndarray]) -> None:
        """Load a checkpoint written by :meth:`to_arrays` into this (set-up) state."""
        for k in self.FIELDS:
            if np.shape(a[k]) != np.shape(getattr(self, k)):
                raise ConfigError(f"checkpointed state {k} has another shape than this run's")
            setattr(self, k, np.array(a[k]))
        for k in self.SCALARS:
            setattr(self, k, float(a[k]))

    @staticmethod
    def for_worker(const: dict[str, Any], snap: dict[str, np.ndarray]) -> tuple:
        """The ``stats`` tuple on a worker from the constant part and a snapshot."""
        return _State.kernel_args(SimpleNamespace(**const, **snap))


# --------------------------------------------------------------------------- results
def shard_final(setup: Setup, X0, X, y, w, am, cm, pred_clean, pred_adv, lo, hi, env):
    """One shard's first reductions of the final recheck
    (:func:`advsyst.attacks._final.final_part` at every tracked binning, with the bound and
    envelope checks on the shard's own bounds, and its events out of order with
    ``keep_order``)."""
    return F.final_part(
        X0, X, w, am, cm, pred_clean, pred_adv, [setup.binning, *setup.extra], lo, hi, env, y,
        setup.groups,
    )  # fmt: skip


def recheck(
    cfg: ConservAttackConfig, setup: Setup, parts: list[dict[str, Any]], cov_fn, count_fn,
    auroc_fn,
) -> dict[str, Any]:  # fmt: skip
    """``ConservAttack.recheck`` on the union of the shards: ``parts`` their
    :func:`shard_final`, ``cov_fn(mean0, mean)`` the list of their
    :func:`~advsyst.attacks._final.final_covs`, ``count_fn(t)`` the list of their
    :func:`~advsyst.attacks._final.count_le` of the envelope ratios, ``auroc_fn()`` the list
    of their :func:`~advsyst.attacks._final.auroc_part` (None entries: no AUROC) or None.
    Raises :class:`~advsyst.errors.BudgetViolation` if a guaranteed budget is exceeded."""
    tot = F.sum_parts(parts)

    def covs(m0, m):
        cs = cov_fn(m0, m)
        return _total([c[0] for c in cs]), _total([c[1] for c in cs])

    def aurocs():
        pieces = auroc_fn()
        return None if any(p is None for p in pieces) else pieces

    use_auroc = auroc_fn is not None and tot["labels"] is not None and len(tot["labels"]) == 2
    m = ConservAttack(cfg).recheck(
        tot, covs, lambda t: _total(count_fn(t)), aurocs if use_auroc else None, setup.valid,
        [setup.binning, *setup.extra], setup.spec, setup.limits, groups=setup.groups,
    )  # fmt: skip
    m["discrete_features"] = np.nonzero(setup.discrete)[0].tolist()
    return m


def margin(adapter: ModelAdapter, X: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The ``order: margin`` key of :meth:`ConservAttack.run`."""
    return ConservAttack._margin(adapter, X, target)


#: partial sums of :meth:`ConservAttack._fooling`: (Σw over attacked, Σw over flipped)
fooling = F.fooling_sums
# the shards' pieces of the final recheck (see :mod:`advsyst.attacks._final`)
final_covs = F.final_covs
envelope_ratios = F.envelope_ratios
count_le = F.count_le
auroc_part = F.auroc_part
