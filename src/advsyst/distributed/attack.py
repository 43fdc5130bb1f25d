"""Run the attack on a dask.distributed cluster, on a GPU worker when one is advertised.

The attack needs dataset-level statistics, so it runs as one task on the merged feature
set (pass 1 of the two-pass flow gathers the features).  When workers advertise a ``GPU``
resource (``dask worker --resources GPU=1``) the task is submitted with
``resources={"GPU": 1}`` and evaluates the model there on CUDA; otherwise it runs on any
worker on the CPU.  Models travel as TorchScript bytes (or pickled ``nn.Module``).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch

from advsyst.attacks import AttackResult, ConservAttack
from advsyst.attacks.model import ModelAdapter

__all__ = [
    "gpu_workers",
    "submit_attack",
    "run_attack_task",
    "serialize_model",
    "deserialize_model",
]

log = logging.getLogger(__name__)


def gpu_workers(client: Any) -> list[str]:
    """Addresses of the workers that advertise a ``GPU`` resource."""
    info = (
        client.scheduler_info(n_workers=-1)
        if _accepts_n_workers(client)
        else client.scheduler_info()
    )
    return [
        addr
        for addr, w in info.get("workers", {}).items()
        if float((w.get("resources") or {}).get("GPU", 0)) > 0
    ]


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def serialize_model(model: torch.nn.Module | ModelAdapter) -> tuple[str, Any]:
    """("torchscript", bytes) for scripted modules, ("module", module) otherwise."""
    if isinstance(model, ModelAdapter):
        model = model.model
    model = model.cpu()
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        return "torchscript", buf.getvalue()
    return "module", model


def deserialize_model(payload: tuple[str, Any], device: str = "cpu") -> torch.nn.Module:
    kind, obj = payload
    if kind == "torchscript":
        return torch.jit.load(io.BytesIO(obj), map_location=device)
    return obj.to(device)


def run_attack_task(
    payload: tuple[str, Any],
    X: np.ndarray,
    config: dict[str, Any],
    y: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    attack_mask: np.ndarray | None = None,
    constraint_mask: np.ndarray | None = None,
    want_gpu: bool = False,
) -> AttackResult:
    """The task body (runs on a worker): pick the device, load the model, attack."""
    device = "cuda" if (want_gpu and torch.cuda.is_available()) else "cpu"
    if want_gpu and device == "cpu":
        log.warning("GPU resource granted but CUDA is not available on this worker: using CPU")
    cfg = dict(config, device=device, progress=False)
    model = deserialize_model(payload, device)
    res = ConservAttack(cfg).run(
        X, model, y=y, weights=weights, attack_mask=attack_mask, constraint_mask=constraint_mask
    )
    res.provenance["worker_device"] = device
    return res


def submit_attack(
    client: Any,
    X: np.ndarray,
    model: torch.nn.Module | ModelAdapter,
    config: dict[str, Any] | None = None,
    *,
    y: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    attack_mask: np.ndarray | None = None,
    constraint_mask: np.ndarray | None = None,
    gpu: str | bool = "auto",
) -> Any:
    """Submit CONSERVAttack to ``client``; returns a ``distributed.Future[AttackResult]``.

    ``gpu="auto"`` requests ``resources={"GPU": 1}`` when a worker advertises one,
    ``True`` always requests it (the task waits for such a worker), ``False`` never.
    """
    config = dict(config or {})
    ConservAttack(config)  # validate the keys here, before anything is shipped
    want_gpu = bool(gpu_workers(client)) if gpu == "auto" else bool(gpu)
    kwargs: dict[str, Any] = {"pure": False}
    if want_gpu:
        kwargs["resources"] = {"GPU": 1}
    log.info(
        "submitting CONSERVAttack on %d events (%s)", len(X), "GPU worker" if want_gpu else "CPU"
    )
    X_f = client.scatter(np.asarray(X), direct=True)
    return client.submit(
        run_attack_task,
        serialize_model(model),
        X_f,
        config,
        y,
        weights,
        attack_mask,
        constraint_mask,
        want_gpu,
        **kwargs,
    )
