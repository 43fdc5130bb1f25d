"""Which kind of model an object or file is, and the adapter the attacks use for it.

========================================  ==================================  ==============
what you have                             loaded as                           gradients
========================================  ==================================  ==============
TorchScript file (``.pt``, ``.pth``...)   ``torch.jit`` module                autograd
``torch.nn.Module``                       itself                              autograd
``coffea.ml_tools.torch_wrapper``         its TorchScript file (``torch_jit``) autograd
ONNX file / ``onnxruntime`` session       :class:`~advsyst.models.onnx.OnnxModel`  autograd
                                                                              through a
                                                                              torch replay,
                                                                              else finite
                                                                              differences
scikit-learn / xgboost ``predict_proba``  the estimator                       sign of finite
``xgboost.Booster`` (file ``.json``,                                          differences
``.ubj``), ``coffea xgboost_wrapper``
========================================  ==================================  ==============

Nothing here imports coffea: wrappers are recognised by their attributes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advsyst.attacks.model import BlackBoxAdapter, ModelAdapter
from advsyst.errors import InputError

__all__ = ["model_kind", "adapter_for", "resolve_model", "GRADIENT_FREE_DEFAULTS"]

#: finite-difference settings for piecewise-constant models (trees): a step of 1 % of each
#: feature's range, doubled up to 3 times where the loss does not change
GRADIENT_FREE_DEFAULTS: dict[str, Any] = {"fd_step": 1e-2, "fd_retries": 3}
_XGB_SUFFIXES = (".ubj", ".xgb", ".model", ".json")


def _is_torch_wrapper(obj: Any) -> bool:
    return isinstance(getattr(obj, "torch_jit", None), str | os.PathLike) and hasattr(
        obj, "numpy_call"
    )


def _is_xgb_wrapper(obj: Any) -> bool:
    return isinstance(getattr(obj, "xgboost_file", None), str | os.PathLike) and hasattr(
        obj, "numpy_call"
    )


def model_kind(obj: Any) -> str:
    """One of ``"torch"``, ``"torch_wrapper"``, ``"onnx"``, ``"predict_proba"``,
    ``"xgboost_booster"``, ``"xgboost_wrapper"``, ``"callable"``, ``"path"``, ``"adapter"``.

    Raises
    ------
    InputError
        For objects advsyst cannot evaluate.
    """
    from advsyst.models.onnx import OnnxModel

    if isinstance(obj, ModelAdapter):
        return "adapter"
    if isinstance(obj, torch.nn.Module):
        return "torch"
    if isinstance(obj, str | os.PathLike):
        return "path"
    if _is_torch_wrapper(obj):
        return "torch_wrapper"
    if _is_xgb_wrapper(obj):
        return "xgboost_wrapper"
    if isinstance(obj, OnnxModel) or type(obj).__name__ == "InferenceSession":
        return "onnx"
    if type(obj).__name__ == "Booster" and hasattr(obj, "num_features"):
        return "xgboost_booster"
    if callable(getattr(obj, "predict_proba", None)):
        return "predict_proba"
    if callable(obj):
        return "callable"
    raise InputError(
        f"cannot use a {type(obj).__module__}.{type(obj).__name__} as a model: expected a torch "
        "module, a TorchScript or ONNX file, an onnxruntime session, a coffea torch_wrapper / "
        "xgboost_wrapper, an estimator with predict_proba, an xgboost Booster, or a callable"
    )


class _BoosterProba:
    """``X -> probabilities`` of an xgboost Booster (binary: P(1); multi-class: (n, k))."""

    #: objectives whose ``predict`` is a probability (binary:logitraw gives logits)
    PROBABILITY = ("binary:logistic", "multi:softprob", "binary:logitraw")

    def __init__(self, booster: Any) -> None:
        import json

        self.booster = booster
        self.n_features = int(booster.num_features())
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        if objective not in self.PROBABILITY:
            raise InputError(
                f"xgboost Booster with objective {objective!r} does not predict class "
                f"probabilities; train with one of {list(self.PROBABILITY)}"
            )
        self.advsyst_output = "logit" if objective == "binary:logitraw" else "probability"

    def __call__(self, X: np.ndarray) -> np.ndarray:
        import xgboost

        return self.booster.predict(xgboost.DMatrix(np.asarray(X, dtype=np.float32)))


def _load_booster(path: str | os.PathLike[str]) -> Any:
    import xgboost

    try:
        return xgboost.Booster(model_file=str(path))
    except xgboost.core.XGBoostError as exc:
        raise InputError(f"cannot load {str(path)!r} as an xgboost model: {exc}") from exc


def resolve_model(obj: Any, device: str | torch.device = "cpu") -> Any:
    """Files and coffea wrappers -> the model object :func:`adapter_for` takes.

    TorchScript files (any suffix but ``.onnx`` and xgboost's) load as torch modules,
    ``.onnx`` files as :class:`~advsyst.models.onnx.OnnxModel`, xgboost files as a
    ``Booster``; a coffea ``torch_wrapper`` gives the module of its ``torch_jit`` file and an
    ``xgboost_wrapper`` the Booster of its ``xgboost_file``.  Other objects are returned
    unchanged after their kind is checked.
    """
    from advsyst.models.io import load_torchscript
    from advsyst.models.onnx import OnnxModel

    kind = model_kind(obj)
    if kind == "path":
        p = Path(obj)
        if not p.is_file():
            raise InputError(f"model file {str(p)!r} does not exist or is not a file")
        if p.suffix.lower() == ".onnx":
            return OnnxModel(p)
        if p.suffix.lower() in _XGB_SUFFIXES:
            return _load_booster(p)
        return load_torchscript(p, device=device)
    if kind == "torch_wrapper":
        return load_torchscript(obj.torch_jit, device=device)
    if kind == "xgboost_wrapper":
        return _load_booster(obj.xgboost_file)
    return obj


def adapter_for(obj: Any, **kwargs: Any) -> ModelAdapter:
    """The adapter for any supported model (see the table in this module's docstring).

    ``kwargs`` go to the adapter (``n_features``, ``output``, ``device``, ``batch_size``,
    ``threshold``; for gradient-free kinds also ``fd_step``, ``fd_scale``, ``fd_retries``).
    Options that only finite differences use are dropped for autograd models.
    """
    from advsyst.models.onnx import OnnxAdapter, OnnxModel

    fd_keys = ("fd_step", "fd_scale", "fd_retries", "gradient")
    kind = model_kind(obj)
    if kind == "adapter":
        return obj
    device = kwargs.get("device") or "cpu"
    obj = resolve_model(obj, device="cpu" if device == "auto" else device)
    kind = model_kind(obj)
    if kind == "torch":
        return ModelAdapter(obj, **{k: v for k, v in kwargs.items() if k not in fd_keys})
    kw = _drop_none({k: v for k, v in kwargs.items() if k != "gradient"})
    if kind == "onnx":
        if not isinstance(obj, OnnxModel):  # an onnxruntime session
            obj = OnnxModel(_session_bytes(obj))
        opts = GRADIENT_FREE_DEFAULTS if obj.piecewise_constant else {}
        return OnnxAdapter(obj, **{**opts, **_drop_none(kwargs)})
    if kind == "xgboost_booster":
        fn = _BoosterProba(obj)
        return BlackBoxAdapter(fn, name="xgboost Booster", **{**GRADIENT_FREE_DEFAULTS, **kw})
    if kind == "predict_proba":
        opts: dict[str, Any] = {**GRADIENT_FREE_DEFAULTS, "output": "probability", **kw}
        n = getattr(obj, "n_features_in_", None)
        if isinstance(n, int | np.integer):  # the model's declared width is what is checked
            opts["n_features"] = int(n)
        name = f"{type(obj).__name__}.predict_proba"
        return BlackBoxAdapter(obj.predict_proba, name=name, **opts)
    return BlackBoxAdapter(obj, name=getattr(obj, "__name__", type(obj).__name__), **kw)


def _drop_none(kw: dict[str, Any]) -> dict[str, Any]:
    """Keep the model's declared width and output unless the caller sets them."""
    out = {k: v for k, v in kw.items() if v is not None}
    if out.get("output") == "auto":
        out.pop("output")
    return out


def _session_bytes(session: Any) -> bytes:
    data = getattr(session, "_model_bytes", None)
    if isinstance(data, bytes):
        return data
    path = getattr(session, "_model_path", None)
    if path:
        return Path(path).read_bytes()
    raise InputError(
        "cannot recover the model behind this onnxruntime session; pass the .onnx file path "
        "(or advsyst.models.OnnxModel(path)) instead"
    )
