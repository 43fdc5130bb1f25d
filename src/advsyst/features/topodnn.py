"""Jet-constituent features: the first 30 constituents and TopoDNN-style preprocessing.

Pure awkward/NumPy (no coffea), so the same code serves the coffea processors, tests and
users with their own arrays.

Raw features (``raw_constituent_features``): for each jet the constituents sorted by pT
(descending, ties keep input order), the first ``n`` kept, as ``pT_1, eta_1, phi_1, pT_2,
...`` zero-padded to ``3 n`` columns.

TopoDNN-style features (``topodnn_features``; Pearkes et al., as used in the CONSERVAttack
paper, Appendix C.2):

1. *pT scaling*: ``pT_i / pT_jet`` (``pt_scale="jet"``) or ``pT_i / pt_scale`` (GeV).
2. *Translation*: eta and phi are taken relative to the jet axis (phi wrapped into
   [-pi, pi)) and then shifted so that the leading constituent sits at the origin.
3. *Rotation* in the (eta, phi) plane about the origin so that the second constituent
   lies on the negative phi axis (eta_2 = 0, phi_2 < 0).
4. *Flip* eta -> -eta when the third constituent has eta < 0.

After these steps eta_1 = phi_1 = 0 and eta_2 = 0 for every jet; dropping them leaves
``3 n - 3`` inputs (87 for n = 30), ordered ``pT_1, pT_2, phi_2, pT_3, eta_3, phi_3, ...``.
Padded (missing) constituents stay exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

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
]

N_CONSTITUENTS = 30
#: Entries fixed by the preprocessing (1-based constituent numbers).
DROPPED_FEATURES = ("eta_1", "phi_1", "eta_2")


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Wrap angles into [-pi, pi)."""
    return (np.asarray(phi) + np.pi) % (2.0 * np.pi) - np.pi


def sort_constituents(
    pt: ak.Array, eta: ak.Array, phi: ak.Array, *, n: int | None = N_CONSTITUENTS
) -> tuple[ak.Array, ak.Array, ak.Array]:
    """Sort each jet's constituents by pT (descending, stable) and keep the first ``n``.

    Parameters
    ----------
    pt, eta, phi : ak.Array
        Jagged ``(n_jets, var)`` arrays (or any array-like of lists).
    n : int, optional
        Constituents to keep; ``None`` keeps all.
    """
    pt, eta, phi = ak.Array(pt), ak.Array(eta), ak.Array(phi)
    order = ak.argsort(pt, axis=-1, ascending=False, stable=True)
    if n is not None:
        order = order[..., :n]
    return pt[order], eta[order], phi[order]


