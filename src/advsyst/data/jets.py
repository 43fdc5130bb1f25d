"""FastJet clustering of PF candidates and the jet variables written next to the jets.

All functions work on a whole batch of events at once through FastJet's awkward
interface.  Jets are returned pT-descending within each event (as in NanoAOD); the
constituents of each jet are kept in FastJet's order (PFNano does not sort them either).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from advsyst.data.detector_response import PFCandidates
from advsyst.data.pythia import HadronicDecay

__all__ = [
    "ClusteredJets",
    "cluster_jets",
    "energy_fractions",
    "substructure",
    "truth_match",
]

_BANNER_DONE = False


@contextlib.contextmanager
def _quiet_fd1() -> Iterator[None]:
    try:
        saved = os.dup(1)
    except OSError:  # pragma: no cover - no stdout at all
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _fastjet():
    """Import fastjet and print its banner into /dev/null once (it goes to C++ stdout)."""
    global _BANNER_DONE
    import fastjet

    if not _BANNER_DONE:
        with _quiet_fd1():
            fastjet._swig.ClusterSequence.print_banner()
        _BANNER_DONE = True
    return fastjet


@dataclass
class ClusteredJets:
    """Jets of a batch: flat per-jet arrays, ``counts`` jets per event.

    ``constituents`` holds, grouped jet by jet, *batch-global* indices into the flat PF
    candidate arrays; ``n_constituents`` gives the group sizes.
    """

    counts: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    n_constituents: np.ndarray
    constituents: np.ndarray
    radius: float

    @property
    def event_index(self) -> np.ndarray:
        return np.repeat(np.arange(self.counts.size), self.counts)

    @property
    def jet_of_constituent(self) -> np.ndarray:
        return np.repeat(np.arange(self.pt.size), self.n_constituents)


def _four_momenta(pf: PFCandidates) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    px = pf.pt * np.cos(pf.phi)
    py = pf.pt * np.sin(pf.phi)
    pz = pf.pt * np.sinh(pf.eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + pf.mass**2)
    return px, py, pz, e


def _momentum_array(px, py, pz, e, counts) -> ak.Array:
    rec = ak.zip({"px": px, "py": py, "pz": pz, "E": e}, with_name="Momentum4D", behavior=None)
    return ak.unflatten(rec, np.asarray(counts, dtype=np.int64))


def _kinematics(px, py, pz, e):
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    phi = np.arctan2(py, px)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    return pt, eta, phi, mass


def cluster_jets(
    pf: PFCandidates,
    radius: float,
    min_pt: float,
    *,
    algorithm: str = "antikt",
) -> ClusteredJets:
    """Cluster the PF candidates of every event and keep jets above ``min_pt``.

    Parameters
    ----------
    pf : PFCandidates
        Flat candidates of a batch.
    radius : float
        Jet radius R (0.4 for AK4, 0.8 for large-R jets).
    min_pt : float
        Minimum jet pT in GeV.
    algorithm : {"antikt", "cambridge", "kt"}
        Clustering algorithm.
    """
    fastjet = _fastjet()
    algo = {
        "antikt": fastjet.antikt_algorithm,
        "cambridge": fastjet.cambridge_algorithm,
        "kt": fastjet.kt_algorithm,
    }[algorithm]
    px, py, pz, e = _four_momenta(pf)
    arr = _momentum_array(px, py, pz, e, pf.counts)
    cs = fastjet.ClusterSequence(arr, fastjet.JetDefinition(algo, float(radius)))
    jets = cs.inclusive_jets(float(min_pt))
    cidx = cs.constituent_index(float(min_pt))

    counts = ak.to_numpy(ak.num(jets)).astype(np.int64)
    jpt, jeta, jphi, jmass = _kinematics(
        *(ak.to_numpy(ak.flatten(jets[f])).astype(np.float64) for f in ("px", "py", "pz", "E"))
    )
    event = np.repeat(np.arange(counts.size), counts)
    order = np.lexsort((-jpt, event))

    per_jet = ak.flatten(cidx, axis=1)  # (n_jets, var) local indices
    per_jet = per_jet[order] if len(order) else per_jet
    n_const = ak.to_numpy(ak.num(per_jet)).astype(np.int64)
    local = ak.to_numpy(ak.flatten(per_jet)).astype(np.int64) if len(per_jet) else np.zeros(0)
    pf_offsets = np.concatenate([[0], np.cumsum(pf.counts)])[:-1]
    jet_event = event[order]
    glob = local.astype(np.int64) + np.repeat(pf_offsets[jet_event], n_const)
    return ClusteredJets(
        counts=counts,
        pt=jpt[order],
        eta=jeta[order],
        phi=jphi[order],
        mass=jmass[order],
        n_constituents=n_const,
        constituents=glob.astype(np.int64),
        radius=float(radius),
    )


def energy_fractions(pf: PFCandidates, jets: ClusteredJets) -> dict[str, np.ndarray]:
    """NanoAOD-style energy fractions of each jet (``chHEF``, ``neHEF``, ``chEmEF``, ...).

    Forward-calorimeter hadronic (``1``) and EM (``2``) deposits are counted as neutral
    hadronic and neutral EM energy.
    """
    px, py, pz, e = _four_momenta(pf)
    idx = jets.constituents
    ce = e[idx]
    apid = np.abs(pf.pdg_id[idx])
    owner = jets.jet_of_constituent
    total = np.bincount(owner, weights=ce, minlength=jets.pt.size)
    classes = {
        "chHEF": apid == 211,
        "neHEF": (apid == 130) | (apid == 1),
        "chEmEF": apid == 11,
        "neEmEF": (apid == 22) | (apid == 2),
        "muEF": apid == 13,
    }
    out = {}
    for name, mask in classes.items():
        num = np.bincount(owner, weights=np.where(mask, ce, 0.0), minlength=jets.pt.size)
        out[name] = np.divide(num, total, out=np.zeros_like(num), where=total > 0)
    return out


def substructure(
    pf: PFCandidates, jets: ClusteredJets, *, zcut: float = 0.1, beta: float = 0.0
) -> dict[str, np.ndarray]:
    """Soft-drop mass (C/A reclustering, ``zcut``, ``beta``) and N-subjettiness tau1..tau3.

    N-subjettiness uses one-pass kT axes, beta = 1 and R0 = jet radius (the CMS choice).
    """
    n = jets.pt.size
    if n == 0:
        return {k: np.zeros(0) for k in ("msoftdrop", "tau1", "tau2", "tau3")}
    fastjet = _fastjet()
    px, py, pz, e = _four_momenta(pf)
    idx = jets.constituents
    arr = _momentum_array(px[idx], py[idx], pz[idx], e[idx], jets.n_constituents)
    cs = fastjet.ClusterSequence(
        arr, fastjet.JetDefinition(fastjet.cambridge_algorithm, float(jets.radius))
    )
    sd = cs.exclusive_jets_softdrop_grooming(
        njets=1, beta=beta, symmetry_cut=zcut, R0=float(jets.radius)
    )
    msd = np.asarray(ak.to_numpy(sd["msoftdrop"]), dtype=np.float64).reshape(n)
    taus = cs.njettiness(njets=[1, 2, 3], beta=1.0, R0=float(jets.radius))
    taus = np.asarray(ak.to_numpy(taus), dtype=np.float64).reshape(n, 3)
    return {
        "msoftdrop": np.nan_to_num(msd),
        "tau1": taus[:, 0],
        "tau2": taus[:, 1],
        "tau3": taus[:, 2],
    }


def truth_match(jets: ClusteredJets, decays: Sequence[Sequence[HadronicDecay]]) -> np.ndarray:
    """Per jet: 2 if it contains all quarks of a hadronic top decay (dR < R), else 1 if it
    contains both quarks of a hadronic W decay, else 0."""
    out = np.zeros(jets.pt.size, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(jets.counts)])
    for ev, ev_decays in enumerate(decays):
        lo, hi = offsets[ev], offsets[ev + 1]
        if lo == hi or not ev_decays:
            continue
        jeta = jets.eta[lo:hi, None]
        jphi = jets.phi[lo:hi, None]
        for dec in ev_decays:
            dphi = (dec.phi[None, :] - jphi + np.pi) % (2 * np.pi) - np.pi
            dr2 = (dec.eta[None, :] - jeta) ** 2 + dphi**2
            inside = np.all(dr2 < jets.radius**2, axis=1)
            out[lo:hi] = np.where(inside, np.maximum(out[lo:hi], dec.code), out[lo:hi])
    return out
