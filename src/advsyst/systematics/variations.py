"""Built-in variations, registered when :mod:`advsyst.systematics` is imported.

==========================  =============================================================
name                        what it does
==========================  =============================================================
``conservattack``           CONSERVAttack adversarial features (up); down mirrored
``conservattack_detected``  the same, with events the detector flags reverted to nominal
``fgsm``                    fast-gradient-sign attack (up); down mirrored
``ngm``                     L2-normalised gradient attack (up); down mirrored
``noise``                   Gaussian feature noise (up); down mirrored
``shift``                   systematic shift: up = +epsilon, down = -epsilon
==========================  =============================================================

The attack engines live in :mod:`advsyst.attacks`; they are imported when a variation
runs, so the registry works (and lists these names) even where an engine is missing —
running such a variation then raises :class:`ImportError` naming what is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from advsyst.errors import ConfigError, InputError
from advsyst.systematics.registry import (
    VariationContext,
    VariationResult,
    detector_scores,
    register,
)

__all__ = [
    "conservattack",
    "conservattack_detected",
    "fgsm_variation",
    "ngm_variation",
    "noise_variation",
    "shift_variation",
    "CACHE_KEY",
]

#: key of ``context.extra`` under which ``conservattack`` caches its AttackResult
CACHE_KEY = "conservattack_result"
_CACHE_OPTIONS_KEY = "conservattack_options"


def _import(module: str, *names: str) -> tuple[Any, ...]:
    try:
        mod = importlib.import_module(module)
        return tuple(getattr(mod, n) for n in names)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"this variation needs {', '.join(names)} from {module}, which is not available: {exc}"
        ) from exc


def _movable(context: VariationContext, X: np.ndarray) -> np.ndarray | None:
    """``context.movable`` checked against the features' shape (None: every entry)."""
    if context.movable is None:
        return None
    m = np.asarray(context.movable)
    if m.shape != np.shape(X):
        raise InputError(f"context.movable has shape {m.shape}, the features {np.shape(X)}")
    return m


def _moved(X: np.ndarray, up: np.ndarray) -> np.ndarray:
    return np.any(up != X, axis=1)


def _run_conservattack(
    X: np.ndarray, model: Any, context: VariationContext, options: dict[str, Any]
) -> Any:
    """Run the engine, or reuse ``context.extra[CACHE_KEY]`` when made with the same options."""
    cached = context.extra.get(CACHE_KEY)
    if cached is not None:
        same_opts = context.extra.get(_CACHE_OPTIONS_KEY, options) == options
        if same_opts and np.shape(cached.X_adv) == X.shape:
            return cached
    ConservAttack, ConservAttackConfig = _import(
        "advsyst.attacks", "ConservAttack", "ConservAttackConfig"
    )
    opts = dict(options)
    restrict = bool(opts.pop("restrict_to_control", False))
    if restrict and context.control_mask is None:
        raise ConfigError("restrict_to_control=True needs context.control_mask")
    if "seed" not in opts and context.seed is not None:
        opts["seed"] = context.seed
    cfg = ConservAttackConfig.from_dict(opts)
    res = ConservAttack(cfg).run(
        X,
        model,
        y=context.y if cfg.target == "label" else None,
        weights=context.weights,
        attack_mask=None,
        constraint_mask=np.asarray(context.control_mask, bool) if restrict else None,
        feature_names=None if context.feature_names is None else list(context.feature_names),
        movable=_movable(context, X),
    )
    context.extra[CACHE_KEY] = res
    context.extra[_CACHE_OPTIONS_KEY] = dict(options)
    return res


def _attack_info(res: Any, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "engine": "ConservAttack",
        "options": dict(options),
        "config": getattr(res, "config", None),
        "seed": getattr(res, "seed", None),
        "metrics": dict(getattr(res, "metrics", {}) or {}),
        "history": list(getattr(res, "history", []) or []),
    }


@register("conservattack", description="CONSERVAttack adversarial features; down mirrored")
def conservattack(
    X: np.ndarray, model: Any, *, context: VariationContext, **options: Any
) -> VariationResult:
    """CONSERVAttack adversarial features as the up variation (down: mirrored).

    ``options`` are :class:`advsyst.attacks.ConservAttackConfig` keys, plus
    ``restrict_to_control`` (bool): monitor the marginals/correlations only on
    ``context.control_mask`` events.  ``context.seed`` is used when no ``seed`` is given;
    ``context.y`` is passed only with ``target="label"`` (default: flip the prediction).
    The :class:`AttackResult` is cached in ``context.extra["conservattack_result"]``.
    """
    res = _run_conservattack(X, model, context, options)
    up = np.asarray(res.X_adv, dtype=np.float64)
    flags = {"fooled": np.asarray(res.fooled, bool), "moved": np.asarray(res.moved, bool)}
    return VariationResult(up=up, down=None, flags=flags, info=_attack_info(res, options))


