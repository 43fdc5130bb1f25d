"""advsyst: adversarial pseudo-systematics for coffea-based HEP analyses.

The data path is a chain of plain function calls on arrays::

    ROOT files -> processors (features) -> models (tagger) -> attacks (CONSERVAttack)
      -> detector -> systematics (hist, bands, tables) -> ROOT / pyhf / plots

The attack engine (``advsyst.attacks``, ``advsyst.stats``) never imports coffea.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
