"""Data: generated jet samples in PFNano layout, the Donut toy and tabular loaders.

* :func:`generate_sample` - Pythia 8 + detector response + FastJet -> ROOT ``Events`` tree
  that coffea's ``PFNanoAODSchema`` reads (see :mod:`advsyst.data.pfnano_writer`).
* :func:`make_donut` - the Donut toy of the CONSERVAttack paper.
* :func:`load_table` - CSV / parquet / npz features with labels, weights and sentinels.

Heavy dependencies (pythia8mc, fastjet, uproot) are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advsyst.data.donut import DONUT_FEATURES, make_donut
from advsyst.data.tabular import TabularData, load_table

if TYPE_CHECKING:  # pragma: no cover
    from advsyst.data.detector_response import DetectorResponse
    from advsyst.data.generate import GenerationConfig, generate, generate_sample
    from advsyst.data.pfnano_writer import read_provenance, write_nano_tree

__all__ = [
    "generate_sample",
    "generate",
    "GenerationConfig",
    "DetectorResponse",
    "make_donut",
    "DONUT_FEATURES",
    "load_table",
    "TabularData",
    "write_nano_tree",
    "read_provenance",
    "PROCESS_LABELS",
]

_LAZY = {
    "generate_sample": "advsyst.data.generate",
    "generate": "advsyst.data.generate",
    "GenerationConfig": "advsyst.data.generate",
    "DetectorResponse": "advsyst.data.detector_response",
    "write_nano_tree": "advsyst.data.pfnano_writer",
    "read_provenance": "advsyst.data.pfnano_writer",
    "PROCESS_LABELS": "advsyst.data.pythia",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'advsyst.data' has no attribute {name!r}")
