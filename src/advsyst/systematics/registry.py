"""The registry of pseudo-systematic variations.

A *variation* maps nominal features to varied ones.  It is a plain function::

    func(X, model, *, context: VariationContext, **options) -> VariationResult

registered under a short name (``"conservattack"``, ``"fgsm"``...) with :func:`register`
(a decorator) or :func:`register_variation`.  Names become histogram labels
(``<name>Up`` / ``<name>Down``), so they must be identifiers: a letter followed by
letters, digits or underscores, and not ``"nominal"``.

Example
-------
::

    from advsyst.systematics import register, VariationResult

    @register("shift_first", description="shift column 0 by +amount")
    def shift_first(X, model, *, context, amount=1.0):
        up = X.copy()
        up[:, 0] += amount
        return VariationResult(up=up)  # down=None: mirrored in score space
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from advsyst.errors import ConfigError, InputError, ModelOutputError

__all__ = [
    "VariationContext",
    "VariationResult",
    "Variation",
    "VariationFunc",
    "register",
    "register_variation",
    "get",
    "available",
    "unregister",
    "run_variation",
    "detector_scores",
]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = frozenset({"nominal"})


@dataclass
class VariationContext:
    """Everything a variation may need besides the features and the model.

    Parameters
    ----------
    y
        True labels per event, or None.
    weights
        Event weights, or None (unit weights).
    control_mask
        Boolean mask of control-region events (the events whose statistics an attack
        must preserve when restricted to the control region), or None.
    detector
        An adversarial detector giving P(adversarial) per event: a torch module, a
        :class:`~advsyst.attacks.model.ModelAdapter`, or a callable ``X -> p`` (n,).
    detector_threshold
        Events with P(adversarial) >= this value count as detected.
    seed
        Seed passed to stochastic variations that are not given one in their options.
    feature_names
        Names of the feature columns, or None.
    movable
        Boolean ``(n, d)`` mask of the entries a variation may move, or None (all): e.g.
        :meth:`advsyst.models.ParticleLayout.movable`, False on padded particle slots.  The
        built-in attack variations pass it to their engines.
    extra
        Free-form storage; variations may cache results here (e.g. the built-in
        ``conservattack`` stores its :class:`AttackResult` under
        ``"conservattack_result"``).
    """

    y: np.ndarray | None = None
    weights: np.ndarray | None = None
    control_mask: np.ndarray | None = None
    detector: Any = None
    detector_threshold: float = 0.5
    seed: int | None = None
    feature_names: Sequence[str] | None = None
    movable: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, n_events: int) -> None:
        """Raise :class:`InputError` if a per-event array does not have ``n_events`` rows."""
        for label in ("y", "weights", "control_mask", "movable"):
            arr = getattr(self, label)
            if arr is not None and len(arr) != n_events:
                raise InputError(
                    f"context.{label} has {len(arr)} entries but the features have {n_events} events"
                )
        if self.movable is not None:
            m = np.asarray(self.movable)
            if m.ndim != 2 or m.dtype != np.bool_:
                raise InputError(
                    f"context.movable must be a boolean (n, d) mask, got {m.dtype} {m.shape}"
                )
        if self.weights is not None and not np.all(np.isfinite(np.asarray(self.weights, float))):
            raise InputError("context.weights contain NaN or inf")
        if not 0.0 <= float(self.detector_threshold) <= 1.0:
            raise ConfigError(
                f"context.detector_threshold must lie in [0, 1], got {self.detector_threshold}"
            )


@dataclass
class VariationResult:
    """The output of one variation.

    Parameters
    ----------
    up
        Varied features, same shape as the nominal ones.
    down
        Down-varied features, or None (a one-sided variation): then the down template is
        the up template mirrored bin by bin around the nominal, cabinetry's ``Symmetrize``
        (:func:`advsyst.systematics.histograms.mirror_templates`; the per-jet score mirror
        :func:`~advsyst.systematics.histograms.mirror_scores` on request).
    flags
        Per-event boolean arrays, e.g. ``"fooled"``, ``"moved"``, ``"detected"``.
    info
        Metrics, configuration and seed of the variation (provenance).
    """

    up: np.ndarray
    down: np.ndarray | None = None
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self, X: np.ndarray, name: str = "variation") -> VariationResult:
        """Check shapes, finiteness and flag lengths against the nominal ``X``; return self."""
        for label in ("up", "down"):
            arr = getattr(self, label)
            if arr is None:
                if label == "up":
                    raise ModelOutputError(f"variation {name!r} returned no up features")
                continue
            arr = np.asarray(arr)
            if arr.shape != X.shape:
                raise ModelOutputError(
                    f"variation {name!r} returned {label} features of shape {arr.shape}, "
                    f"expected {X.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ModelOutputError(f"variation {name!r} returned NaN/inf {label} features")
            setattr(self, label, arr)
        for key, flag in list(self.flags.items()):
            flag = np.asarray(flag)
            if flag.shape != (len(X),):
                raise ModelOutputError(
                    f"variation {name!r} flag {key!r} has shape {flag.shape}, expected ({len(X)},)"
                )
            self.flags[key] = flag.astype(bool)
        return self


class VariationFunc(Protocol):
    """Signature of a variation function."""

    def __call__(
        self, X: np.ndarray, model: Any, *, context: VariationContext, **options: Any
    ) -> VariationResult: ...


@dataclass(frozen=True)
class Variation:
    """A registered variation: its name, function and a one-line description."""

    name: str
    func: Callable[..., VariationResult]
    description: str = ""

    def __call__(
        self,
        X: np.ndarray,
        model: Any,
        *,
        context: VariationContext | None = None,
        **options: Any,
    ) -> VariationResult:
        return run_variation(self.name, X, model, context=context, **options)


_REGISTRY: dict[str, Variation] = {}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"variation name {name!r} is invalid: use a letter followed by letters, digits or '_'"
        )
    if name in _RESERVED:
        raise ConfigError(f"variation name {name!r} is reserved")


def register_variation(
    name: str,
    func: Callable[..., VariationResult],
    *,
    description: str = "",
    overwrite: bool = False,
) -> Variation:
    """Register ``func`` under ``name`` and return the :class:`Variation`.

    Raises
    ------
    ConfigError
        If the name is invalid, or already registered and ``overwrite`` is False.
    """
    _check_name(name)
    if not callable(func):
        raise ConfigError(f"variation {name!r}: {func!r} is not callable")
    if name in _REGISTRY and not overwrite:
        raise ConfigError(
            f"variation {name!r} is already registered; pass overwrite=True or unregister it first"
        )
    if not description:
        doc = (getattr(func, "__doc__", None) or "").strip()
        description = doc.splitlines()[0] if doc else ""
    var = Variation(name=name, func=func, description=description)
    _REGISTRY[name] = var
    return var


def register(
    name: str, *, description: str = "", overwrite: bool = False
) -> Callable[[Callable[..., VariationResult]], Callable[..., VariationResult]]:
    """Decorator form of :func:`register_variation`; returns the function unchanged."""

    def deco(func: Callable[..., VariationResult]) -> Callable[..., VariationResult]:
        register_variation(name, func, description=description, overwrite=overwrite)
        return func

    return deco


def available() -> list[str]:
    """Sorted names of all registered variations."""
    return sorted(_REGISTRY)


def get(name: str) -> Variation:
    """The registered :class:`Variation` called ``name``.

    Raises
    ------
    ConfigError
        If no variation has that name; the message lists the registered ones.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown variation {name!r}; registered variations: {', '.join(available()) or '(none)'}"
        ) from None


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (ConfigError if it is not registered)."""
    get(name)
    del _REGISTRY[name]


def run_variation(
    name: str,
    X: np.ndarray,
    model: Any,
    *,
    context: VariationContext | None = None,
    **options: Any,
) -> VariationResult:
    """Run the registered variation ``name`` on ``X`` and validate its result.

    ``X`` must be a finite 2-D array; the context's per-event arrays must match its
    length.  The returned result has ``info["variation"] = name`` and
    ``info["options"]`` filled in if the variation did not set them.
    """
    var = get(name)
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"features must be a 2-D (events, features) array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise InputError(f"nominal features contain {int((~np.isfinite(X)).sum())} NaN/inf values")
    context = VariationContext() if context is None else context
    context.check(len(X))
    res = var.func(X, model, context=context, **options)
    if not isinstance(res, VariationResult):
        raise ModelOutputError(
            f"variation {name!r} returned {type(res).__name__}, expected VariationResult"
        )
    res.validate(X, name)
    res.info.setdefault("variation", name)
    res.info.setdefault("options", dict(options))
    return res


def detector_scores(detector: Any, X: np.ndarray) -> np.ndarray:
    """P(adversarial) per event from a detector (torch module, ModelAdapter or callable).

    Torch modules and adapters are evaluated through
    :func:`advsyst.attacks.model.as_adapter` (class 1 = adversarial).  Any other
    callable must return one probability per event.

    Raises
    ------
    ModelOutputError
        If the output is not ``(n,)``, or contains NaN / values outside [0, 1].
    """
    import torch

    from advsyst.attacks.model import ModelAdapter, as_adapter

    X = np.asarray(X)
    if isinstance(detector, torch.nn.Module | ModelAdapter):
        p = as_adapter(detector).scores(X)
    elif callable(detector):
        p = detector(X)
        if isinstance(p, torch.Tensor):
            p = p.detach().cpu().numpy()
    else:
        raise ConfigError(
            f"detector must be a torch module, ModelAdapter or callable, got {detector!r}"
        )
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.shape != (len(X),):
        raise ModelOutputError(
            f"detector returned shape {p.shape} for {len(X)} events; expected one P(adversarial) per event"
        )
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ModelOutputError("detector returned NaN or values outside [0, 1]")
    return p
