"""Per-particle taggers (ParticleNet, ParT, DeepSets...) seen by the flat-array attacks.

Such taggers take a padded array ``x`` of shape ``(jets, particles, features)`` plus a
boolean mask of the real (not padded) particle slots.  The attacks work on ``(n, d)``
arrays, so :class:`ParticleLayout` defines the flat view: column ``s * F + f`` holds
feature ``f`` of slot ``s`` (``x.reshape(n, P * F)``), and :func:`per_particle` wraps the
tagger so that it receives its own ``(n, P, F)`` shape and the mask back.

The mask is recovered from the flat row itself: a slot is padding when its features equal
``pad_value`` (all of them, or the one named by ``mask_feature``, e.g. the pT).
:meth:`ParticleLayout.flatten` checks on the clean data that this rule reproduces the
given mask, and :meth:`ParticleLayout.movable` gives the per-entry boolean mask (False on
padded slots) for ``ConservAttack.run(..., movable=...)``, so padded entries never move
and the recovered mask stays exact on the attacked data.

Example
-------
>>> layout = ParticleLayout(n_particles=30, n_features=3)         # doctest: +SKIP
>>> X = layout.flatten(x, mask)                                   # (n, 90)
>>> model = per_particle(tagger, layout)    # torch module, ONNX model or callable
>>> res = ConservAttack(cfg).run(X, model, movable=layout.movable(X))
>>> x_adv = layout.unflatten(res.X_adv)                           # (n, 30, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advsyst.errors import InputError

__all__ = ["ParticleLayout", "ParticleModule", "per_particle"]


@dataclass(frozen=True)
class ParticleLayout:
    """Shape of a padded per-particle input and the rule that recognises padding.

    Parameters
    ----------
    n_particles
        Slots per jet ``P``.
    n_features
        Features per particle ``F``.
    pad_value
        Value of every feature in a padded slot.
    mask_feature
        If set, a slot is padding when this feature equals ``pad_value`` (e.g. the pT
        column, for features that may legitimately be 0 in real particles); otherwise when
        all ``F`` features do.
    feature_names
        Names of the ``F`` per-particle features (for :meth:`column_names`).
    """

    n_particles: int
    n_features: int
    pad_value: float = 0.0
    mask_feature: int | None = None
    feature_names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        for name in ("n_particles", "n_features"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if not np.isfinite(float(self.pad_value)):
            raise InputError(f"pad_value must be finite, got {self.pad_value!r}")
        if self.mask_feature is not None and not 0 <= int(self.mask_feature) < self.n_features:
            raise InputError(
                f"mask_feature {self.mask_feature!r} out of range for {self.n_features} features"
            )
        if self.feature_names is not None and len(self.feature_names) != self.n_features:
            raise InputError(
                f"{len(self.feature_names)} feature names for {self.n_features} features"
            )

    @property
    def width(self) -> int:
        """Columns of the flat view, ``P * F``."""
        return int(self.n_particles) * int(self.n_features)

    def column_names(self) -> list[str]:
        """``"p{slot}_{feature}"`` for every flat column."""
        names = list(self.feature_names or [f"f{j}" for j in range(self.n_features)])
        return [f"p{s}_{n}" for s in range(self.n_particles) for n in names]

    # ------------------------------------------------------------------ array views
    def _check_flat(self, X: Any) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.width:
            raise InputError(
                f"flat per-particle array must have shape (n, {self.width}) = (n, "
                f"{self.n_particles} particles x {self.n_features} features), got {X.shape}"
            )
        return X

    def flatten(self, x: Any, mask: Any = None) -> np.ndarray:
        """``(n, P, F)`` padded array -> ``(n, P * F)`` float64 flat view.

        With ``mask`` (``(n, P)``, True = real particle), padded slots are set to
        ``pad_value`` and the padding rule is checked to reproduce ``mask``: a real particle
        that looks like padding raises :class:`InputError` naming the jet and slot.
        """
        x = np.array(x, dtype=np.float64)
        P, F = self.n_particles, self.n_features
        if x.ndim != 3 or x.shape[1:] != (P, F):
            raise InputError(f"per-particle array must have shape (jets, {P}, {F}), got {x.shape}")
        bad = ~np.isfinite(x)
        if mask is not None:
            m = np.asarray(mask)
            if m.shape != x.shape[:2]:
                raise InputError(f"mask has shape {m.shape}, expected {x.shape[:2]}")
            m = m.astype(bool)
            x[~m] = self.pad_value
            bad &= m[:, :, None]
            looks_padded = ~self.mask(x.reshape(len(x), -1))
            clash = m & looks_padded
            if clash.any():
                j, s = np.argwhere(clash)[0]
                raise InputError(
                    f"jet {j}, slot {s} is a real particle but its "
                    + (
                        "features all equal"
                        if self.mask_feature is None
                        else f"feature {self.mask_feature} equals"
                    )  # fmt: skip
                    + f" pad_value={self.pad_value}: choose another pad_value or mask_feature"
                )
        if bad.any():
            j, s, f = np.argwhere(bad)[0]
            raise InputError(
                f"per-particle array has {int(bad.sum())} NaN/inf entries in real particles "
                f"(first: jet {j}, slot {s}, feature {f})"
            )
        return x.reshape(len(x), P * F)

    def unflatten(self, X: Any) -> np.ndarray:
        """``(n, P * F)`` -> ``(n, P, F)`` (a view when possible)."""
        X = self._check_flat(X)
        return X.reshape(len(X), self.n_particles, self.n_features)

    def mask(self, X: Any) -> np.ndarray:
        """``(n, P)`` boolean mask of real particles recovered from flat rows."""
        x = self.unflatten(X)
        if self.mask_feature is not None:
            return x[:, :, int(self.mask_feature)] != self.pad_value
        return (x != self.pad_value).any(axis=2)

    def movable(self, X: Any) -> np.ndarray:
        """``(n, P * F)`` per-entry mask for the attacks: False on every padded slot."""
        m = self.mask(X)
        return np.repeat(m, self.n_features, axis=1)

    def torch_mask(self, x3: torch.Tensor) -> torch.Tensor:
        """:meth:`mask` on a ``(n, P, F)`` tensor."""
        if self.mask_feature is not None:
            return x3[:, :, int(self.mask_feature)] != self.pad_value
        return (x3 != self.pad_value).any(dim=2)


class ParticleModule(torch.nn.Module):
    """A torch tagger ``inner(x (n, P, F), mask (n, P))`` taking flat ``(n, P * F)`` rows.

    The mask is recomputed from the rows with the layout's padding rule and passed as the
    second argument (``mask_arg=False``: not passed).  Padded entries are detached, so
    their input gradient is exactly zero whatever the tagger does with them.
    """

    def __init__(self, inner: torch.nn.Module, layout: ParticleLayout, mask_arg: bool = True):
        super().__init__()
        self.inner = inner
        self.layout = layout
        self.mask_arg = bool(mask_arg)
        self.n_features = layout.width
        out = getattr(inner, "advsyst_output", None)
        if out is not None:
            self.advsyst_output = out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        n = X.shape[0]
        x = X.reshape(n, self.layout.n_particles, self.layout.n_features)
        mask = self.layout.torch_mask(x)
        x = torch.where(mask[:, :, None], x, x.detach())
        return self.inner(x, mask) if self.mask_arg else self.inner(x)


class _ParticleCallable:
    """NumPy form of :class:`ParticleModule` for callables and ``predict_proba`` models."""

    def __init__(self, inner: Any, layout: ParticleLayout, mask_arg: bool) -> None:
        self.inner, self.layout, self.mask_arg = inner, layout, mask_arg
        self.n_features = layout.width
        self.__name__ = f"per-particle {getattr(inner, '__name__', type(inner).__name__)}"

    def __call__(self, X: np.ndarray) -> np.ndarray:
        x = self.layout.unflatten(X)
        return self.inner(x, self.layout.mask(X)) if self.mask_arg else self.inner(x)


def _particle_onnx(model: Any, layout: ParticleLayout, mask_arg: bool) -> Any:
    from advsyst.models.onnx import OnnxModel, onnx_to_torch

    class _ParticleOnnx(OnnxModel):
        """The ONNX tagger on flat rows; its torch replay is wrapped the same way."""

        def __init__(self) -> None:  # share the loaded model's state
            self.__dict__.update(model.__dict__)
            self._session = model._session
            self.n_features = layout.width
            self.name = f"per-particle {model.name}"
            expected = 2 if mask_arg else 1
            if len(self.input_names) != expected:
                raise InputError(
                    f"{model.name} has inputs {self.input_names}; a per-particle tagger needs "
                    f"{expected} (x{', mask' if mask_arg else ''})"
                )

        def __call__(self, X: np.ndarray) -> np.ndarray:  # type: ignore[override]
            x = layout.unflatten(X)
            args = (x, layout.mask(X)) if mask_arg else (x,)
            return OnnxModel.__call__(self, *args)

        def to_torch(self) -> torch.nn.Module:
            return ParticleModule(onnx_to_torch(self.data, self.output_name), layout, mask_arg)

    return _ParticleOnnx()


def per_particle(model: Any, layout: ParticleLayout, *, mask_arg: bool = True) -> Any:
    """Wrap a per-particle tagger so the attacks can take it on the flat view.

    Parameters
    ----------
    model
        A torch module, an ONNX file / :class:`~advsyst.models.onnx.OnnxModel` (inputs
        ``x`` and, with ``mask_arg``, the mask), or a NumPy callable, each called as
        ``model(x, mask)`` with ``x`` of shape ``(n, P, F)`` and the boolean ``(n, P)``
        mask (``model(x)`` when ``mask_arg=False``).
    layout
        The padded shape and the padding rule.

    Returns
    -------
    object
        A model taking ``(n, P * F)`` rows, accepted by every attack (through
        :func:`~advsyst.attacks.model.as_adapter`): torch modules keep autograd gradients,
        ONNX models keep onnxruntime predictions and the torch replay's gradients.
    """
    from advsyst.models.kinds import model_kind, resolve_model

    if not isinstance(layout, ParticleLayout):
        raise InputError(f"layout must be a ParticleLayout, got {type(layout).__name__}")
    model = resolve_model(model)
    kind = model_kind(model)
    if kind == "torch":
        return ParticleModule(model, layout, mask_arg)
    if kind == "onnx":
        from advsyst.models.onnx import OnnxModel

        if not isinstance(model, OnnxModel):
            from advsyst.models.kinds import _session_bytes

            model = OnnxModel(_session_bytes(model))
        return _particle_onnx(model, layout, mask_arg)
    if kind == "callable":
        return _ParticleCallable(model, layout, mask_arg)
    raise InputError(
        f"per_particle takes a torch module, an ONNX model or a callable, got a {kind} model "
        f"({type(model).__name__})"
    )
