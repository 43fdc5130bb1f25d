"""Jagged -> fixed-size jet features (first 30 constituents, TopoDNN-style) and scalers.

The coffea processors that read ROOT files live in :mod:`advsyst.processors`; this
package holds the array code they share (no coffea import here).
"""

from __future__ import annotations

from advsyst.features.scalers import StandardScaler
from advsyst.features.topodnn import (
    DROPPED_FEATURES,
    N_CONSTITUENTS,
    pad_constituents,
    raw_constituent_features,
    raw_feature_names,
    sort_constituents,
    topodnn_feature_names,
    topodnn_features,
    topodnn_transform,
    wrap_phi,
)

__all__ = [
    "N_CONSTITUENTS",
    "DROPPED_FEATURES",
    "sort_constituents",
    "pad_constituents",
    "raw_constituent_features",
    "raw_feature_names",
    "topodnn_transform",
    "topodnn_features",
    "topodnn_feature_names",
    "wrap_phi",
    "StandardScaler",
]
