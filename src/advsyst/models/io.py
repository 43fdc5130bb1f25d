"""Saving and loading models as TorchScript files with JSON metadata.

A saved model is a TorchScript archive: it runs without advsyst (``torch.jit.load``) and
takes raw features (the standardisation is part of the module).  Metadata — feature
names, output semantics, training configuration, provenance — travels inside the same
file as the extra file ``advsyst_metadata.json``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advsyst._io import atomic_path, provenance, to_jsonable
from advsyst.attacks.model import as_adapter, resolve_device
from advsyst.errors import InputError

__all__ = [
    "METADATA_NAME",
    "save_model",
    "load_model",
    "load_torchscript",
    "load_metadata",
    "predict_proba",
]

METADATA_NAME = "advsyst_metadata.json"


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch's deprecation notices for the TorchScript calls made here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit.* is deprecated", DeprecationWarning)
        yield


def _model_info(model: torch.nn.Module) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for key in ("advsyst_output", "n_features", "n_classes"):
        val = getattr(model, key, None)
        if val is not None:
            info[key] = val
    names = getattr(model, "feature_names", None)
    if names:
        info["feature_names"] = [str(n) for n in names]
    return info


def save_model(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any] | None = None,
    example_input: torch.Tensor | np.ndarray | None = None,
) -> Path:
    """Write ``model`` as a TorchScript file, atomically, with metadata inside.

    Parameters
    ----------
    model
        A module (scripted with ``torch.jit.script``; traced with ``example_input`` when
        scripting fails) or an existing ScriptModule.  The caller's module is not moved
        or modified: a CPU copy in eval mode is saved.
    path
        Destination file (``.pt`` by convention); parent folders are created.
    metadata
        Extra JSON-serialisable information (training configuration, history...).  The
        stored record also holds the model's ``advsyst_output``/``n_features``/
        ``feature_names`` and a provenance block.
    example_input
        ``(n, d)`` input used to trace modules that cannot be scripted.

    Returns
    -------
    Path
        ``path``.
    """
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"save_model expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        scripted = model
    else:
        cpu_copy = copy.deepcopy(model).cpu().eval()
        try:
            with _quiet_jit():
                scripted = torch.jit.script(cpu_copy)
        except Exception as exc:  # not scriptable: fall back to tracing
            if example_input is None:
                n = getattr(model, "n_features", None)
                if not isinstance(n, int):
                    raise InputError(
                        f"cannot script {type(model).__name__} ({str(exc).splitlines()[0]}); "
                        "pass example_input to trace it instead"
                    ) from exc
                example_input = torch.zeros(2, n)
            ex = torch.as_tensor(np.asarray(example_input, dtype=np.float32))
            with _quiet_jit():
                scripted = torch.jit.trace(cpu_copy, ex)
    record: dict[str, Any] = _model_info(model)
    record["user"] = to_jsonable(metadata or {})
    record["provenance"] = provenance()
    blob = json.dumps(to_jsonable(record), indent=2)
    with atomic_path(path) as tmp, _quiet_jit():
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_NAME: blob})
    return Path(path)


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file {str(p)!r} does not exist or is not a file")
    return p


def load_model(path_or_obj: Any, device: str | torch.device = "cpu") -> Any:
    """Load a model of any supported kind from a file, or check an object's kind.

    * a TorchScript file (ours or a user's; any suffix but the two below) -> the module in
      eval mode on ``device``;
    * a ``.onnx`` file -> :class:`~advsyst.models.onnx.OnnxModel` (onnxruntime);
    * an xgboost file (``.json``, ``.ubj``, ``.xgb``, ``.model``) -> ``xgboost.Booster``;
    * a coffea ``torch_wrapper`` -> the module of its TorchScript file; an
      ``xgboost_wrapper`` -> the Booster of its file;
    * torch modules, ONNX models, estimators with ``predict_proba``... -> unchanged.

    Every result is accepted by the attacks (through
    :func:`advsyst.attacks.model.as_adapter`).

    Raises
    ------
    InputError
        When the file is missing or unreadable, or the object is no model advsyst can use.
    """
    from advsyst.models.kinds import resolve_model

    return resolve_model(path_or_obj, device=device)


def load_torchscript(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load any TorchScript model (ours or a user's) in eval mode on ``device``.

    Raises
    ------
    InputError
        When ``path`` is missing, unreadable or not a TorchScript archive.
    """
    p = _check_file(path)
    dev = resolve_device(device)
    try:
        with _quiet_jit():
            model = torch.jit.load(str(p), map_location=dev)
    except Exception as exc:
        hint = ""
        if zipfile.is_zipfile(p):
            hint = (
                " (a zip archive but not a TorchScript module: files written by torch.save "
                "must be loaded with torch.load and the module rebuilt in Python)"
            )
        raise InputError(
            f"cannot load model file {str(p)!r} as TorchScript{hint}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc
    return model.eval()


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata stored by :func:`save_model` (``{}`` for TorchScript files without it)."""
    p = _check_file(path)
    try:
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if n.endswith("/extra/" + METADATA_NAME)]
            if not names:
                return {}
            text = zf.read(names[0]).decode("utf-8")
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"cannot read metadata of model file {str(p)!r}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"corrupt advsyst metadata in model file {str(p)!r}: {exc}") from exc


def predict_proba(
    model: Any,
    X: np.ndarray,
    batch_size: int = 65536,
    device: str | torch.device | None = "cpu",
) -> np.ndarray:
    """Tagger scores: P(class 1), shape ``(n,)``, for binary models; ``(n, k)`` otherwise.

    The input width is checked against the model's ``n_features`` when it has one.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-D (events, features) array, got shape {X.shape}")
    inner = getattr(model, "model", model)
    n = getattr(inner, "n_features", None)
    adapter = as_adapter(
        model,
        n_features=n if isinstance(n, int) and not isinstance(n, bool) else X.shape[1],
        batch_size=int(batch_size),
        device=device,
    )
    return adapter.scores(X)
