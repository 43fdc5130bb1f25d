"""The Donut toy data set (CONSERVAttack paper, Section 9).

Signal: a 2-D Gaussian centred at the origin, ``x1, x2 ~ N(0, sigma^2)``.
Background: a ring, radius ``r ~ N(r_ring, ring_sigma^2)`` and angle ``theta ~ U(0, 2 pi)``,
``(x1, x2) = (r cos theta, r sin theta)``.  Both classes have linearly uncorrelated inputs;
with the defaults the classes overlap a little.
"""

from __future__ import annotations

import numpy as np

from advsyst.errors import InputError

__all__ = ["make_donut", "DONUT_FEATURES"]

DONUT_FEATURES = ["x1", "x2"]


def make_donut(
    n: int,
    *,
    seed: int = 0,
    signal_fraction: float = 0.5,
    sigma: float = 1.0,
    r_ring: float = 4.0,
    ring_sigma: float | None = None,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the Donut toy.

    Parameters
    ----------
    n : int
        Number of events.
    seed : int
        Seed of the NumPy generator.
    signal_fraction : float
        Fraction of signal events (``round(signal_fraction * n)`` of them).
    sigma : float
        Width of the signal Gaussian (per coordinate).
    r_ring : float
        Mean radius of the background ring.
    ring_sigma : float, optional
        Width of the ring's radius; defaults to ``sigma`` (as in the paper).
    shuffle : bool
        Mix signal and background; otherwise signal comes first.

    Returns
    -------
    X : np.ndarray, shape (n, 2)
        Features ``x1, x2`` (float64).
    y : np.ndarray, shape (n,)
        1 for signal, 0 for background (int64).
    """
    if int(n) < 0:
        raise InputError(f"make_donut: n must be >= 0, got {n}")
    if not 0.0 <= signal_fraction <= 1.0:
        raise InputError(f"make_donut: signal_fraction must lie in [0, 1], got {signal_fraction}")
    if sigma <= 0 or (ring_sigma is not None and ring_sigma <= 0):
        raise InputError("make_donut: widths must be positive")
    n = int(n)
    rng = np.random.default_rng(seed)
    n_sig = int(round(signal_fraction * n))
    n_bkg = n - n_sig
    sig = rng.normal(0.0, sigma, size=(n_sig, 2))
    r = rng.normal(r_ring, sigma if ring_sigma is None else ring_sigma, size=n_bkg)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n_bkg)
    bkg = np.column_stack([r * np.cos(theta), r * np.sin(theta)])
    X = np.concatenate([sig, bkg]).astype(np.float64)
    y = np.concatenate([np.ones(n_sig, np.int64), np.zeros(n_bkg, np.int64)])
    if shuffle:
        perm = rng.permutation(n)
        X, y = X[perm], y[perm]
    return X, y
