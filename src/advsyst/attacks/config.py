"""Configuration of CONSERVAttack (the paper's Table 2 plus advsyst's extensions)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from advsyst.errors import ConfigError

__all__ = ["ConservAttackConfig", "ALIASES"]

#: shorter spellings accepted by :meth:`ConservAttackConfig.from_dict`
ALIASES = {
    "max_jsd": "max_jsd_single_change",
    "max_dfn": "max_frob_single_change",
    "max_frob": "max_frob_single_change",
    "n_iter": "n_iterations",
    "iterations": "n_iterations",
    "bins": "num_bins",
}

#: the float fields, checked to be finite numbers (``_NON_NEGATIVE`` also >= 0)
_FLOAT_FIELDS = (
    "min_change",
    "step",
    "max_jsd_single_change",
    "max_frob_single_change",
    "alpha",
    "beta",
    "threshold",
    "default_value",
)
_NON_NEGATIVE = frozenset(_FLOAT_FIELDS[:6])
_OPTIONAL = frozenset({"default_value"})


@dataclass
class ConservAttackConfig:
    """Every knob of the attack.

    Paper parameters (Table 2)
    --------------------------
    min_change, step
        Candidate grid ``min_change + k·step`` in the gradient-sign direction, up to the
        feature bound (in ``units``).  A zero move is never a candidate: with
        ``min_change: 0`` the grid starts at one ``step``.
    num_candidates
        If set, that many uniform draws in the reachable range replace the grid.
    n_iterations, num_bins, alpha, beta
        Iterations; histogram bins for the JSD; weights of JSD and ΔFN in the score.
    max_jsd_single_change, max_frob_single_change
        The two limits.  ``budget="cumulative"`` (default): the returned data set has every
        feature's JSD to its clean histogram ≤ the first and ΔFN = ‖C−C0‖/‖C0‖ ≤ the second
        (checked by exact recomputation).  ``budget="per_change"``: the reference code's
        semantics, per move: judged against the data set just before the move (every
        earlier move applied), the moved feature's JSD after the move ≤ the first, and the
        absolute Frobenius norm of the change this one move makes to the correlation
        matrix ≤ the second.  Both ``method`` values enforce exactly this.
    use_no_change
        No admissible candidate -> no move.  With ``False`` under ``per_change`` the
        best-scoring candidate is applied even if above the per-change limits (as the
        paper); under ``cumulative`` the limits are hard and ``False`` only logs a warning.
    optimize_already_fooled
        Keep moving events that already fool the model.
    use_disco
        Monitor distance correlation (on ``disco_subsample`` constraint events) instead of
        Pearson correlation for the second term.  Costs O(m·d) per candidate.

    advsyst extensions
    ------------------
    randomize_step
        Scale the step per event and iteration by a uniform factor in [0.5, 1.5).
    units
        ``"absolute"`` or ``"range"`` (min_change/step as fractions of each feature's range).
    order
        ``"index"`` (default, the reference code's): events in data order;
        ``"margin"``: events closest to the decision boundary first.  On toys margin order
        did not raise the fooling ratio (the fast path lost more moves to the budget
        check), so it is an option, not the default.
    method
        ``"fast"`` (blocks of events scored against one snapshot, applied with exact
        updates and a budget check) or ``"exact"`` (strictly sequential; the test oracle).
    target
        ``"prediction"`` (fool = flip the clean prediction) or ``"label"`` (use ``y``).
    immutable, integer_features, default_value, bounds
        Features never moved; features moved in integer steps; entries equal to
        ``default_value`` never moved; per-feature ``[lo, hi]`` (default: the clean range).
    max_discrete_values, discrete
        A feature with at most ``max_discrete_values`` distinct values in the clean data
        (0 = no detection; ``integer_features`` are left as declared) is discrete:
        ``discrete="support"`` moves it only between its observed values, ``"freeze"``
        never moves it.
    envelope
        Per-event uncertainty envelopes: ``{name or glob: {relative: r} | {absolute: a}}``.
        Every entry of a matching feature stays within ``r·|x_clean|`` (or ``a``) of its
        clean value, over all iterations together.  The most specific key wins: an exact
        name beats any glob, among globs the longest pattern.  Without feature names the
        names are the column indices ("0", "1", ...).  None: the paper's behaviour.
    keep_order
        Groups of features stored sorted in every event (e.g. ``["pt_*"]`` for constituent
        transverse momenta, non-increasing); the attack keeps them sorted.  Each group is a
        glob (columns in their order) or a list of names, globs or column indices in their
        stored order; at least two features, non-increasing or non-decreasing in every
        clean event (ties allowed), else an error.  See
        :func:`advsyst.attacks.conservattack.order_bounds` for how.  None/[]: no
        constraint (the paper's behaviour).
    robust_binnings, robust_noise_fraction, robust_bootstrap
        The binning-robust budget.  ``robust_binnings`` lists extra ``[bins, offset]``
        equal-width binnings of the clean range (offset in bin widths) on which the JSD is
        tracked next to the attack's own ``num_bins``; ``"auto"`` (default) = bin counts
        50, 71, 100, 141, 200 at offsets 0, 1/4, 1/2, 3/4 (20 binnings); None or [] =
        off (the paper's single binning).  On every tracked binning (the own one included) each feature's JSD
        stays below ``robust_noise_fraction`` times the statistical resolution of that
        binning (the 95th percentile of the JSD between the clean set and
        ``robust_bootstrap`` seeded Poisson-bootstrap resamples of it,
        :func:`advsyst.stats.validation.resolution`); on the own binning also below
        ``max_jsd_single_change``.  ``robust_noise_fraction: null``: every tracked binning
        gets the limit ``max_jsd_single_change`` instead.
    """

    min_change: float = 0.005
    step: float = 0.01
    num_candidates: int | None = None
    max_candidates: int = 2000
    n_iterations: int = 10
    num_bins: int = 200
    alpha: float = 6.5
    beta: float = 1.0
    max_jsd_single_change: float = 0.003
    max_frob_single_change: float = 0.003
    use_no_change: bool = True
    optimize_already_fooled: bool = False
    use_disco: bool = False
    disco_subsample: int = 300
    randomize_step: bool = False
    budget: str = "cumulative"
    units: str = "absolute"
    method: str = "fast"
    order: str = "index"
    block_size: int = 2048
    target: str = "prediction"
    immutable: Sequence[int] = field(default_factory=list)
    integer_features: Sequence[int] = field(default_factory=list)
    default_value: float | None = None
    bounds: Sequence[Sequence[float]] | None = None
    max_discrete_values: int = 20
    discrete: str = "support"
    envelope: Mapping[str, Mapping[str, float]] | None = None
    keep_order: Sequence[str | Sequence[str]] | None = None
    robust_binnings: Any = "auto"
    robust_noise_fraction: float | None = 0.5
    robust_bootstrap: int = 200
    track_best: bool = True
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 16384
    model_output: str = "auto"
    threshold: float = 0.5
    n_gpus: int | None = None  # accepted for paper compatibility; one device is used
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if self.budget not in ("cumulative", "per_change"):
            bad(f"budget must be 'cumulative' or 'per_change', got {self.budget!r}")
        if self.units not in ("absolute", "range"):
            bad(f"units must be 'absolute' or 'range', got {self.units!r}")
        if self.method not in ("fast", "exact"):
            bad(f"method must be 'fast' or 'exact', got {self.method!r}")
        if self.order not in ("margin", "index"):
            bad(f"order must be 'margin' or 'index', got {self.order!r}")
        if self.target not in ("prediction", "label"):
            bad(f"target must be 'prediction' or 'label', got {self.target!r}")
        if self.model_output not in ("auto", "probability", "logit"):
            bad(f"model_output must be auto/probability/logit, got {self.model_output!r}")
        # every float field: a real, finite number (NaN would pass every `x > limit` test)
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if v is None and name in _OPTIONAL:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                bad(f"{name} must be a number, got {v!r}")
            if not math.isfinite(v):
                bad(f"{name} must be finite, got {v!r}")
            if name in _NON_NEGATIVE and v < 0:
                bad(f"{name} must be a non-negative number, got {v!r}")
            setattr(self, name, float(v))  # one numba specialisation, whatever YAML gave
        if self.bounds is not None:
            try:
                flat = [float(x) for row in self.bounds for x in row]
            except (TypeError, ValueError):
                bad(f"bounds must be two lists of numbers, got {self.bounds!r}")
            if not all(math.isfinite(x) for x in flat):
                bad(f"bounds must be finite numbers, got {self.bounds!r}")
        if self.step <= 0 and self.num_candidates is None:
            bad("step must be > 0 (or set num_candidates)")
        for name in ("n_iterations", "num_bins", "block_size", "batch_size", "max_candidates"):
            v = getattr(self, name)
            if (
                not isinstance(v, int)
                or isinstance(v, bool)
                or v < (0 if name == "n_iterations" else 1)
            ):
                bad(f"{name} must be a positive integer, got {v!r}")
        if self.num_candidates is not None and (
            not isinstance(self.num_candidates, int) or self.num_candidates < 1
        ):
            bad(f"num_candidates must be a positive integer or null, got {self.num_candidates!r}")
        if self.discrete not in ("support", "freeze"):
            bad(f"discrete must be 'support' or 'freeze', got {self.discrete!r}")
        for name in ("max_discrete_values", "robust_bootstrap"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(f"{name} must be a non-negative integer, got {v!r}")
        self._validate_envelope(bad)
        self._validate_keep_order(bad)
        self._validate_robust(bad)

    def _validate_keep_order(self, bad: Any) -> None:
        groups = self.keep_order
        if groups is None:
            return
        if isinstance(groups, str) or not isinstance(groups, Sequence):
            bad(f"keep_order must be a list of groups (a glob, or a list of names/globs), "
                f"got {groups!r}")  # fmt: skip
        for g in groups:
            items = [g] if isinstance(g, str) else g
            if (
                not isinstance(items, Sequence)
                or not items
                or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in items)
            ):
                bad(f"keep_order: group {g!r} must be a glob or a non-empty list of feature "
                    "names, globs or column indices")  # fmt: skip

    def _validate_envelope(self, bad: Any) -> None:
        if self.envelope is None:
            return
        if not isinstance(self.envelope, Mapping):
            bad("envelope must map feature names or glob patterns to {relative: r} or "
                f"{{absolute: a}}, got {type(self.envelope).__name__}")  # fmt: skip
        for key, spec in self.envelope.items():
            if not isinstance(spec, Mapping) or len(spec) != 1:
                bad(f"envelope[{key!r}] must be {{relative: r}} or {{absolute: a}}, got {spec!r}")
            (kind, val), = spec.items()  # fmt: skip
            if kind not in ("relative", "absolute"):
                bad(f"envelope[{key!r}]: unknown kind {kind!r} (use relative or absolute)")
            if (
                not isinstance(val, int | float)
                or isinstance(val, bool)
                or not math.isfinite(val)
                or val < 0
            ):
                bad(f"envelope[{key!r}].{kind} must be a finite number >= 0, got {val!r}")

    def _validate_robust(self, bad: Any) -> None:
        rb = self.robust_binnings
        if rb is not None and rb != "auto":
            if isinstance(rb, str) or not isinstance(rb, Sequence):
                bad(f"robust_binnings must be 'auto', null or a list of [bins, offset], got {rb!r}")
            for item in rb:
                ok = isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2
                if ok:
                    k, off = item
                    ok = (
                        isinstance(k, int)
                        and not isinstance(k, bool)
                        and k >= 1
                        and isinstance(off, int | float)
                        and 0.0 <= off < 1.0
                    )
                if not ok:
                    bad(f"robust_binnings: {item!r} is not [bins >= 1, offset in [0, 1)]")
        f = self.robust_noise_fraction
        if f is not None and (
            not isinstance(f, int | float) or isinstance(f, bool) or not math.isfinite(f) or f <= 0
        ):
            bad(f"robust_noise_fraction must be a finite number > 0 or null, got {f!r}")

    # -- conversion -----------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None, **overrides: Any) -> ConservAttackConfig:
        """Build from a mapping (e.g. a YAML file); unknown keys raise :class:`ConfigError`."""
        merged: dict[str, Any] = {}
        known = set(cls.field_names())
        for key, val in {**dict(d or {}), **overrides}.items():
            name = ALIASES.get(key, key)
            if name not in known:
                raise ConfigError(
                    f"unknown CONSERVAttack config key {key!r}; valid keys: {sorted(known)} "
                    f"(aliases: {sorted(ALIASES)})"
                )
            merged[name] = val
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
        }

    def replace(self, **changes: Any) -> ConservAttackConfig:
        return ConservAttackConfig.from_dict(self.to_dict(), **changes)
