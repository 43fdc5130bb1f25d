"""CONSERVAttack: flip a tagger's decisions while every feature's marginal distribution
(JSD) and the linear correlations (ΔFN) of the data set stay within a budget.

The engine works on NumPy arrays and a torch model only (no coffea).  Candidate scoring and
the exact state updates are numba kernels (:mod:`advsyst.attacks._kernels`); gradients
come from the model on ``config.device`` (CPU or GPU).
"""

from __future__ import annotations

import logging
import time
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import torch

from advsyst._io import provenance
from advsyst.attacks import _final as F
from advsyst.attacks import _kernels as K
from advsyst.attacks._final import order_violations
from advsyst.attacks.config import ConservAttackConfig
from advsyst.attacks.model import ModelAdapter, as_adapter
from advsyst.attacks.result import AttackResult
from advsyst.errors import BudgetViolation, ConfigError, InputError
from advsyst.stats import FeatureBinning, check_finite, delta_fn_from_cov, histogram_jsd, js_term

__all__ = [
    "AUTO_ROBUST_BINS",
    "AUTO_ROBUST_OFFSETS",
    "ConservAttack",
    "MIN_CONSTRAINT_EVENTS",
    "conservattack",
    "order_bounds",
    "order_counts",
    "order_directions",
    "order_group_columns",
    "order_violations",
    "resolve_envelope",
    "resolve_order_groups",
]

log = logging.getLogger(__name__)

#: fewer events than this in the constraint set make dataset-level statistics meaningless
MIN_CONSTRAINT_EVENTS = 10
#: bin counts and offsets (in bin widths) of ``robust_binnings="auto"``: every combination
AUTO_ROBUST_BINS = (50, 71, 100, 141, 200)
AUTO_ROBUST_OFFSETS = (0.0, 0.25, 0.5, 0.75)


