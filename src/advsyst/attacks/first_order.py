"""First-order and model-free input perturbations.

* :func:`fgsm` — fast gradient sign method, ``delta = eps * sign(grad)``.
* :func:`ngm` — normalised gradient method (the loss-surface paper's L2 variant),
  ``delta = eps * grad / ||grad||_2`` per event: keeps the relative size of the features'
  gradient components instead of moving every feature by the same amount.
* :func:`pgd` — projected gradient ascent in an L-inf or L2 ball.
* :func:`gaussian_noise`, :func:`systematic_shift` — random and coherent variations.
* :func:`loss_surface_scan` — mean loss on a 2-D grid around the data in input space.

Every function returns a new float64 array and never modifies ``X``.  The loss that the
gradient attacks increase is the per-event cross-entropy of the target ``y`` (default:
the model's clean prediction, so success means the predicted class flips).

Models
------
``model`` is a torch module or a :class:`~advsyst.attacks.model.ModelAdapter`.  Modules
that declare ``n_features`` get their input width checked.  Probability-output modules
that also expose ``logits(x)`` (advsyst's ``Classifier``, also after TorchScript
save/load) are differentiated through their logits: a float32 sigmoid rounds to 0 or 1
beyond ``|logit| ~ 17``, which would otherwise zero the gradient of confident events.

Common options
--------------
units
    ``"absolute"``: ``epsilon`` (``sigma``, ``radius``) in feature units;
    ``"range"``: as a fraction of each feature's clean range ``max - min``;
    ``"std"``: as a fraction of each feature's clean standard deviation.  Features whose
    scale is zero do not move.  The attack is carried out in the rescaled coordinates
    ``x / scale``, so the L2 balls of :func:`ngm` and :func:`pgd` are measured there.
immutable
    Column indices or a boolean ``(d,)`` mask of features that never move.
integer_features
    Column indices, a boolean mask, or ``"auto"`` (columns whose clean values are all
    integers): left untouched, since gradient steps on integers are meaningless.
default_value
    A value (or several) marking padding/defaults, e.g. ``-999`` or ``0``: entries equal
    to it are left untouched.
movable
    A boolean ``(n, d)`` mask: False = this entry never moves (padded particle slots,
    :meth:`advsyst.models.ParticleLayout.movable`).
max_relative
    Cap ``|delta| <= max_relative * |x|`` per entry.
bounds
    ``(lo, hi)`` per-feature limits (scalars, ``(d,)`` arrays or ``None`` for no limit
    on one side) or ``"data"`` for the clean per-feature min/max.  Moved entries are
    clipped to them; an entry already outside is never pushed further out (nor pulled
    back in), so clipping can only shrink a perturbation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advsyst.attacks.model import ModelAdapter, as_adapter
from advsyst.errors import ConfigError, InputError

__all__ = [
    "fgsm",
    "ngm",
    "pgd",
    "gaussian_noise",
    "systematic_shift",
    "loss_surface_scan",
    "per_event_loss",
]

_UNITS = ("absolute", "range", "std")


# ---------------------------------------------------------------------- preparation
def _check_x(X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D (events, features) array, got shape {X.shape}")
    bad = ~np.isfinite(X)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        raise InputError(
            f"X contains NaN/inf in {int(bad.sum())} entries, feature column(s) "
            f"{cols[:20].tolist()}{' ...' if len(cols) > 20 else ''}"
        )
    return X


def _check_scalar(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number, got {value!r}") from exc
    if not np.isfinite(v) or v < 0:
        raise InputError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def _column_mask(spec: Any, d: int, name: str) -> np.ndarray:
    """Indices or boolean mask -> boolean (d,) mask."""
    mask = np.zeros(d, dtype=bool)
    if spec is None:
        return mask
    arr = np.asarray(spec)
    if arr.dtype == bool:
        if arr.shape != (d,):
            raise InputError(f"{name} boolean mask has shape {arr.shape}, expected ({d},)")
        return arr.copy()
    arr = arr.reshape(-1)
    if arr.size == 0:
        return mask
    if arr.dtype.kind not in "iu" and not (arr == np.round(arr)).all():
        raise InputError(f"{name} must be column indices or a boolean mask, got {spec!r}")
    idx = arr.astype(np.int64)
    if (idx < -d).any() or (idx >= d).any():
        raise InputError(f"{name} has column indices out of range for {d} features: {idx.tolist()}")
    mask[idx] = True
    return mask


def _scale(X: np.ndarray, units: str) -> np.ndarray:
    if units not in _UNITS:
        raise ConfigError(f"units must be one of {_UNITS}, got {units!r}")
    d = X.shape[1]
    if units == "absolute":
        return np.ones(d)
    if len(X) == 0:
        return np.zeros(d)
    if units == "range":
        return X.max(axis=0) - X.min(axis=0)
    return X.std(axis=0)


@dataclass
class _Prepared:
    """Per-call masks and limits shared by all perturbations."""

    X: np.ndarray
    scale: np.ndarray  # (d,), > 0 on movable columns
    movable: np.ndarray  # (n, d) bool
    lo: np.ndarray | None  # (n, d) effective lower limit
    hi: np.ndarray | None
    cap: np.ndarray | None  # (n, d) max |delta|

    def finish(self, delta: np.ndarray) -> np.ndarray:
        """Mask, cap, add and clip ``delta`` (feature units); returns a new array."""
        return self.finish_moved(self.X + delta)

    def finish_moved(self, moved: np.ndarray) -> np.ndarray:
        """Cap and clip proposed new values; immovable entries keep their clean value."""
        if self.cap is not None:
            moved = np.clip(moved, self.X - self.cap, self.X + self.cap)
        if self.lo is not None:
            moved = np.clip(moved, self.lo, self.hi)
        return np.where(self.movable, moved, self.X)


def _prepare(
    X: Any,
    *,
    units: str = "absolute",
    immutable: Any = None,
    integer_features: Any = None,
    default_value: Any = None,
    movable: Any = None,
    max_relative: float | None = None,
    bounds: Any = None,
) -> _Prepared:
    X = _check_x(X)
    n, d = X.shape
    scale = _scale(X, units)
    cols = ~_column_mask(immutable, d, "immutable") & (scale > 0)
    if isinstance(integer_features, str):
        if integer_features != "auto":
            raise ConfigError(
                f"integer_features must be indices, a mask or 'auto', got {integer_features!r}"
            )
        if n:
            cols &= ~(X == np.round(X)).all(axis=0)
    else:
        cols &= ~_column_mask(integer_features, d, "integer_features")
    cols_ok = np.broadcast_to(cols, (n, d)).copy()
    if default_value is not None:
        for v in np.atleast_1d(np.asarray(default_value, dtype=np.float64)):
            cols_ok &= X != v
    if movable is not None:
        um = np.asarray(movable)
        if um.shape != (n, d) or um.dtype != np.bool_:
            raise InputError(
                f"movable must be a boolean ({n}, {d}) mask, got {um.dtype} {um.shape}"
            )
        cols_ok &= um
    cap = None
    if max_relative is not None:
        cap = _check_scalar(max_relative, "max_relative") * np.abs(X)
    lo = hi = None
    if bounds is not None:
        if isinstance(bounds, str):
            if bounds != "data":
                raise ConfigError(f"bounds must be (lo, hi) or 'data', got {bounds!r}")
            lo_f, hi_f = (
                (X.min(axis=0), X.max(axis=0)) if n else (np.full(d, -np.inf), np.full(d, np.inf))
            )
        else:
            try:
                lo_s, hi_s = bounds
            except (TypeError, ValueError) as exc:
                raise InputError(f"bounds must be a (lo, hi) pair, got {bounds!r}") from exc
            lo_f = np.full(d, -np.inf) if lo_s is None else np.asarray(lo_s, dtype=np.float64)
            hi_f = np.full(d, np.inf) if hi_s is None else np.asarray(hi_s, dtype=np.float64)
            try:
                lo_f, hi_f = np.broadcast_to(lo_f, (d,)), np.broadcast_to(hi_f, (d,))
            except ValueError as exc:
                raise InputError(f"bounds must be scalars or ({d},) arrays") from exc
            if np.isnan(lo_f).any() or np.isnan(hi_f).any() or (lo_f > hi_f).any():
                raise InputError("bounds must satisfy lo <= hi for every feature (no NaN)")
        lo, hi = np.minimum(lo_f, X), np.maximum(hi_f, X)
    return _Prepared(X=X, scale=scale, movable=cols_ok, lo=lo, hi=hi, cap=cap)


class _LogitView(torch.nn.Module):
    """Evaluate a probability-output model through its ``logits`` method.

    A float32 sigmoid rounds to exactly 0 or 1 beyond ``|logit| ~ 16``, where the
    gradient of ``log p`` vanishes: confident events could then not be attacked.  Models
    that expose their pre-sigmoid output (advsyst's ``Classifier``, also after TorchScript
    save/load) are therefore differentiated through their logits.
    """

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.advsyst_output = "logit"
        n = getattr(inner, "n_features", None)
        if isinstance(n, int):
            self.n_features = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(x)


def _adapter(model: Any, X: np.ndarray, device: Any, batch_size: int | None) -> ModelAdapter:
    if isinstance(model, ModelAdapter):
        return as_adapter(model, n_features=X.shape[1])
    if not isinstance(model, torch.nn.Module):
        # ONNX files, coffea wrappers, xgboost / predict_proba models: as_adapter picks the
        # kind (finite differences where there is no autograd) or names what it cannot take
        return as_adapter(model, n_features=X.shape[1], device=device)
    if getattr(model, "advsyst_output", None) == "probability" and callable(
        getattr(model, "logits", None)
    ):
        model = _LogitView(model)
    n = getattr(model, "n_features", None)
    kwargs: dict[str, Any] = {
        "n_features": n if isinstance(n, int) else X.shape[1],
        "device": device,
    }
    if batch_size is not None:
        kwargs["batch_size"] = int(batch_size)
    return as_adapter(model, **kwargs)


def _targets(adapter: ModelAdapter, X: np.ndarray, y: Any) -> np.ndarray:
    if y is None:
        return adapter.predict(X)
    t = np.asarray(y)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.shape != (len(X),):
        raise InputError(f"y has shape {t.shape}, expected ({len(X)},)")
    tf = t.astype(np.float64)
    if not np.isfinite(tf).all() or (tf != np.round(tf)).any() or (tf < 0).any():
        raise InputError("y must hold non-negative integer class labels")
    return tf.astype(np.int64)


def _scaled_gradient(
    adapter: ModelAdapter, x: np.ndarray, target: np.ndarray, prep: _Prepared
) -> np.ndarray:
    """Loss gradient in the rescaled coordinates, zero on entries that cannot move."""
    g = adapter.loss_gradient(x, target) * prep.scale
    return np.where(prep.movable, g, 0.0)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


# ---------------------------------------------------------------------- attacks
def per_event_loss(
    X: Any,
    model: Any,
    y: Any = None,
    *,
    device: Any = "cpu",
    batch_size: int | None = None,
) -> np.ndarray:
    """Cross-entropy ``-log p_y(x)`` of each event (``y`` defaults to the prediction)."""
    X = _check_x(X)
    adapter = _adapter(model, X, device, batch_size)
    target = _targets(adapter, X, y)
    if len(X) == 0:
        return np.zeros(0)
    logp = adapter.log_probabilities(X)
    if target.max() >= logp.shape[1]:
        raise InputError(
            f"label {int(target.max())} out of range for a {logp.shape[1]}-class model"
        )
    return -logp[np.arange(len(X)), target]


def _predicted(adapter: ModelAdapter, logp: np.ndarray) -> np.ndarray:
    if logp.shape[1] == 2:
        return (np.exp(logp[:, 1]) >= adapter.threshold).astype(np.int64)
    return logp.argmax(axis=1)


def _gradient_step(
    X: Any,
    model: Any,
    y: Any,
    epsilon: float,
    direction: Callable[[np.ndarray], np.ndarray],
    *,
    device: Any,
    batch_size: int | None,
    **masking: Any,
) -> np.ndarray:
    """One step ``x + eps * scale * direction(grad)`` with the common masking options."""
    eps = _check_scalar(epsilon, "epsilon")
    prep = _prepare(X, **masking)
    if len(prep.X) == 0:
        return prep.X.copy()
    adapter = _adapter(model, prep.X, device, batch_size)
    g = _scaled_gradient(adapter, prep.X, _targets(adapter, prep.X, y), prep)
    return prep.finish(eps * prep.scale * direction(g))


def fgsm(
    X: Any,
    model: Any,
    y: Any = None,
    *,
    epsilon: float = 0.01,
    units: str = "absolute",
    immutable: Any = None,
    integer_features: Any = None,
    default_value: Any = None,
    movable: Any = None,
    max_relative: float | None = None,
    bounds: Any = None,
    device: Any = "cpu",
    batch_size: int | None = None,
) -> np.ndarray:
    """Fast gradient sign method: ``x + eps * scale * sign(grad_x loss)``.

    Every movable entry with a non-zero gradient moves by exactly ``epsilon`` (times its
    scale in ``"range"``/``"std"`` units) before ``max_relative``/``bounds`` clipping.
    See the module docstring for the common options.
    """
    return _gradient_step(
        X, model, y, epsilon, np.sign, units=units, immutable=immutable,
        integer_features=integer_features, default_value=default_value, movable=movable,
        max_relative=max_relative, bounds=bounds, device=device, batch_size=batch_size,
    )  # fmt: skip


def ngm(
    X: Any,
    model: Any,
    y: Any = None,
    *,
    epsilon: float = 0.01,
    units: str = "absolute",
    immutable: Any = None,
    integer_features: Any = None,
    default_value: Any = None,
    movable: Any = None,
    max_relative: float | None = None,
    bounds: Any = None,
    device: Any = "cpu",
    batch_size: int | None = None,
) -> np.ndarray:
    """Normalised gradient method: ``x + eps * grad / ||grad||_2`` per event.

    The gradient is restricted to the movable entries before normalising, so each event
    moves by exactly ``epsilon`` in L2 (in the rescaled coordinates) unless clipped;
    events with a zero gradient do not move.  See the module docstring for the options.
    """
    return _gradient_step(
        X, model, y, epsilon, _unit_rows, units=units, immutable=immutable,
        integer_features=integer_features, default_value=default_value, movable=movable,
        max_relative=max_relative, bounds=bounds, device=device, batch_size=batch_size,
    )  # fmt: skip


def pgd(
    X: Any,
    model: Any,
    y: Any = None,
    *,
    epsilon: float = 0.01,
    step_size: float | None = None,
    n_steps: int = 10,
    norm: str = "linf",
    random_start: bool = False,
    seed: int = 0,
    units: str = "absolute",
    immutable: Any = None,
    integer_features: Any = None,
    default_value: Any = None,
    movable: Any = None,
    max_relative: float | None = None,
    bounds: Any = None,
    device: Any = "cpu",
    batch_size: int | None = None,
) -> np.ndarray:
    """Projected gradient ascent on the loss inside the ``epsilon`` ball around ``X``.

    Parameters
    ----------
    epsilon
        Ball radius (L-inf or L2, in the rescaled coordinates of ``units``).
    step_size
        Per-step length (default ``epsilon / 4``): a sign step for ``"linf"``, a
        normalised-gradient step for ``"l2"``.
    n_steps
        Number of ascent steps.
    norm
        ``"linf"`` or ``"l2"``.
    random_start, seed
        Start from a uniform random point of the ball (seeded) instead of ``X``.

    The masks, ``max_relative`` and ``bounds`` are re-applied after every step; they only
    shrink the perturbation, so the result stays inside the ball.  The final iterate is
    returned.  See the module docstring for the common options.
    """
    eps = _check_scalar(epsilon, "epsilon")
    alpha = eps / 4 if step_size is None else _check_scalar(step_size, "step_size")
    if int(n_steps) < 0:
        raise InputError(f"n_steps must be >= 0, got {n_steps}")
    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm must be 'linf' or 'l2', got {norm!r}")
    prep = _prepare(
        X, units=units, immutable=immutable, integer_features=integer_features,
        default_value=default_value, movable=movable, max_relative=max_relative, bounds=bounds,
    )  # fmt: skip
    X0 = prep.X
    if len(X0) == 0:
        return X0.copy()
    adapter = _adapter(model, X0, device, batch_size)
    target = _targets(adapter, X0, y)
    safe_scale = np.where(prep.scale > 0, prep.scale, 1.0)

    def project(u: np.ndarray) -> np.ndarray:
        u = np.where(prep.movable, u, 0.0)
        if norm == "linf":
            return np.clip(u, -eps, eps)
        nrm = np.linalg.norm(u, axis=1, keepdims=True)
        factor = np.minimum(1.0, np.divide(eps, nrm, out=np.ones_like(nrm), where=nrm > 0))
        return u * factor

    def apply(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = prep.finish(prep.scale * u)
        return x, np.where(prep.movable, (x - X0) / safe_scale, 0.0)

    u = np.zeros_like(X0)
    if random_start:
        rng = np.random.default_rng(seed)
        if norm == "linf":
            u = rng.uniform(-eps, eps, size=X0.shape)
        else:
            direction = _unit_rows(np.where(prep.movable, rng.standard_normal(X0.shape), 0.0))
            m = np.maximum(prep.movable.sum(axis=1, keepdims=True), 1)
            u = direction * eps * rng.uniform(size=(len(X0), 1)) ** (1.0 / m)
        u = project(u)
    x, u = apply(u)
    for _ in range(int(n_steps)):
        g = _scaled_gradient(adapter, x, target, prep)
        step = np.sign(g) if norm == "linf" else _unit_rows(g)
        x, u = apply(project(u + alpha * step))
    return x


# ---------------------------------------------------------------------- model-free
def gaussian_noise(
    X: Any,
    *,
    sigma: float = 0.01,
    seed: int = 0,
    units: str = "absolute",
    immutable: Any = None,
    integer_features: Any = None,
    default_value: Any = None,
    movable: Any = None,
    max_relative: float | None = None,
    bounds: Any = None,
) -> np.ndarray:
    """Add independent Gaussian noise ``sigma * scale * N(0, 1)`` to the movable entries.

    The draw depends only on ``seed`` and the shape of ``X`` (not on the masks).
    """
    s = _check_scalar(sigma, "sigma")
    prep = _prepare(
        X, units=units, immutable=immutable, integer_features=integer_features,
        default_value=default_value, movable=movable, max_relative=max_relative, bounds=bounds,
    )  # fmt: skip
    noise = np.random.default_rng(seed).standard_normal(prep.X.shape)
    return prep.finish(s * prep.scale * noise)


def systematic_shift(
    X: Any,
    *,
    epsilon: float | Sequence[float] | np.ndarray,
    direction: int = +1,
    relative: bool = True,
    features: Any = None,
    units: str = "absolute",
    immutable: Any = None,
    integer_features: Any = None,
    default_value: Any = None,
    movable: Any = None,
    max_relative: float | None = None,
    bounds: Any = None,
) -> np.ndarray:
    """Coherent up or down variation of whole features.

    ``relative=True``: ``x * (1 + direction * epsilon)``; otherwise
    ``x + direction * epsilon * scale`` (``scale`` from ``units``).  ``epsilon`` is a
    scalar or a ``(d,)`` array (per feature, each >= 0); ``features`` (indices or mask)
    restricts the shift to some columns.  Up and down are two calls
    (``direction=+1`` / ``-1``).
    """
    if direction not in (1, -1):
        raise InputError(f"direction must be +1 or -1, got {direction!r}")
    prep = _prepare(
        X, units="absolute" if relative else units, immutable=immutable,
        integer_features=integer_features, default_value=default_value, movable=movable,
        max_relative=max_relative, bounds=bounds,
    )  # fmt: skip
    d = prep.X.shape[1]
    eps = np.asarray(epsilon, dtype=np.float64)
    if eps.ndim == 0:
        eps = np.full(d, _check_scalar(eps, "epsilon"))
    elif eps.shape != (d,):
        raise InputError(f"epsilon must be a scalar or a ({d},) array, got shape {eps.shape}")
    elif not np.isfinite(eps).all() or (eps < 0).any():
        raise InputError("epsilon must be finite and >= 0 for every feature")
    if features is not None:
        prep.movable &= _column_mask(features, d, "features")
    if relative:
        return prep.finish_moved(prep.X * (1.0 + direction * eps))
    return prep.finish_moved(prep.X + direction * eps * prep.scale)


# ---------------------------------------------------------------------- loss surface
def loss_surface_scan(
    X: Any,
    model: Any,
    y: Any = None,
    *,
    directions: str | np.ndarray = "gradient",
    radius: float = 0.5,
    n_points: int = 21,
    seed: int = 0,
    units: str = "std",
    weights: Any = None,
    immutable: Any = None,
    integer_features: Any = None,
    default_value: Any = None,
    device: Any = "cpu",
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Mean loss on a 2-D grid of input displacements around the data.

    Every event ``x`` is evaluated at ``x + scale * (a * u1 + b * u2)`` for ``a`` and
    ``b`` on a symmetric grid of ``n_points`` values in ``[-radius, radius]``, with the
    target fixed, and the (weighted) mean cross-entropy is recorded.

    Parameters
    ----------
    directions
        ``"gradient"`` (default): per event, ``u1`` is the normalised sign of the loss
        gradient and ``u2`` a random unit vector orthogonal to it (seeded);
        ``"random"``: two random orthonormal directions shared by all events;
        a ``(2, d)`` array: two directions shared by all events (each normalised).
    radius, units
        Grid half-width, by default in units of each feature's standard deviation
        (the loss-surface paper scans +-0.5 sigma in standardised inputs).
    weights
        Per-event weights for the mean.

    Immutable, integer and default-valued entries are held fixed.

    Returns
    -------
    dict
        ``alpha``, ``beta`` (grid coordinates, ``(n_points,)``), ``loss``
        (``(n_points, n_points)``, ``loss[i, j]`` at ``(alpha[i], beta[j])``),
        ``agreement`` (weighted fraction of events still predicted as the target),
        ``clean_loss``, ``directions`` (the mode), ``direction_vectors`` (``(2, d)`` for
        shared directions, else ``None``), ``radius``, ``units``, ``n_events``.
    """
    r = _check_scalar(radius, "radius")
    if int(n_points) < 1:
        raise InputError(f"n_points must be >= 1, got {n_points}")
    prep = _prepare(
        X,
        units=units,
        immutable=immutable,
        integer_features=integer_features,
        default_value=default_value,
    )
    X0 = prep.X
    n, d = X0.shape
    if n == 0:
        raise InputError("loss_surface_scan needs at least one event")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n or not np.isfinite(w).all() or w.sum() == 0:
        raise InputError(f"weights must be {n} finite values with a non-zero sum")
    adapter = _adapter(model, X0, device, batch_size)
    target = _targets(adapter, X0, y)
    rng = np.random.default_rng(seed)
    vectors = None
    if isinstance(directions, str):
        if directions == "gradient":
            u1 = _unit_rows(np.sign(_scaled_gradient(adapter, X0, target, prep)))
            r2 = np.where(prep.movable, rng.standard_normal(X0.shape), 0.0)
            r2 -= (r2 * u1).sum(axis=1, keepdims=True) * u1
            u2 = _unit_rows(r2)
        elif directions == "random":
            q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
            vectors = q.T[:2] if d >= 2 else np.vstack([q.T, np.zeros((1, d))])
        else:
            raise ConfigError(
                f"directions must be 'gradient', 'random' or a (2, d) array, got {directions!r}"
            )
        mode = directions
    else:
        vectors = np.asarray(directions, dtype=np.float64)
        if vectors.shape != (2, d) or not np.isfinite(vectors).all():
            raise InputError(
                f"directions array must be finite with shape (2, {d}), got {vectors.shape}"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InputError("directions array has a zero row")
        vectors = vectors / norms
        mode = "custom"
    if vectors is not None:
        u1 = np.broadcast_to(vectors[0], X0.shape)
        u2 = np.broadcast_to(vectors[1], X0.shape)
    u1 = np.where(prep.movable, u1, 0.0) * prep.scale
    u2 = np.where(prep.movable, u2, 0.0) * prep.scale
    grid = np.linspace(-r, r, int(n_points))
    loss = np.empty((len(grid), len(grid)))
    agree = np.empty_like(loss)
    rows = np.arange(n)
    wsum = w.sum()
    for i, a in enumerate(grid):
        for j, b in enumerate(grid):
            logp = adapter.log_probabilities(X0 + a * u1 + b * u2)
            loss[i, j] = (w * -logp[rows, target]).sum() / wsum
            agree[i, j] = (w * (_predicted(adapter, logp) == target)).sum() / wsum
    clean = float((w * -adapter.log_probabilities(X0)[rows, target]).sum() / wsum)
    return {
        "alpha": grid.copy(),
        "beta": grid.copy(),
        "loss": loss,
        "agreement": agree,
        "clean_loss": clean,
        "directions": mode,
        "direction_vectors": None if vectors is None else np.array(vectors),
        "radius": r,
        "units": units,
        "n_events": n,
    }