def pad_constituents(
    pt: ak.Array, eta: ak.Array, phi: ak.Array, *, n: int = N_CONSTITUENTS
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, truncated and zero-padded constituents.

    Returns
    -------
    padded : np.ndarray, shape (n_jets, n, 3), float64
        ``[..., 0] = pT``, ``[..., 1] = eta``, ``[..., 2] = phi``; zeros beyond the last
        constituent.
    counts : np.ndarray, shape (n_jets,), int64
        Number of real constituents (at most ``n``).
    """
    spt, seta, sphi = sort_constituents(pt, eta, phi, n=n)
    counts = ak.to_numpy(ak.num(spt, axis=-1)).astype(np.int64)
    out = np.zeros((counts.size, n, 3), dtype=np.float64)
    for k, arr in enumerate((spt, seta, sphi)):
        filled = ak.fill_none(ak.pad_none(ak.values_astype(arr, np.float64), n, axis=-1), 0.0)
        out[:, :, k] = ak.to_numpy(filled).reshape(counts.size, n) if counts.size else 0.0
    return out, counts


def raw_feature_names(n: int = N_CONSTITUENTS) -> list[str]:
    """``pt_1, eta_1, phi_1, pt_2, ...`` (1-based, pT-descending constituents)."""
    return [f"{v}_{i}" for i in range(1, n + 1) for v in ("pt", "eta", "phi")]


def raw_constituent_features(
    pt: ak.Array, eta: ak.Array, phi: ak.Array, *, n: int = N_CONSTITUENTS
) -> np.ndarray:
    """``(n_jets, 3 n)`` raw features ``pT_1, eta_1, phi_1, pT_2, ...`` (zero-padded)."""
    padded, _ = pad_constituents(pt, eta, phi, n=n)
    return padded.reshape(padded.shape[0], 3 * n)


def topodnn_transform(
    padded: np.ndarray,
    counts: np.ndarray,
    jet_pt: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    *,
    pt_scale: str | float = "jet",
) -> np.ndarray:
    """Apply the TopoDNN preprocessing to padded constituents.

    Parameters
    ----------
    padded : np.ndarray, shape (n_jets, n, 3)
        Output of :func:`pad_constituents` (pT-sorted).
    counts : np.ndarray, shape (n_jets,)
        Real constituents per jet.
    jet_pt, jet_eta, jet_phi : np.ndarray, shape (n_jets,)
        Jet axis and pT.
    pt_scale : "jet" or float
        Divide constituent pT by the jet pT, or by this fixed value in GeV.

    Returns
    -------
    np.ndarray, shape (n_jets, n, 3)
        Preprocessed (pT, eta, phi) including the fixed entries (all zero).
    """
    padded = np.asarray(padded, dtype=np.float64)
    n_jets, n, _ = padded.shape
    counts = np.asarray(counts, dtype=np.int64)
    valid = np.arange(n)[None, :] < counts[:, None]
    if isinstance(pt_scale, str):
        if pt_scale != "jet":
            raise ValueError(f"pt_scale must be 'jet' or a number, got {pt_scale!r}")
        scale = np.asarray(jet_pt, dtype=np.float64)
    else:
        if not pt_scale > 0:
            raise ValueError(f"pt_scale must be positive, got {pt_scale}")
        scale = np.full(n_jets, float(pt_scale))
    scale = np.where(scale > 0, scale, 1.0)

    pt = padded[:, :, 0] / scale[:, None]
    deta = padded[:, :, 1] - np.asarray(jet_eta, dtype=np.float64)[:, None]
    dphi = wrap_phi(padded[:, :, 2] - np.asarray(jet_phi, dtype=np.float64)[:, None])
    if n == 0:
        return np.zeros((n_jets, 0, 3))
    # translation: leading constituent at the origin
    x = deta - deta[:, :1]
    y = wrap_phi(dphi - dphi[:, :1])
    # rotation: second constituent onto the negative phi axis
    if n >= 2:
        r2 = np.hypot(x[:, 1], y[:, 1])
        rotate = (counts >= 2) & (r2 > 0)
        alpha = np.where(rotate, -0.5 * np.pi - np.arctan2(y[:, 1], x[:, 1]), 0.0)
        c, s = np.cos(alpha)[:, None], np.sin(alpha)[:, None]
        x, y = x * c - y * s, x * s + y * c
        y[:, 1] = np.where(rotate, -r2, y[:, 1])
        x[:, 1] = np.where(rotate, 0.0, x[:, 1])
    # flip: third constituent at positive eta
    if n >= 3:
        flip = (counts >= 3) & (x[:, 2] < 0)
        x = np.where(flip[:, None], -x, x)
    x[:, 0] = 0.0
    if n >= 2:
        x[:, 1] = np.where(x[:, 1] == 0.0, 0.0, x[:, 1])  # no negative zeros
    y[:, 0] = 0.0
    out = np.stack([pt, x, y], axis=-1)
    out[~valid] = 0.0
    return out


def _keep_columns(n: int) -> np.ndarray:
    names = raw_feature_names(n)
    return np.array([i for i, name in enumerate(names) if name not in DROPPED_FEATURES])


def topodnn_feature_names(n: int = N_CONSTITUENTS) -> list[str]:
    """Names of the ``3 n - 3`` TopoDNN inputs: ``pt_1, pt_2, phi_2, pt_3, eta_3, ...``."""
    names = raw_feature_names(n)
    return [names[i] for i in _keep_columns(n)]


def topodnn_features(
    pt: ak.Array,
    eta: ak.Array,
    phi: ak.Array,
    jet_pt: Sequence[float] | np.ndarray,
    jet_eta: Sequence[float] | np.ndarray,
    jet_phi: Sequence[float] | np.ndarray,
    *,
    n: int = N_CONSTITUENTS,
    pt_scale: str | float = "jet",
    drop_fixed: bool = True,
) -> np.ndarray:
    """TopoDNN-style inputs of each jet.

    Parameters
    ----------
    pt, eta, phi : ak.Array
        Jagged constituents ``(n_jets, var)`` in any order.
    jet_pt, jet_eta, jet_phi : array-like, shape (n_jets,)
        Jet kinematics.
    n : int
        Constituents used (30).
    pt_scale : "jet" or float
        See :func:`topodnn_transform`.
    drop_fixed : bool
        Drop eta_1, phi_1 and eta_2 (always 0): ``3 n - 3`` columns, else ``3 n``.

    Returns
    -------
    np.ndarray, shape (n_jets, 3 n - 3) or (n_jets, 3 n), float64
    """
    padded, counts = pad_constituents(pt, eta, phi, n=n)
    out = topodnn_transform(
        padded,
        counts,
        np.asarray(jet_pt, dtype=np.float64),
        np.asarray(jet_eta, dtype=np.float64),
        np.asarray(jet_phi, dtype=np.float64),
        pt_scale=pt_scale,
    ).reshape(padded.shape[0], 3 * n)
    return out[:, _keep_columns(n)] if drop_fixed else out
