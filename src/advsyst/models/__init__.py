"""Tagger and detector models: architecture, training, save/load, every model kind."""

from __future__ import annotations

from advsyst.models.io import (
    METADATA_NAME,
    load_metadata,
    load_model,
    load_torchscript,
    predict_proba,
    save_model,
)
from advsyst.models.kinds import adapter_for, model_kind
from advsyst.models.mlp import Classifier, Standardize, build_mlp
from advsyst.models.onnx import OnnxAdapter, OnnxModel, onnx_to_torch
from advsyst.models.particles import ParticleLayout, ParticleModule, per_particle
from advsyst.models.train import TrainHistory, train_classifier

__all__ = [
    "Standardize",
    "build_mlp",
    "Classifier",
    "TrainHistory",
    "train_classifier",
    "save_model",
    "load_model",
    "load_torchscript",
    "model_kind",
    "adapter_for",
    "OnnxModel",
    "OnnxAdapter",
    "onnx_to_torch",
    "ParticleLayout",
    "ParticleModule",
    "per_particle",
    "load_metadata",
    "predict_proba",
    "METADATA_NAME",
]
