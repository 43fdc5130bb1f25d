"""Adapters that give every kind of classifier one interface for the attacks.

:class:`ModelAdapter` wraps a torch module (TorchScript included) and differentiates it
with autograd.  Accepted modules map a float32 ``(n, d)`` tensor to

* ``(n,)`` or ``(n, 1)``: one output per event, a sigmoid probability or a logit
  (``output="auto"`` decides from the module attribute ``advsyst_output`` if present,
  else from the values of the first batch: all in [0, 1] means probability), or
* ``(n, k)`` with ``k >= 2``: logits of ``k`` classes (softmax applied here).

:class:`BlackBoxAdapter` (a ``ModelAdapter`` subclass, so every attack accepts it) wraps a
NumPy function instead — an onnxruntime session, a scikit-learn / xgboost
``predict_proba`` — and replaces the gradient by central finite differences (see its
docstring for the cost and the step).  :func:`as_adapter` picks the adapter from the
object it is given.

Any other output shape, NaN/inf outputs, and declared probabilities outside [0, 1] raise
:class:`~advsyst.errors.ModelOutputError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advsyst.errors import InputError, ModelOutputError

__all__ = ["ModelAdapter", "BlackBoxAdapter", "as_adapter", "resolve_device"]

log = logging.getLogger(__name__)


def _check_finite_outputs(out: np.ndarray | torch.Tensor, n: int) -> None:
    """Raise :class:`ModelOutputError` naming the events whose output is NaN/inf."""
    if isinstance(out, torch.Tensor):
        with torch.no_grad():
            bad_t = ~torch.isfinite(out)
            if not bool(bad_t.any()):
                return
            bad = bad_t.reshape(n, -1).any(dim=1).cpu().numpy()
    else:
        bad_np = ~np.isfinite(out)
        if not bad_np.any():
            return
        bad = bad_np.reshape(n, -1).any(axis=1)
    idx = np.flatnonzero(bad)
    raise ModelOutputError(
        f"model returned NaN/inf for {len(idx)} of {n} events (batch rows "
        f"{idx[:10].tolist()}{' ...' if len(idx) > 10 else ''}); check the inputs and the model"
    )


def _check_probabilities(p: np.ndarray | torch.Tensor, what: str) -> None:
    """Raise :class:`ModelOutputError` when declared probabilities leave [0, 1]."""
    if isinstance(p, torch.Tensor):
        with torch.no_grad():
            lo, hi = float(p.min()), float(p.max())
    else:
        lo, hi = float(np.min(p)), float(np.max(p))
    if lo < 0.0 or hi > 1.0:
        raise ModelOutputError(
            f"{what} are outside [0, 1] (min {lo:.6g}, max {hi:.6g}); if the model returns "
            "logits, say so with output='logit'"
        )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available else CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


@dataclass
class ModelAdapter:
    """Uniform predict / score / gradient access to a torch classifier.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (TorchScript modules included).  It is put in eval mode.
    n_features
        Expected input width; checked against every input.
    output
        ``"auto"``, ``"probability"`` or ``"logit"`` for single-output models.
    device
        Where to evaluate (``"auto"``, ``"cpu"``, ``"cuda"``...).
    batch_size
        Events per forward pass.
    threshold
        Decision threshold on the probability of class 1 for binary models.
    """

    model: torch.nn.Module
    n_features: int | None = None
    output: str = "auto"
    device: str | torch.device | None = "cpu"
    batch_size: int = 65536
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.output not in ("auto", "probability", "logit"):
            raise ModelOutputError(f"output must be auto/probability/logit, got {self.output!r}")
        self.device = resolve_device(self.device)
        self.model = self.model.to(self.device).eval()
        if self.output == "auto":
            self.output = getattr(self.model, "advsyst_output", "auto")
        self.n_classes: int | None = None
        # a model that declares its input width is checked against it (not against the data)
        declared = getattr(self.model, "n_features", None)
        if isinstance(declared, int) and not isinstance(declared, bool):
            self.n_features = declared
        # sigmoid outputs saturate (p clamps to 0/1 and the input gradient vanishes for
        # confident events): evaluate advsyst-style models through their logits instead
        self.calls = 0  # forward passes and rows evaluated (for cost accounting)
        self.rows = 0
        self._forward = self.model
        if self.output == "probability" and hasattr(self.model, "logits"):
            self._forward = self.model.logits
            self.output = "logit"

    # ------------------------------------------------------------------ helpers
    def _check_x(self, X: np.ndarray | torch.Tensor) -> None:
        if X.ndim != 2:
            raise InputError(
                f"features must be a 2-D (events, features) array, got shape {tuple(X.shape)}"
            )
        if self.n_features is not None and X.shape[1] != self.n_features:
            raise InputError(
                f"model expects {self.n_features} features but the input has {X.shape[1]}"
            )

    def _raw(self, xb: torch.Tensor) -> torch.Tensor:
        try:
            out = self._forward(xb)
        except (RuntimeError, torch.jit.Error) as exc:  # shape mismatch inside the model, typically
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "shape" in ln), lines[-1] if lines else "")
            raise InputError(
                f"model failed on input of shape {tuple(xb.shape)} (does the data have the number "
                f"of features the model expects?): {detail}"
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(f"model returned {type(out).__name__}, expected a tensor")
        n = xb.shape[0]
        self.calls += 1
        self.rows += n
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim == 1:
            if out.shape[0] != n:
                raise ModelOutputError(f"model returned {out.shape[0]} outputs for {n} events")
            k = 1
        elif out.ndim == 2 and out.shape[0] == n and out.shape[1] >= 2:
            k = out.shape[1]
        else:
            raise ModelOutputError(
                f"model output has shape {tuple(out.shape)} for {n} events; expected (n,), (n, 1) "
                "or (n, k>=2)"
            )
        _check_finite_outputs(out, n)
        if self.n_classes is None:
            self.n_classes = 2 if k == 1 else k
        elif (2 if k == 1 else k) != self.n_classes:
            raise ModelOutputError(
                f"model returned {k} output column(s) here but {self.n_classes} classes before"
            )
        if k == 1 and self.output == "auto":
            with torch.no_grad():
                inside = bool(((out >= 0) & (out <= 1)).all())
            self.output = "probability" if inside else "logit"
        if k == 1 and self.output == "probability":
            _check_probabilities(out, "model outputs declared as probabilities")
        return out

    def _log_probs(self, raw: torch.Tensor) -> torch.Tensor:
        """(n, k) log-probabilities (k = 2 for binary models)."""
        if raw.ndim == 1:
            if self.output == "probability":
                p = raw.clamp(1e-7, 1 - 1e-7)
                return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
            return torch.stack(
                [torch.nn.functional.logsigmoid(-raw), torch.nn.functional.logsigmoid(raw)], 1
            )
        return torch.log_softmax(raw, dim=1)

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device)

    # ------------------------------------------------------------------ public
    def log_probabilities(self, X: np.ndarray) -> np.ndarray:
        """Class log-probabilities (n, k) in float64, exact also for confident events."""
        self._check_x(X)
        out = []
        with torch.no_grad():
            for s in range(0, len(X), self.batch_size):
                xb = self._tensor(X[s : s + self.batch_size])
                out.append(self._log_probs(self._raw(xb).double()).cpu().numpy())
        if not out:
            return np.zeros((0, self.n_classes or 2))
        return np.concatenate(out)

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, k) (k = 2 for binary models)."""
        self._check_x(X)
        out = []
        with torch.no_grad():
            for s in range(0, len(X), self.batch_size):
                xb = self._tensor(X[s : s + self.batch_size])
                out.append(self._log_probs(self._raw(xb)).exp().cpu().numpy())
        if not out:
            return np.zeros((0, self.n_classes or 2))
        return np.concatenate(out).astype(np.float64)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """The tagger score: P(class 1) for binary models, (n, k) probabilities otherwise."""
        p = self.probabilities(X)
        return p[:, 1] if p.shape[1] == 2 else p

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class per event (int64)."""
        p = self.probabilities(X)
        if p.shape[1] == 2:
            return (p[:, 1] >= self.threshold).astype(np.int64)
        return p.argmax(axis=1).astype(np.int64)

    def loss_gradient(self, X: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Gradient of the per-event cross-entropy w.r.t. the inputs, shape (n, d)."""
        self._check_x(X)
        target = np.asarray(target, dtype=np.int64)
        grads = []
        for s in range(0, len(X), self.batch_size):
            xb = self._tensor(X[s : s + self.batch_size]).requires_grad_(True)
            logp = self._log_probs(self._raw(xb))
            tb = torch.as_tensor(target[s : s + self.batch_size], device=self.device)
            if tb.numel() and int(tb.max()) >= logp.shape[1]:
                raise InputError(
                    f"label {int(tb.max())} out of range for a {logp.shape[1]}-class model"
                )
            loss = -logp.gather(1, tb[:, None]).sum()
            (g,) = torch.autograd.grad(loss, xb)
            grads.append(g.detach().cpu().numpy())
        if not grads:
            return np.zeros((0, X.shape[1]))
        return np.concatenate(grads).astype(np.float64)