def resolve_envelope(
    envelope: dict[str, dict[str, float]], names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Envelope of every feature from ``{name or glob: {relative: r} | {absolute: a}}``.

    The most specific key wins: an exact feature name beats any glob pattern; among
    matching globs the longest pattern wins (the first listed on a tie).  Returns
    ``kind`` (d,) int (0 = no envelope, 1 = relative, 2 = absolute) and ``value`` (d,).
    """
    d = len(names)
    kind = np.zeros(d, dtype=np.int64)
    value = np.zeros(d)
    used = set()
    for j, name in enumerate(names):
        best = None
        if name in envelope:
            best = name
        else:
            globs = [k for k in envelope if any(c in k for c in "*?[") and fnmatchcase(name, k)]
            if globs:
                best = max(globs, key=len)  # max keeps the first of equal lengths
        if best is None:
            continue
        used.add(best)
        (k, v), = envelope[best].items()  # fmt: skip
        kind[j] = 1 if k == "relative" else 2
        value[j] = float(v)
    unused = [k for k in envelope if k not in used]
    if unused:
        log.warning("envelope keys %s match no feature", unused)
    return kind, value


def order_group_columns(keep_order: Any, names: list[str]) -> list[tuple[Any, np.ndarray]]:
    """The name-resolution part of :func:`resolve_order_groups`: every ``keep_order`` group
    as given with its columns in the order listed (a glob: in column order).  Raises
    :class:`ConfigError` for an item that matches no feature or a group of fewer than two
    features."""
    out = []
    for g in keep_order or []:
        cols: list[int] = []
        for item in [g] if isinstance(g, str) else g:
            if isinstance(item, int):
                hit = [item] if 0 <= item < len(names) else []
            elif item in names:
                hit = [names.index(item)]
            else:
                hit = [j for j, n in enumerate(names) if fnmatchcase(n, item)]
            if not hit:
                raise ConfigError(f"keep_order: {item!r} matches no feature")
            cols += [j for j in hit if j not in cols]
        if len(cols) < 2:
            raise ConfigError(f"keep_order: group {g!r} has fewer than two features ({cols})")
        out.append((g, np.asarray(cols, dtype=np.int64)))
    return out


def order_counts(X0: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """Per group (columns as listed): the events of ``X0`` that break a non-increasing order
    and those that break a non-decreasing one, an int64 (groups, 2) array.  Counts of parts
    of the data add up (the sharded attack sums its shards')."""
    out = np.zeros((len(columns), 2), dtype=np.int64)
    for k, c in enumerate(columns):
        step = np.diff(X0[:, c], axis=1)
        out[k] = (step > 0).any(axis=1).sum(), (step < 0).any(axis=1).sum()
    return out


def order_directions(
    resolved: list[tuple[Any, np.ndarray]], counts: np.ndarray, names: list[str]
) -> list[np.ndarray]:
    """The direction part of :func:`resolve_order_groups`: from :func:`order_group_columns`
    and the :func:`order_counts` of all the clean events, every group's columns ordered so
    that the clean data holds it non-increasing (a group held non-decreasing is reversed).
    Raises :class:`InputError` for a group that is sorted in neither direction."""
    groups = []
    for (g, c), (down, up) in zip(resolved, np.asarray(counts)):
        if down == 0:
            groups.append(c)
        elif up == 0:
            groups.append(c[::-1].copy())
        else:
            raise InputError(
                f"keep_order: group {g!r} ({[names[j] for j in c]}) is not sorted in every "
                f"clean event: {int(down)} event(s) break a non-increasing order, {int(up)} a "
                "non-decreasing one; list the features in their stored order"
            )
    return groups


def resolve_order_groups(keep_order: Any, names: list[str], X0: np.ndarray) -> list[np.ndarray]:
    """The columns of every ``keep_order`` group (see
    :class:`~advsyst.attacks.config.ConservAttackConfig`), each ordered so that every clean
    event holds the group non-increasing.

    A group is a glob or a list of feature names, globs or column indices; its features are
    taken in the order listed (a glob: in column order) and must be sorted in every clean
    event of ``X0``, non-increasingly (returned as is) or non-decreasingly (returned
    reversed); ties are allowed.  Raises :class:`ConfigError` for an item that matches no
    feature or a group of fewer than two features, :class:`InputError` for a group the
    clean data does not hold sorted.  (:func:`order_group_columns`, then
    :func:`order_directions` on the :func:`order_counts` of ``X0``: the sharded attack runs
    the same two parts on the summed counts of its shards.)
    """
    resolved = order_group_columns(keep_order, names)
    return order_directions(resolved, order_counts(X0, [c for _, c in resolved]), names)


def order_bounds(
    X: np.ndarray, groups: list[np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry bounds ``lo``/``hi`` (n, d) that keep every group sorted in every event
    whatever moves one iteration makes (``groups`` from :func:`resolve_order_groups`, each
    non-increasing along its columns; ``lo``/``hi``: the bounds without the constraint,
    (1, d) or (n, d)).

    For each pair of neighbours ``u = x[g_k] >= v = x[g_k+1]`` the upper one may move down
    to the midpoint ``m = (u + v)/2`` plus a margin ``4·eps·max(|u|, |v|)`` and the lower
    one up to ``m`` minus that margin.  Neighbours therefore keep a gap between their
    ranges, larger than the rounding of ``x + move`` in the kernels, so no pair can swap
    even when both move in one iteration.  Tied neighbours cannot move towards each other.
    The price: one iteration moves a value at most half-way to its neighbour.
    """
    if not groups:
        return lo, hi
    n, d = X.shape
    lo2 = np.array(np.broadcast_to(lo, (n, d)), dtype=np.float64)
    hi2 = np.array(np.broadcast_to(hi, (n, d)), dtype=np.float64)
    eps = np.finfo(np.float64).eps
    for g in groups:
        u, v = X[:, g[:-1]], X[:, g[1:]]
        mid = 0.5 * u + 0.5 * v
        margin = 4.0 * eps * np.maximum(np.abs(u), np.abs(v))
        lo2[:, g[:-1]] = np.maximum(lo2[:, g[:-1]], mid + margin)
        hi2[:, g[1:]] = np.minimum(hi2[:, g[1:]], mid - margin)
    return lo2, hi2


def _bool_mask(mask: Any, n: int, name: str, default: bool = True) -> np.ndarray:
    if mask is None:
        return np.full(n, default)
    m = np.asarray(mask)
    if m.shape != (n,):
        raise InputError(f"{name} must have shape ({n},), got {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise InputError(f"{name} must be boolean")
        m = m.astype(bool)
    return m


def _index_list(v: Any, d: int, name: str, names: list[str] | None) -> np.ndarray:
    """Indices (ints or feature names) or a boolean mask -> boolean mask of length d."""
    out = np.zeros(d, dtype=bool)
    if v is None:
        return out
    arr = np.asarray(v)
    if arr.dtype == bool:
        if arr.shape != (d,):
            raise ConfigError(f"{name} mask must have length {d}")
        return arr.copy()
    for item in arr.ravel().tolist():
        if isinstance(item, str):
            if not names or item not in names:
                raise ConfigError(f"{name}: unknown feature name {item!r}")
            item = names.index(item)
        if not 0 <= int(item) < d:
            raise ConfigError(f"{name}: feature index {item} out of range for {d} features")
        out[int(item)] = True
    return out


def _integer_labels(y: Any, n: int) -> np.ndarray:
    """Labels as int64; raise unless every value is an integer (bool, integer dtype, or
    floats with integral values)."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise InputError(f"labels y must have shape ({n},), got {y.shape}")
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"labels y must be integer class indices; {int(bad.sum())} value(s) are not, "
                f"e.g. y[{i}] = {float(y[i])}"
            )
        return y.astype(np.int64)
    raise InputError(f"labels y must be integer class indices, got dtype {y.dtype}")


def _set_sums(w: np.ndarray, am: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """What :func:`_check_sets` reads, additive over disjoint parts of the events: [number
    of constraint events, their Σw, number of attacked events, their Σw]."""
    return np.array([cm.sum(), w[cm].sum(), am.sum(), w[am].sum()], dtype=np.float64)


def _check_sets(d: int, sums: np.ndarray, feature_names: Any) -> list[str] | None:
    """The checks of the whole data set (``sums`` from :func:`_set_sums`, summed over the
    shards of a sharded attack): a large enough constraint set, positive totals of the
    signed weights, one name per feature.  Returns the names as a list (or None)."""
    n_cons, tot_cons, n_att, tot_att = (float(v) for v in sums)
    if n_cons < MIN_CONSTRAINT_EVENTS:
        raise InputError(
            f"the constraint set has {int(n_cons)} events with non-zero weight; at least "
            f"{MIN_CONSTRAINT_EVENTS} are needed for meaningful histograms and correlations"
        )
    # signed weights (NLO): every statistic uses them; only the totals must be positive
    for name, count, tot in (
        ("constraint set", n_cons, tot_cons),
        ("attacked set", n_att, tot_att),
    ):
        if count > 0 and not tot > 0:
            raise InputError(
                f"the total event weight of the {name} is not positive ({tot:.6g}): "
                "signed weights are supported, but the distributions they describe "
                "need a positive total"
            )
    names = list(feature_names) if feature_names is not None else None
    if names is not None and len(names) != d:
        raise InputError(f"{len(names)} feature names for {d} features")
    return names


def _distinct_values(X: np.ndarray, max_values: int) -> list[np.ndarray | None]:
    """Per feature its sorted distinct values, or None where there are more than
    ``max_values`` (every feature None when ``max_values`` is 0)."""
    out: list[np.ndarray | None] = []
    for j in range(X.shape[1]):
        u = np.unique(X[:, j]) if max_values > 0 else None
        out.append(u if u is not None and len(u) <= max_values else None)
    return out


def _movable_mask(
    X0: np.ndarray, am: np.ndarray, frozen: np.ndarray, user: Any, default_value: Any
) -> np.ndarray:
    """(n, d) entries that may move: attacked events, features not frozen, the user's
    ``movable`` mask (checked), and entries not equal to ``default_value``."""
    n, d = X0.shape
    movable = am[:, None] & ~frozen[None, :]
    if user is not None:
        um = np.asarray(user)
        if um.shape != (n, d):
            raise InputError(f"movable must have shape ({n}, {d}), got {um.shape}")
        if um.dtype != bool:
            if not np.isin(um, (0, 1)).all():
                raise InputError("movable must be a boolean (n, d) mask")
            um = um.astype(bool)
        movable &= um
    if default_value is not None:
        movable &= X0 != default_value
    return np.ascontiguousarray(movable)


class _State:
    """All statistics the kernels read and update, for the constraint set.

    ``binning`` is the attack's own binning; ``extra`` further binnings whose histograms
    are tracked too (the binning-robust budget); ``limits`` (len(extra) + 1, d) the JSD
    limit of every histogram row (inf: none beyond the budget's ``max_jsd``, which always
    applies to the attack's own binning).
    """

    def __init__(
        self,
        X: np.ndarray,
        w: np.ndarray,
        cons: np.ndarray,
        binning: FeatureBinning,
        valid: np.ndarray,
        extra: list[FeatureBinning] | tuple = (),
        limits: np.ndarray | None = None,
    ):
        self.binning = binning
        self.binnings = [binning, *extra]
        d = binning.n_features
        R = len(self.binnings)
        kr = np.array([b.num_bins for b in self.binnings])
        kmax = int(kr.max())
        edges = np.empty((R * d, kmax + 1))
        for r, b in enumerate(self.binnings):
            rows = slice(r * d, (r + 1) * d)
            edges[rows, : b.num_bins + 1] = b.edges
            edges[rows, b.num_bins + 1 :] = b.edges[:, -1:]
        krow = np.repeat(kr, d).astype(np.float64)
        self.edges = np.ascontiguousarray(edges)
        self.lo_e = edges[:, 0].copy()
        top = edges[np.arange(R * d), krow.astype(np.int64)]
        self.inv_w = krow / (top - self.lo_e)
        self.valid = valid
        self.cons = cons
        self.w = w
        self.d = d
        self.hs = np.zeros((4, R * d))
        self.hs[3] = krow
        lim = np.full((R, d), np.inf) if limits is None else np.asarray(limits, np.float64)
        self.hs[2] = (lim**2).ravel()
        self.H0 = self._histograms(X)
        self.hs[0] = np.clip(self.H0, 0.0, None).sum(axis=1)
        self.W = float(w[cons].sum())
        self._moments(X)
        self.C0 = self.Ccur.copy()
        self.norm0 = float(np.linalg.norm(self.C0))
        if self.norm0 <= 0:
            self.norm0 = 1.0
        self.resync(X)

    def _histograms(self, X: np.ndarray) -> np.ndarray:
        return F.stacked_histograms(self.binnings, X[self.cons], self.w[self.cons])

    def _moments(self, X: np.ndarray) -> None:
        Xc, wc = X[self.cons], self.w[self.cons]
        self.mean = (wc[:, None] * Xc).sum(axis=0) / self.W
        Z = Xc - self.mean
        self.cov = (wc[:, None] * Z).T @ Z / self.W
        self._correlation()

    def _correlation(self) -> None:
        """``sig`` and the correlation ``Ccur`` from ``cov`` (invalid features zeroed)."""
        var = np.diag(self.cov)
        self.sig = np.sqrt(np.clip(var, 0, None))
        s = np.where(self.valid, self.sig, 1.0)
        C = self.cov / s[:, None] / s[None, :]
        C[~self.valid, :] = 0.0
        C[:, ~self.valid] = 0.0
        self.Ccur = np.ascontiguousarray(C)

    def resync(self, X: np.ndarray) -> None:
        """Recompute the current statistics exactly from the data (drops rounding drift)."""
        self.H = self._histograms(X)
        Hp = np.clip(self.H, 0.0, None)
        self.hs[1] = Hp.sum(axis=1)
        P0 = np.clip(self.H0, 0.0, None) / self.hs[0][:, None]
        self.Ssum = js_term(P0, Hp / self.hs[1][:, None]).sum(axis=1)
        self._moments(X)
        self.F2 = np.array([float(((self.Ccur - self.C0) ** 2).sum())])

    def jsd(self) -> np.ndarray:
        """JSD of every feature at the attack's own binning."""
        return np.sqrt(np.clip(self.Ssum[: self.d], 0, None))

    def jsd_rows(self) -> np.ndarray:
        """(R, d) JSD at every tracked binning."""
        return np.sqrt(np.clip(self.Ssum, 0, None)).reshape(-1, self.d)

    def dfn(self) -> float:
        return float(np.sqrt(self.F2[0]) / self.norm0)

    def kernel_args(self) -> tuple:
        """The ``stats`` tuple of :mod:`advsyst.attacks._kernels` (arrays shared, not copied:
        the kernels update this state in place)."""
        return (
            self.edges,
            self.lo_e,
            self.inv_w,
            self.H0,
            self.H,
            self.hs,
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


def attack_result(
    cfg: ConservAttackConfig, X0, X_final, fooled, pred_clean, pred_adv, am, cm, history,
    metrics, best_it, moved=None, **extra_provenance: Any,
) -> AttackResult:  # fmt: skip
    """The :class:`AttackResult` of a CONSERVAttack run (one process or sharded:
    ``extra_provenance`` adds e.g. ``sharded=...``).  ``moved`` (per event) may replace
    ``X0`` (then None)."""
    return AttackResult(
        X_adv=X_final,
        fooled=fooled,
        moved=(X_final != X0).any(axis=1) if moved is None else moved,
        pred_clean=pred_clean,
        pred_adv=pred_adv,
        attack_mask=am,
        constraint_mask=cm,
        history=history,
        metrics=metrics,
        config=cfg.to_dict(),
        seed=cfg.seed,
        best_iteration=best_it,
        provenance=provenance(cfg.to_dict(), cfg.seed, attack="conservattack", **extra_provenance),
    )


class ConservAttack:
    """Dataset-level adversarial attack under JSD and ΔFN budgets.

    Parameters
    ----------
    config
        A :class:`ConservAttackConfig`, a mapping of its fields, or None for defaults.
    **overrides
        Field values overriding ``config``.

    Examples
    --------
    >>> res = ConservAttack(max_jsd=0.01, max_dfn=0.01).run(X, model)   # doctest: +SKIP
    >>> res.X_adv, res.fooled, res.metrics["fooling_ratio"]            # doctest: +SKIP
    """

    def __init__(self, config: ConservAttackConfig | dict | None = None, **overrides: Any):
        if isinstance(config, ConservAttackConfig):
            config = config.to_dict()
        self.config = ConservAttackConfig.from_dict(config or {}, **overrides)

    # ------------------------------------------------------------------ helpers
    def _prepare(self, X, y, weights, attack_mask, constraint_mask, feature_names):
        X = check_finite(X, "features X").copy()
        n, d = X.shape
        if n < 2 or d < 1:
            raise InputError(f"need at least 2 events and 1 feature, got shape {X.shape}")
        if weights is None:
            w = np.ones(n)
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (n,):
                raise InputError(f"weights must have shape ({n},), got {w.shape}")
            if not np.isfinite(w).all():
                raise InputError("weights contain NaN/inf")
        if y is not None:
            y = _integer_labels(y, n)
        am = _bool_mask(attack_mask, n, "attack_mask")
        cm = _bool_mask(constraint_mask, n, "constraint_mask") & (w != 0)
        names = _check_sets(d, _set_sums(w, am, cm), feature_names)
        return X, y, w, am, cm, names

    def _feature_setup(self, X, w, cm, names):
        Xc, wc = X[cm], w[cm]
        mu = (wc[:, None] * Xc).sum(axis=0) / wc.sum()
        var = (wc[:, None] * (Xc - mu) ** 2).sum(axis=0) / wc.sum()
        ranges = (Xc.min(axis=0), Xc.max(axis=0), X.min(axis=0), X.max(axis=0))
        values = _distinct_values(X, self.config.max_discrete_values)
        return self._features_from(var, ranges, values, names)

    def _features_from(self, var, ranges, values, names):
        """:meth:`_feature_setup` from reductions of the data: the weighted variance of the
        constraint set, ``ranges = (min, max)`` over the constraint set then over every
        event, and :func:`_distinct_values` of every event (the sharded attack reduces
        these over its shards)."""
        cfg = self.config
        cmin, cmax, amin, amax = ranges
        d = len(var)
        immutable = _index_list(cfg.immutable, d, "immutable", names)
        is_int = _index_list(cfg.integer_features, d, "integer_features", names)
        const = (cmax - cmin == 0) | ~(var > 0)
        if const.any():
            log.warning(
                "features %s are constant (or have a non-positive signed-weight variance) in "
                "the constraint set: frozen and left out of the correlation budget",
                np.nonzero(const)[0].tolist()[:20],
            )
        if cfg.bounds is not None:
            b = np.asarray(cfg.bounds, dtype=np.float64)
            if b.shape != (2, d):
                raise ConfigError(f"bounds must be [[lo x {d}], [hi x {d}]], got shape {b.shape}")
            lo, hi = b
        else:
            lo, hi = amin, amax
        scale = np.where(hi > lo, hi - lo, 1.0) if cfg.units == "range" else np.ones(d)
        mc = cfg.min_change * scale
        st = cfg.step * scale
        kind = is_int.astype(np.int8)
        sup, discrete = self._discrete(values, ~(immutable | const | is_int), names)
        frozen = immutable | const
        if cfg.discrete == "freeze":
            frozen = frozen | discrete
        else:
            kind[discrete] = 2
        return frozen, kind, sup, discrete, ~const, lo, hi, mc, st

    def _discrete(self, distinct, candidates, names):
        """Features with at most ``max_discrete_values`` distinct clean values (``distinct``
        from :func:`_distinct_values`): their sorted observed values (d, V) NaN-padded, and
        the mask."""
        cfg = self.config
        d = len(distinct)
        disc = np.zeros(d, dtype=bool)
        values: dict[int, np.ndarray] = {}
        for j in np.nonzero(candidates)[0]:
            u = distinct[j]
            if u is not None:
                disc[j] = True
                values[int(j)] = u
        sup = np.full((d, max([len(v) for v in values.values()], default=1)), np.nan)
        for j, u in values.items():
            sup[j, : len(u)] = u
        if disc.any():
            label = [names[j] if names else j for j in np.nonzero(disc)[0]]
            log.info(
                "discrete features (<= %d distinct clean values) %s: %s",
                cfg.max_discrete_values,
                label[:30],
                "moved only between observed values" if cfg.discrete == "support" else "frozen",
            )
        return sup, disc

    def _envelope(self, X0, names, lo, hi):
        """Per-entry bounds from ``config.envelope`` ((1, d) feature bounds without one) and
        the per-entry envelope widths (None without an envelope)."""
        d = X0.shape[1]
        if not self.config.envelope:
            return lo[None, :], hi[None, :], None
        kind, val = resolve_envelope(self.config.envelope, names or [str(j) for j in range(d)])
        env = np.where(kind == 1, val * np.abs(X0), np.where(kind == 2, val, np.inf))
        lo2 = np.maximum(lo[None, :], X0 - env)
        hi2 = np.minimum(hi[None, :], X0 + env)
        return np.ascontiguousarray(lo2), np.ascontiguousarray(hi2), env

    def _robust_rows(self, Xc, wc, binning):
        """Extra binnings of the binning-robust budget and the JSD limit of every row."""
        spec, extra = self._robust_binnings(binning)
        hists = None
        if self._robust_needs_resolution(spec):
            hists = [(b.histogram(Xc, wc), b.histogram(Xc, wc * wc)) for b in [binning, *extra]]
        return spec, extra, self._robust_limits(spec, hists, Xc.shape[1])

    def _robust_needs_resolution(self, spec) -> bool:
        """Do the limits of :meth:`_robust_limits` need the clean histograms?"""
        return bool(spec) and self.config.robust_noise_fraction is not None

    def _robust_binnings(self, binning):
        """(spec, extra): the extra binnings of the binning-robust budget."""
        cfg = self.config
        rb = cfg.robust_binnings
        if rb == "auto":
            rb = [[k, off] for k in AUTO_ROBUST_BINS for off in AUTO_ROBUST_OFFSETS]
        spec = []
        for k, off in rb or []:
            key = (int(k), float(off))
            if key != (cfg.num_bins, 0.0) and key not in spec:
                spec.append(key)
        lo, hi = binning.edges[:, 0], binning.edges[:, -1]
        extra = [FeatureBinning.equal_width(lo, hi, k, off) for k, off in spec]
        return spec, extra

    def _robust_limits(self, spec, hists, d):
        """The JSD limit of every histogram row, (len(spec) + 1, d); ``hists``: the clean
        (Σw, Σw²) histograms of the constraint set at the own and every extra binning, when
        :meth:`_robust_needs_resolution`."""
        cfg = self.config
        limits = np.full((len(spec) + 1, d), np.inf)
        if self._robust_needs_resolution(spec):
            # every tracked binning (the own one too, next to max_jsd): a fraction of its
            # statistical resolution
            from advsyst.stats.validation import resolution_from_histograms

            for r, (H, H2) in enumerate(hists):
                res = resolution_from_histograms(
                    H, H2, cfg.robust_bootstrap, 0.95, cfg.seed + 7919 * r
                )
                limits[r] = cfg.robust_noise_fraction * res
        elif spec:
            limits[1:] = cfg.max_jsd_single_change  # the own binning's limit on every other
        return limits

    # ------------------------------------------------------------------ main
    def run(
        self,
        X: np.ndarray,
        model: torch.nn.Module | ModelAdapter,
        y: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        attack_mask: np.ndarray | None = None,
        constraint_mask: np.ndarray | None = None,
        feature_names: list[str] | None = None,
        movable: np.ndarray | None = None,
    ) -> AttackResult:
        """Attack ``X`` (n, d) against ``model``; returns an :class:`AttackResult`.

        ``attack_mask`` selects the events that may move (default all); ``constraint_mask``
        the events whose statistics are monitored (default all; e.g. a control region).
        ``weights`` are signed event weights (NLO); the totals of the constraint and the
        attacked sets must be positive.  ``movable`` is a boolean (n, d) mask: False = this
        entry never moves (e.g. padded particle slots); it combines with every other rule.
        """
        cfg = self.config
        t_start = time.perf_counter()
        X0, y, w, am, cm, names = self._prepare(
            X, y, weights, attack_mask, constraint_mask, feature_names
        )
        n, d = X0.shape
        adapter = as_adapter(
            model,
            n_features=d,
            output=cfg.model_output,
            device=cfg.device,
            batch_size=cfg.batch_size,
            threshold=cfg.threshold,
        )
        pred_clean = adapter.predict(X0)
        if cfg.target == "label":
            if y is None:
                raise ConfigError("target='label' needs labels y")
            target = y
        else:
            target = pred_clean
        frozen, kind, sup, discrete, valid, lo, hi, mc, st = self._feature_setup(X0, w, cm, names)
        movable = _movable_mask(X0, am, frozen, movable, cfg.default_value)
        elo, ehi, env = self._envelope(X0, names, lo, hi)
        groups = resolve_order_groups(cfg.keep_order, names or [str(j) for j in range(d)], X0)
        mode = K.MODE_CUMULATIVE if cfg.budget == "cumulative" else K.MODE_PER_CHANGE
        allow_inadmissible = (not cfg.use_no_change) and mode == K.MODE_PER_CHANGE
        if not cfg.use_no_change and mode == K.MODE_CUMULATIVE:
            log.warning(
                "use_no_change=False is ignored under budget='cumulative': the limits "
                "are hard, an inadmissible move is never applied"
            )

        binning = FeatureBinning.from_data(X0[cm], cfg.num_bins)
        robust_spec, extra, limits = self._robust_rows(X0[cm], w[cm], binning)
        state = _State(X0, w, cm, binning, valid, extra, limits)
        tracker = None
        if cfg.use_disco:
            from advsyst.attacks import _disco

            if (w[cm] < 0).any():
                log.warning(
                    "use_disco with negative weights: the distance-correlation subsample is "
                    "drawn with probability proportional to max(w, 0) and is unweighted"
                )

            tracker = _disco.DiscoTracker.from_data(
                X0[cm], cfg.seed, cfg.disco_subsample, valid, np.nonzero(cm)[0], w[cm]
            )
        X = X0.copy()
        fooled = am & (pred_clean != target)
        pred_adv = pred_clean.copy()
        ncand = int(cfg.num_candidates or 0)
        history: list[dict[str, Any]] = []
        best_fr, best_X, best_it = self._fooling(pred_clean, pred_adv, am, w), X.copy(), 0
        iterator = range(1, cfg.n_iterations + 1)
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(iterator, desc="CONSERVAttack", unit="it", leave=False)
            iterator = bar
        for it in iterator:
            t0 = time.perf_counter()
            active = am & (~fooled | cfg.optimize_already_fooled)
            events = np.nonzero(active)[0]
            if cfg.order == "margin" and len(events):
                events = events[
                    np.argsort(self._margin(adapter, X[events], target[events]), kind="stable")
                ]
            entries = undone = n_moved = 0
            if len(events):
                grad = adapter.loss_gradient(X[events], target[events])
                sign = np.sign(grad)
                before = X[events].copy()
                # the kernels' argument groups (see advsyst.attacks._kernels)
                blo, bhi = order_bounds(X, groups, elo, ehi)
                cand = K.make_cand(blo, bhi, mc, st, ncand, cfg.max_candidates, kind,
                                   cfg.seed, it, cfg.randomize_step, sup)  # fmt: skip
                budget = (mode, cfg.max_jsd_single_change, cfg.max_frob_single_change,
                          state.norm0, cfg.alpha, cfg.beta)  # fmt: skip
                if cfg.use_disco:
                    undone = _disco.disco_iteration(
                        X, w, cm, events, sign, movable, cand, budget, cfg, state, tracker
                    )
                else:
                    # the fast path re-checks every move against the current state
                    undone = K.kernel_pass(
                        X,
                        w,
                        cm,
                        events,
                        sign,
                        movable,
                        cand,
                        state.kernel_args(),
                        budget,
                        allow_inadmissible,
                        exact=cfg.method == "exact",
                        block_size=cfg.block_size,
                    )
                changed = X[events] != before
                entries = int(changed.sum())
                n_moved = int(changed.any(axis=1).sum())
                state.resync(X)
                if cfg.use_disco:
                    tracker.resync(X)
                pred_adv[events] = adapter.predict(X[events])
                fooled = am & (pred_adv != target)
            fr = self._fooling(pred_clean, pred_adv, am, w)
            jsd = state.jsd()
            rec = {
                "iteration": it,
                "fooling_ratio": fr,
                "n_fooled": int((am & (pred_adv != pred_clean)).sum()),
                "events_attacked": int(len(events)),
                "events_moved": n_moved,
                "entries_moved": entries,
                "undone": int(undone),
                "jsd_mean": float(jsd.mean()),
                "jsd_max": float(jsd.max()),
                "dfn": state.dfn(),
                "seconds": time.perf_counter() - t0,
            }
            if cfg.use_disco:
                rec["dcor_dfn"] = tracker.dfn()
            history.append(rec)
            log.info(
                "CONSERVAttack iteration %d/%d: fooling ratio %.4f, moved %d events (%d entries, "
                "%d undone), JSD mean %.2e max %.2e, dFN %.2e, %.2fs",
                it,
                cfg.n_iterations,
                fr,
                n_moved,
                entries,
                undone,
                rec["jsd_mean"],
                rec["jsd_max"],
                rec["dfn"],
                rec["seconds"],
            )
            if bar is not None:
                bar.set_postfix(
                    fr=f"{fr:.3f}", jsd=f"{rec['jsd_max']:.1e}", dfn=f"{rec['dfn']:.1e}"
                )
            if not cfg.track_best or fr > best_fr:
                best_fr, best_X, best_it = fr, X.copy(), it
            if len(events) == 0:
                break
        if bar is not None:
            bar.close()

        X_final = best_X if cfg.track_best else X
        if cfg.track_best:
            pred_adv = adapter.predict(X_final)
        fooled = am & (pred_adv != target)
        metrics = self._final_metrics(
            X0, X_final, y, w, am, cm, valid, state.binnings, robust_spec, limits,
            (elo, ehi, env), pred_clean, pred_adv, adapter, tracker, groups,
        )  # fmt: skip
        metrics["discrete_features"] = np.nonzero(discrete)[0].tolist()
        metrics["seconds"] = time.perf_counter() - t_start
        metrics["n_iterations_run"] = len(history)
        return attack_result(
            cfg, X0, X_final, fooled, pred_clean, pred_adv, am, cm, history, metrics, best_it
        )

    @staticmethod
    def _check_order(groups: list[np.ndarray], bad: int) -> dict[str, Any]:
        """The ``keep_order`` guarantee from ``bad``, the events out of order recomputed
        from scratch (:func:`order_violations`, summed over the parts of the data); raises
        :class:`BudgetViolation` if there is any."""
        bad = int(bad)
        if bad:
            raise BudgetViolation(
                f"internal error: a keep_order group is out of order in {bad} event(s)"
            )
        return {"groups": [g.tolist() for g in groups], "events_out_of_order": bad}

    @staticmethod
    def _margin(adapter: ModelAdapter, X: np.ndarray, target: np.ndarray) -> np.ndarray:
        """log P(target) − max log P(other class): small = close to flipping."""
        lp = adapter.log_probabilities(X)
        own = lp[np.arange(len(lp)), target]
        lp[np.arange(len(lp)), target] = -np.inf
        return own - lp.max(axis=1)

    @staticmethod
    def _fooling(pred_clean, pred_adv, am, w) -> float:
        return _fooling_ratio(*F.fooling_sums(pred_clean, pred_adv, am, w))

    def _check_budget(self, jsd_max: float, dfn: float) -> None:
        """Raise :class:`BudgetViolation` unless the recomputed result is within the budget
        the configuration guarantees (NaN counts as a violation).  Cumulative: max JSD and
        ΔFN (ΔdCor with DisCo).  ``per_change`` with ``use_no_change``: max JSD (each move
        keeps its feature's JSD within the limit and leaves the other features alone);
        ``per_change`` bounds single changes of the correlation, not the total."""
        cfg = self.config
        tol = 1e-9
        ok_jsd = jsd_max <= cfg.max_jsd_single_change + tol
        ok_dfn = dfn <= cfg.max_frob_single_change + tol
        if cfg.budget == "cumulative" and not (ok_jsd and ok_dfn):
            raise BudgetViolation(
                f"internal error: result exceeds the budget (JSD max {jsd_max:.3g} vs "
                f"{cfg.max_jsd_single_change}, dFN {dfn:.3g} vs {cfg.max_frob_single_change})"
            )
        if cfg.budget == "per_change" and cfg.use_no_change and not ok_jsd:
            raise BudgetViolation(
                f"internal error: a feature's JSD exceeds the per-change limit (JSD max "
                f"{jsd_max:.3g} vs {cfg.max_jsd_single_change})"
            )

    def _final_metrics(
        self, X0, X, y, w, am, cm, valid, binnings, spec, limits, bounds, pred_clean, pred_adv,
        adapter, tracker=None, groups=None,
    ) -> dict[str, Any]:  # fmt: skip
        """The final recheck of a run on one machine: :meth:`recheck` with the whole data
        set as one part (``bounds = (lo, hi, env)`` from :meth:`_envelope`; ``groups``: the
        ``keep_order`` groups from :func:`resolve_order_groups`)."""
        lo, hi, env = bounds
        part = F.final_part(X0, X, w, am, cm, pred_clean, pred_adv, binnings, lo, hi, env, y,
                            groups)  # fmt: skip
        ratios = F.envelope_ratios(X0, X, env) if env is not None else np.zeros(0)
        auroc_fn = None
        if y is not None and len(np.unique(y)) == 2 and adapter.n_classes == 2:
            auroc_fn = lambda: [  # noqa: E731
                F.auroc_part(y, w, (adapter.scores(X0), adapter.scores(X)))
            ]
        dcor = None
        if self.config.use_disco:
            from advsyst.attacks._disco import dcor_dfn

            sub = tracker.index
            dcor = (dcor_dfn(X0[sub], X[sub], tracker.valid), int(tracker.m))
        return self.recheck(
            part,
            lambda m0, m: F.final_covs(X0, X, w, cm, m0, m),
            lambda t: F.count_le(ratios, t),
            auroc_fn,
            valid,
            binnings,
            spec,
            limits,
            dcor,
            groups,
        )

    def recheck(
        self,
        part: dict[str, Any],
        cov_fn: Any,
        count_fn: Any,
        auroc_fn: Any,
        valid: np.ndarray,
        binnings: list[FeatureBinning],
        spec: list,
        limits: np.ndarray,
        dcor: tuple[float, int] | None = None,
        groups: list[np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """The final metrics and budget checks from reductions of the result
        (:mod:`advsyst.attacks._final`); raises :class:`BudgetViolation` if a guaranteed
        budget is exceeded or a moved entry left its bounds.

        ``part``: the :func:`~advsyst.attacks._final.final_part` sums of every part of the
        data (:func:`~advsyst.attacks._final.sum_parts`); ``cov_fn(mean0, mean)``: the
        summed :func:`~advsyst.attacks._final.final_covs`; ``count_fn(t)``: the summed
        :func:`~advsyst.attacks._final.count_le` of the parts' envelope ratios;
        ``auroc_fn()``: None, or the parts' :func:`~advsyst.attacks._final.auroc_part`
        pieces of the (clean, adversarial) scores; ``dcor``: (ΔdCor, subsample) with DisCo;
        ``groups``: the ``keep_order`` groups (``part`` then holds their
        ``events_out_of_order``).
        """
        cfg = self.config
        d = binnings[0].n_features
        W = part["W"]
        cov0, cov = cov_fn(part["swx0"] / W, part["swx"] / W)
        dfn = delta_fn_from_cov(cov0 / W, cov / W, valid)
        H0, H = part["H0"], part["H"]
        rows = np.vstack([histogram_jsd(a, b) for a, b in zip(H0, H)])
        jsd = rows[0]
        n_att = part["n_attacked"]
        m: dict[str, Any] = {
            "fooling_ratio": _fooling_ratio(*part["fooling"]),
            "n_fooled": int(part["n_fooled"]),
            "jsd": jsd,
            "jsd_mean": float(jsd.mean()),
            "jsd_max": float(jsd.max()),
            "dfn": float(dfn),
            "n_events": int(part["n_events"]),
            "n_features": int(d),
            "n_attacked": int(n_att),
            "n_constraint": int(part["n_constraint"]),
            "moved_fraction": float(part["n_moved_attacked"] / n_att) if n_att else 0.0,
            "budget": cfg.budget,
        }
        if dcor is not None:
            # the distance correlation replaces the Pearson correlation in the budget
            m["dcor_dfn"], m["dcor_subsample"] = dcor
            dfn = m["dcor_dfn"]
        self._check_budget(m["jsd_max"], dfn)
        if part["n_out_of_bounds"]:
            raise BudgetViolation(
                f"internal error: {part['n_out_of_bounds']} moved entries lie outside their "
                "bounds (feature range or envelope)"
            )
        if auroc_fn is not None:
            pieces = auroc_fn()
            if pieces is not None:
                m["auroc_clean"], m["auroc_adv"] = map(float, F.auroc_from_parts(pieces))
        # signed-weight slots and the binning-robust rows
        m["negative_slots"] = {
            "clean": int((H0[0] < 0).sum()),
            "adversarial": int((H[0] < 0).sum()),
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(limits > 0, rows / limits, np.where(rows > 0, np.inf, 0.0))
        m["robust"] = {
            "binnings": [[cfg.num_bins, 0.0], *[list(t) for t in spec]],
            "jsd": rows,
            "limits": np.where(np.isfinite(limits), limits, np.nan),
            "max_limit_ratio": float(ratio.max()),
        }
        if cfg.budget == "cumulative" and not ratio.max() <= 1.0 + 1e-6:  # NaN-safe
            raise BudgetViolation(
                "internal error: result exceeds the budget on a tracked binning (JSD / limit "
                f"{ratio.max():.4g})"
            )
        if "n_moved_entries" in part:
            q = F.ENVELOPE_QUANTILES
            vals = F.quantiles(count_fn, int(part["n_moved_entries"]), q)
            m["envelope"] = {
                "n_moved_entries": int(part["n_moved_entries"]),
                "n_entries_with_envelope": int(part["n_entries_with_envelope"]),
                "move_over_envelope_quantiles": {str(k): v for k, v in zip(q, vals)},
            }
        if groups:
            m["keep_order"] = self._check_order(groups, part["events_out_of_order"])
        return m


def _fooling_ratio(w_attacked: float, w_flipped: float) -> float:
    """The weighted fooling ratio from :func:`~advsyst.attacks._final.fooling_sums`."""
    if w_attacked <= 0:
        return 0.0
    return float(w_flipped / w_attacked)


def conservattack(
    X: np.ndarray,
    model: torch.nn.Module | ModelAdapter,
    y: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    *,
    attack_mask: np.ndarray | None = None,
    constraint_mask: np.ndarray | None = None,
    config: ConservAttackConfig | dict | None = None,
    feature_names: list[str] | None = None,
    movable: np.ndarray | None = None,
    **overrides: Any,
) -> AttackResult:
    """Functional form of :meth:`ConservAttack.run`."""
    return ConservAttack(config, **overrides).run(
        X,
        model,
        y=y,
        weights=weights,
        attack_mask=attack_mask,
        constraint_mask=constraint_mask,
        feature_names=feature_names,
        movable=movable,
    )
