"""Tagger and detector models: architecture, training, TorchScript save/load."""

from __future__ import annotations

from advsyst.models.io import METADATA_NAME, load_metadata, load_model, predict_proba, save_model
from advsyst.models.mlp import Classifier, Standardize, build_mlp
from advsyst.models.train import TrainHistory, train_classifier

__all__ = [
    "Standardize",
    "build_mlp",
    "Classifier",
    "TrainHistory",
    "train_classifier",
    "save_model",
    "load_model",
    "load_metadata",
    "predict_proba",
    "METADATA_NAME",
]
