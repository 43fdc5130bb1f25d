"""coffea processors shipped with advsyst (installed as ``advsyst.processors``).

* :class:`JetConstituentProcessor` - PFNano: first 30 constituents, raw and TopoDNN inputs.
* :class:`JetVariablesProcessor` - NanoAOD: jet kinematics and tagger variables.
* :func:`advsyst.processors.run.extract_features` - run either over a fileset with the
  iterative, futures or dask executor and get merged NumPy arrays.
"""

from __future__ import annotations

from advsyst.processors.jet_features import (
    DEFAULT_REGIONS,
    ConstituentLayout,
    JetConstituentProcessor,
    JetVariablesProcessor,
    RegionCut,
    detect_layout,
)

__all__ = [
    "JetConstituentProcessor",
    "JetVariablesProcessor",
    "ConstituentLayout",
    "RegionCut",
    "DEFAULT_REGIONS",
    "detect_layout",
]