@dataclass
class BlackBoxAdapter(ModelAdapter):
    """A classifier seen only through a NumPy function, differentiated by finite differences.

    Used for ONNX files evaluated by onnxruntime, scikit-learn / xgboost ``predict_proba``
    and any other ``X (n, d) -> outputs`` callable.  It is a :class:`ModelAdapter`, so
    every attack accepts it; the torch-specific parts are replaced:

    * outputs may be ``(n,)`` / ``(n, 1)`` probabilities or logits (``output``, as for
      torch models) or ``(n, k)`` class probabilities (recognised when every row lies in
      [0, 1] and sums to 1) or logits; probabilities are floored at 1e-12 before the log;
    * :meth:`loss_gradient` is a central difference of the per-event cross-entropy,
      ``(L(x + h_j e_j) - L(x - h_j e_j)) / 2 h_j`` for each feature ``j``: ``2 d`` model
      evaluations per event instead of one forward and one backward pass.  For smooth
      models (an MLP exported to ONNX) it approximates the gradient; for piecewise-constant
      models (boosted trees) only its **sign** means something, which is all that
      CONSERVAttack and FGSM use: the candidates lie in the gradient-sign direction.

    Parameters
    ----------
    model
        ``callable(X) -> array``; ``X`` is float64 ``(m, d)`` (cast by the callable).
    n_features, output, device, batch_size, threshold
        As for :class:`ModelAdapter` (``device`` is accepted and ignored).
    fd_step
        Step ``h_j = fd_step * scale_j``.
    fd_scale
        ``"range"`` (default): ``scale_j`` = the range max - min of feature ``j`` in the
        first array this adapter evaluates (the full clean sample in every advsyst attack;
        call :meth:`calibrate` to set it explicitly), 1 where that range is 0;
        ``"absolute"``: ``scale_j = 1``; or a ``(d,)`` array of positive scales.
    fd_retries
        For entries whose difference is exactly 0 (flat regions of trees), retry up to this
        many times with the step doubled each time.
    name
        Used in error messages (e.g. the file name).
    """

    fd_step: float = 1e-3
    fd_scale: Any = "range"
    fd_retries: int = 0
    name: str = "model"

    def __post_init__(self) -> None:
        if self.output not in ("auto", "probability", "logit"):
            raise ModelOutputError(f"output must be auto/probability/logit, got {self.output!r}")
        if not callable(self.model):
            raise InputError(f"{self.name}: model must be callable, got {type(self.model)!r}")
        step = float(self.fd_step)
        if not np.isfinite(step) or step <= 0:
            raise InputError(f"fd_step must be finite and > 0, got {self.fd_step!r}")
        if int(self.fd_retries) < 0:
            raise InputError(f"fd_retries must be >= 0, got {self.fd_retries!r}")
        self.device = torch.device("cpu")
        if self.output == "auto":
            self.output = getattr(self.model, "advsyst_output", "auto")
        declared = getattr(self.model, "n_features", None)
        if isinstance(declared, int) and not isinstance(declared, bool):
            self.n_features = declared
        self.n_classes = None
        self._kind: str | None = None  # "p1" / "logit1" / "pk" / "logitk"
        self._scale: np.ndarray | None = None
        if not isinstance(self.fd_scale, str):
            sc = np.asarray(self.fd_scale, dtype=np.float64).reshape(-1)
            if not np.isfinite(sc).all() or (sc <= 0).any():
                raise InputError("fd_scale must hold finite positive numbers")
            self._scale = sc
        elif self.fd_scale not in ("range", "absolute"):
            raise InputError(
                f"fd_scale must be 'range', 'absolute' or an array, got {self.fd_scale!r}"
            )
        self.calls = 0
        self.rows = 0

    # ------------------------------------------------------------------ evaluation
    def calibrate(self, X: np.ndarray) -> None:
        """Set the finite-difference scale from ``X`` (only with ``fd_scale="range"``)."""
        X = np.asarray(X, dtype=np.float64)
        if self.fd_scale == "absolute":
            self._scale = np.ones(X.shape[1])
        elif isinstance(self.fd_scale, str):
            rng = X.max(axis=0) - X.min(axis=0) if len(X) else np.zeros(X.shape[1])
            self._scale = np.where(rng > 0, rng, 1.0)

    def _eval(self, X: np.ndarray) -> np.ndarray:
        """Raw outputs of ``X`` (m, d), validated, one model call."""
        n = len(X)
        try:
            out = self.model(X)
        except (ValueError, RuntimeError, TypeError, IndexError) as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise InputError(
                f"{self.name} failed on input of shape {tuple(X.shape)} (does the data have the "
                f"number of features the model expects?): {lines[-1] if lines else exc!r}"
            ) from exc
        self.calls += 1
        self.rows += n
        try:
            out = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ModelOutputError(
                f"{self.name} returned {type(out).__name__}, expected a numeric array"
            ) from exc
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim == 1:
            if out.shape[0] != n:
                raise ModelOutputError(
                    f"{self.name} returned {out.shape[0]} outputs for {n} events"
                )
            k = 1
        elif out.ndim == 2 and out.shape[0] == n and out.shape[1] >= 2:
            k = out.shape[1]
        else:
            raise ModelOutputError(
                f"{self.name} output has shape {out.shape} for {n} events; expected (n,), (n, 1) "
                "or (n, k>=2)"
            )
        _check_finite_outputs(out, n)
        if self._kind is None and n:
            self.n_classes = 2 if k == 1 else k
            if self.output == "auto":
                inside = bool(((out >= 0) & (out <= 1)).all())
                if k > 1:
                    inside = inside and bool(np.allclose(out.sum(axis=1), 1.0, atol=1e-3))
                self.output = "probability" if inside else "logit"
            self._kind = ("p" if self.output == "probability" else "logit") + (
                "1" if k == 1 else "k"
            )
        if n and (2 if k == 1 else k) != self.n_classes:
            raise ModelOutputError(
                f"{self.name} returned {k} output column(s) here but {self.n_classes} classes before"
            )
        if n and self._kind in ("p1", "pk"):
            _check_probabilities(out, f"{self.name} outputs declared as probabilities")
            if self._kind == "pk":
                s = out.sum(axis=1)
                if not np.allclose(s, 1.0, atol=1e-3):
                    i = int(np.argmax(np.abs(s - 1.0)))
                    raise ModelOutputError(
                        f"{self.name} class probabilities do not sum to 1 (row {i} sums to "
                        f"{s[i]:.6g}); if the model returns logits, say so with output='logit'"
                    )
        return out

    def _logp(self, out: np.ndarray) -> np.ndarray:
        if self._kind == "p1":
            p = np.clip(out, 1e-12, 1 - 1e-12)
            return np.stack([np.log1p(-p), np.log(p)], axis=1)
        if self._kind == "logit1":
            return np.stack([-np.logaddexp(0.0, out), -np.logaddexp(0.0, -out)], axis=1)
        if self._kind == "pk":
            return np.log(np.clip(out, 1e-12, 1.0))
        z = out - out.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def _logp_of(self, X: np.ndarray) -> np.ndarray:
        return self._logp(self._eval(X))

    def log_probabilities(self, X: np.ndarray) -> np.ndarray:
        """Class log-probabilities (n, k) in float64."""
        self._check_x(X)
        X = np.asarray(X, dtype=np.float64)
        if self._scale is None:
            self.calibrate(X)
        out = [self._logp_of(X[s : s + self.batch_size]) for s in range(0, len(X), self.batch_size)]
        if not out:
            return np.zeros((0, self.n_classes or 2))
        return np.concatenate(out)

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, k) (k = 2 for binary models)."""
        return np.exp(self.log_probabilities(X))

    def loss_gradient(self, X: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Central finite difference of the per-event cross-entropy, shape (n, d).

        Costs ``2 d`` model rows per event (plus retries on flat entries); the rows are
        sent to the model in calls of about ``batch_size`` rows.
        """
        self._check_x(X)
        X = np.asarray(X, dtype=np.float64)
        n, d = X.shape
        target = np.asarray(target, dtype=np.int64)
        if target.shape != (n,):
            raise InputError(f"target has shape {target.shape}, expected ({n},)")
        if self._scale is None:
            self.calibrate(X)
        if self._scale.shape != (d,):
            raise InputError(f"fd_scale has {self._scale.shape[0]} entries for {d} features")
        grad = np.zeros((n, d))
        if n == 0:
            return grad
        h = float(self.fd_step) * self._scale
        chunk = max(1, int(self.batch_size) // (2 * d))
        for s in range(0, n, chunk):
            xb, tb = X[s : s + chunk], target[s : s + chunk]
            grad[s : s + chunk] = self._central(xb, tb, h, np.ones(xb.shape, dtype=bool))
            for _ in range(int(self.fd_retries)):
                flat = grad[s : s + chunk] == 0.0
                if not flat.any():
                    break
                h = h * 2.0
                again = self._central(xb, tb, h, flat)
                grad[s : s + chunk] = np.where(flat, again, grad[s : s + chunk])
            h = float(self.fd_step) * self._scale
        return grad

    def _central(
        self, xb: np.ndarray, tb: np.ndarray, h: np.ndarray, which: np.ndarray
    ) -> np.ndarray:
        """Central differences for the (row, feature) entries selected by ``which``."""
        rows, cols = np.nonzero(which)
        out = np.zeros(xb.shape)
        if len(rows) == 0:
            return out
        plus = xb[rows].copy()
        minus = xb[rows].copy()
        k = np.arange(len(rows))
        plus[k, cols] += h[cols]
        minus[k, cols] -= h[cols]
        lp = self._logp_of(np.concatenate([plus, minus]))
        if int(tb.max()) >= lp.shape[1]:
            raise InputError(f"label {int(tb.max())} out of range for a {lp.shape[1]}-class model")
        t = tb[rows]
        m = len(rows)
        loss_p = -lp[k, t]
        loss_m = -lp[m + k, t]
        out[rows, cols] = (loss_p - loss_m) / (2.0 * h[cols])
        return out


def as_adapter(model: Any, **kwargs: Any) -> ModelAdapter:
    """Wrap ``model`` in the adapter for its kind unless it already is one.

    Torch modules get a :class:`ModelAdapter`; ONNX models, coffea ``torch_wrapper`` /
    ``xgboost_wrapper``, estimators with ``predict_proba``, xgboost Boosters, model files
    and plain callables go through :func:`advsyst.models.kinds.adapter_for`.
    """
    if isinstance(model, ModelAdapter):
        if kwargs.get("n_features") is not None and model.n_features is None:
            model.n_features = kwargs["n_features"]
        return model
    if isinstance(model, torch.nn.Module):
        return ModelAdapter(model, **kwargs)
    from advsyst.models.kinds import adapter_for  # models depends on attacks, not back

    return adapter_for(model, **kwargs)
