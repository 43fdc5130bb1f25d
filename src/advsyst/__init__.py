"""advsyst: adversarial pseudo-systematics for coffea-based HEP analyses.

The data path is a chain of plain function calls on arrays::

    ROOT files -> processors (features) -> models (tagger) -> attacks (CONSERVAttack)
      -> detector -> systematics (hist, bands, tables) -> ROOT / pyhf / plots

The attack engine (``advsyst.attacks``, ``advsyst.stats``) never imports coffea.
"""

from __future__ import annotations

import os as _os

# numba (OpenMP layer), torch and OpenBLAS each keep a thread pool; with OpenMP's default
# busy-waiting they steal cores from each other between the attack's kernels and the model
# calls.  Passive waiting keeps them polite (set before any OpenMP runtime starts; a user's
# own setting wins).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["__version__"]
