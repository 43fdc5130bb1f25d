"""A thin adapter that gives any torch classifier one interface for the attacks.

Accepted models map a float32 ``(n, d)`` tensor to

* ``(n,)`` or ``(n, 1)``: one output per event, a sigmoid probability or a logit
  (``output="auto"`` decides from the module attribute ``advsyst_output`` if present,
  else from the values of the first batch: all in [0, 1] means probability), or
* ``(n, k)`` with ``k >= 2``: logits of ``k`` classes (softmax applied here).

Any other shape raises :class:`~advsyst.errors.ModelOutputError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advsyst.errors import InputError, ModelOutputError

__all__ = ["ModelAdapter", "as_adapter", "resolve_device"]


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
        if self.n_classes is None:
            self.n_classes = 2 if k == 1 else k
        if k == 1 and self.output == "auto":
            with torch.no_grad():
                inside = bool(((out >= 0) & (out <= 1)).all())
            self.output = "probability" if inside else "logit"
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


def as_adapter(model: torch.nn.Module | ModelAdapter, **kwargs) -> ModelAdapter:
    """Wrap ``model`` in a :class:`ModelAdapter` unless it already is one."""
    if isinstance(model, ModelAdapter):
        if kwargs.get("n_features") is not None and model.n_features is None:
            model.n_features = kwargs["n_features"]
        return model
    return ModelAdapter(model, **kwargs)