@register(
    "conservattack_detected",
    description="CONSERVAttack with detector-flagged events reverted to nominal",
)
def conservattack_detected(
    X: np.ndarray, model: Any, *, context: VariationContext, **options: Any
) -> VariationResult:
    """CONSERVAttack features where the detector does *not* flag the varied event.

    Events with P(adversarial) >= ``context.detector_threshold`` on their varied
    features would be caught, so they are reverted to their nominal features.  Reuses
    a cached ``conservattack`` result made with the same options.  Flags: ``fooled``
    (the attack's), ``moved`` (after reverting), ``detected``.
    """
    if context.detector is None:
        raise ConfigError("variation 'conservattack_detected' needs context.detector")
    res = _run_conservattack(X, model, context, options)
    x_adv = np.asarray(res.X_adv, dtype=np.float64)
    p_adv = detector_scores(context.detector, x_adv)
    detected = p_adv >= float(context.detector_threshold)
    up = np.where(detected[:, None], X, x_adv)
    info = _attack_info(res, options)
    info["detector_threshold"] = float(context.detector_threshold)
    info["n_detected"] = int(detected.sum())
    flags = {
        "fooled": np.asarray(res.fooled, bool),
        "moved": _moved(X, up),
        "detected": detected,
    }
    return VariationResult(up=up, down=None, flags=flags, info=info)


def _gradient_variation(
    fname: str, X: np.ndarray, model: Any, context: VariationContext, options: dict[str, Any]
) -> VariationResult:
    (func,) = _import("advsyst.attacks.first_order", fname)
    opts = dict(options)
    use_labels = bool(opts.pop("use_labels", False))
    if use_labels and context.y is None:
        raise ConfigError(f"variation {fname!r}: use_labels=True needs context.y")
    if context.movable is not None and "movable" not in opts:
        opts["movable"] = _movable(context, X)
    up = np.asarray(func(X, model, context.y if use_labels else None, **opts), dtype=np.float64)
    return VariationResult(
        up=up,
        down=None,
        flags={"moved": _moved(X, up)},
        info={"engine": fname, "options": dict(options)},
    )


@register("fgsm", description="fast gradient sign attack; down mirrored")
def fgsm_variation(
    X: np.ndarray, model: Any, *, context: VariationContext, **options: Any
) -> VariationResult:
    """FGSM features (``advsyst.attacks.first_order.fgsm``) as the up variation.

    ``options`` go to ``fgsm`` (``epsilon``, ``units``...), plus ``use_labels`` (bool):
    attack away from ``context.y`` instead of the model's own prediction.
    """
    return _gradient_variation("fgsm", X, model, context, options)


@register("ngm", description="L2-normalised gradient attack; down mirrored")
def ngm_variation(
    X: np.ndarray, model: Any, *, context: VariationContext, **options: Any
) -> VariationResult:
    """NGM features (``advsyst.attacks.first_order.ngm``) as the up variation; see ``fgsm``."""
    return _gradient_variation("ngm", X, model, context, options)


@register("noise", description="Gaussian feature noise; down mirrored")
def noise_variation(
    X: np.ndarray, model: Any, *, context: VariationContext, sigma: float, **options: Any
) -> VariationResult:
    """Gaussian noise of width ``sigma`` (``seed`` option, else ``context.seed``, else 0)."""
    (func,) = _import("advsyst.attacks.first_order", "gaussian_noise")
    seed = options.pop("seed", context.seed)
    seed = 0 if seed is None else seed
    movable = options.pop("movable", _movable(context, X))
    up = np.asarray(func(X, sigma=sigma, seed=seed, movable=movable, **options), dtype=np.float64)
    return VariationResult(
        up=up,
        flags={"moved": _moved(X, up)},
        info={"engine": "gaussian_noise", "options": {"sigma": sigma, **options}, "seed": seed},
    )


@register("shift", description="systematic shift of the features: up +epsilon, down -epsilon")
def shift_variation(
    X: np.ndarray,
    model: Any,
    *,
    context: VariationContext,
    epsilon: float,
    relative: bool = True,
    **options: Any,
) -> VariationResult:
    """Systematic shift: up = ``direction=+1``, down = ``direction=-1`` (both explicit)."""
    (func,) = _import("advsyst.attacks.first_order", "systematic_shift")
    movable = options.pop("movable", _movable(context, X))
    up = func(X, epsilon=epsilon, direction=+1, relative=relative, movable=movable, **options)
    down = func(X, epsilon=epsilon, direction=-1, relative=relative, movable=movable, **options)
    up = np.asarray(up, dtype=np.float64)
    return VariationResult(
        up=up,
        down=np.asarray(down, dtype=np.float64),
        flags={"moved": _moved(X, up)},
        info={
            "engine": "systematic_shift",
            "options": {"epsilon": epsilon, "relative": relative, **options},
        },
    )
