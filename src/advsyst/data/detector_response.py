"""A simple, documented detector response that turns generator particles into PF candidates.

The model is deliberately small but keeps the features that matter for jet-constituent
inputs: acceptance, thresholds, efficiencies, resolution and granularity.  It is applied
to flat arrays of stable particles (all events of a batch at once).

Rules, in order:

1. Neutrinos are invisible and removed.
2. **Tracks.** Charged particles with ``|eta| < tracker_eta_max`` (2.5) and
   ``pT > track_pt_min`` are reconstructed with efficiency ``track_efficiency`` (hadrons)
   or ``lepton_efficiency`` (electrons, muons).  Their pT is smeared with a Gaussian of
   relative width ``sqrt(a**2 + (b * pT)**2)`` (``track_res_const``, ``track_res_slope``).
   PF type: ``+-11`` electrons, ``+-13`` muons, ``+-211`` everything else; the PF mass is
   the electron, muon or charged-pion mass (as CMS PF does for charged hadrons).
3. **Muons** that are not tracked are lost (no calorimeter deposit).
4. **Calorimeter deposits.** Photons, electrons without a track (EM) and neutral hadrons
   plus charged hadrons without a track (hadronic) within ``|eta| < calo_eta_max`` (5.0)
   become neutral candidates: ``22`` / ``130`` in the barrel+endcap (``|eta| < 3``) and
   ``2`` / ``1`` in the forward calorimeter.  The energy is smeared with
   ``sigma/E = stochastic / sqrt(E) (+) constant`` and multiplied by an energy scale; eta
   and phi are smeared by the cell size (granularity) of the calorimeter; thresholds on
   the reconstructed pT remove soft deposits.  Neutral candidates are massless.

:meth:`DetectorResponse.pseudo_data` returns a *different* response (lower tracking
efficiency, shifted calorimeter scales, worse resolution) used for the pseudo-data
stand-in for collision data, so that data and simulation differ the way they do in
real analyses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DetectorResponse", "PFCandidates", "PF_MASS"]

#: PF masses assigned to candidates (GeV).
PF_MASS = {11: 0.000511, 13: 0.105658, 211: 0.139570}

_NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True)
class PFCandidates:
    """Flat PF candidates of a batch of events (``counts`` per event)."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    charge: np.ndarray
    pdg_id: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return int(self.pt.size)


@dataclass(frozen=True)
class DetectorResponse:
    """Parameters of the detector model (energies and momenta in GeV).

    The defaults describe the *simulation* response; see :meth:`pseudo_data`.
    """

    tracker_eta_max: float = 2.5
    track_pt_min: float = 0.5
    track_efficiency: float = 0.95
    lepton_efficiency: float = 0.99
    track_res_const: float = 0.005
    track_res_slope: float = 1.5e-4
    calo_eta_max: float = 5.0
    hf_eta_min: float = 3.0
    ecal_stochastic: float = 0.03
    ecal_constant: float = 0.005
    hcal_stochastic: float = 1.0
    hcal_constant: float = 0.05
    hf_stochastic: float = 1.5
    hf_constant: float = 0.10
    ecal_scale: float = 1.0
    hcal_scale: float = 1.0
    ecal_granularity: float = 0.0174
    hcal_granularity: float = 0.087
    photon_pt_min: float = 0.5
    neutral_hadron_pt_min: float = 1.0

    @classmethod
    def pseudo_data(cls) -> DetectorResponse:
        """The response used for pseudo-data: a slightly different detector than simulated."""
        return cls(
            track_efficiency=0.92,
            track_res_const=0.006,
            track_res_slope=2.0e-4,
            ecal_stochastic=0.035,
            ecal_scale=1.01,
            hcal_stochastic=1.15,
            hcal_constant=0.07,
            hcal_scale=1.04,
            neutral_hadron_pt_min=1.2,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply(
        self,
        pdg_id: np.ndarray,
        charge: np.ndarray,
        px: np.ndarray,
        py: np.ndarray,
        pz: np.ndarray,
        energy: np.ndarray,
        counts: np.ndarray,
        rng: np.random.Generator,
    ) -> PFCandidates:
        """Turn flat stable particles of a batch into PF candidates.

        Parameters
        ----------
        pdg_id, charge, px, py, pz, energy : np.ndarray
            Flat arrays over all stable particles of the batch (charge in units of e).
        counts : np.ndarray
            Number of particles per event; ``counts.sum() == pdg_id.size``.
        rng : np.random.Generator
            Source of all random numbers (efficiencies and smearing).

        Returns
        -------
        PFCandidates
            Flat candidates, grouped by event in the input order (``counts`` updated).
        """
        pdg_id = np.asarray(pdg_id, dtype=np.int64)
        n = pdg_id.size
        counts = np.asarray(counts, dtype=np.int64)
        if counts.sum() != n:
            raise ValueError("counts do not add up to the number of particles")
        event = np.repeat(np.arange(counts.size), counts)
        apid = np.abs(pdg_id)
        pt = np.hypot(px, py)
        p = np.sqrt(pt**2 + pz**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.sign(pz) * 1e3)
        phi = np.arctan2(py, px)
        abseta = np.abs(eta)
        charged = np.asarray(charge) != 0
        visible = ~np.isin(apid, _NEUTRINOS)

        # uniform draws for every particle, always consumed in the same order
        u_eff = rng.random(n)
        z_pt = rng.standard_normal(n)
        z_e = rng.standard_normal(n)
        z_eta = rng.standard_normal(n)
        z_phi = rng.standard_normal(n)

        is_lepton = (apid == 11) | (apid == 13)
        eff = np.where(is_lepton, self.lepton_efficiency, self.track_efficiency)
        tracked = (
            visible
            & charged
            & (abseta < self.tracker_eta_max)
            & (pt > self.track_pt_min)
            & (u_eff < eff)
        )
        # --- tracks
        rel = np.sqrt(self.track_res_const**2 + (self.track_res_slope * pt) ** 2)
        trk_pt = pt * np.maximum(1.0 + rel * z_pt, 0.05)
        trk_type = np.where(apid == 11, 11, np.where(apid == 13, 13, 211))
        trk_mass = np.select(
            [trk_type == 11, trk_type == 13], [PF_MASS[11], PF_MASS[13]], PF_MASS[211]
        )
        trk_pdg = trk_type * np.sign(np.asarray(charge)).astype(np.int64)
        # PDG convention: negatively charged leptons carry positive ids (e- = 11, mu- = 13)
        trk_pdg = np.where(trk_type == 211, trk_pdg, -trk_pdg)

        # --- calorimeter deposits
        em = (apid == 22) | (apid == 11)
        calo = visible & ~tracked & (apid != 13) & (abseta < self.calo_eta_max)
        forward = abseta >= self.hf_eta_min
        stoch = np.where(
            forward, self.hf_stochastic, np.where(em, self.ecal_stochastic, self.hcal_stochastic)
        )
        const = np.where(
            forward, self.hf_constant, np.where(em, self.ecal_constant, self.hcal_constant)
        )
        scale = np.where(em, self.ecal_scale, self.hcal_scale)
        e_safe = np.maximum(energy, 1e-9)
        sigma = np.sqrt(stoch**2 / e_safe + const**2)
        e_reco = energy * scale * (1.0 + sigma * z_e)
        cal_pt = np.where(p > 0, e_reco * pt / np.maximum(p, 1e-12), 0.0)
        gran = np.where(em & ~forward, self.ecal_granularity, self.hcal_granularity)
        cal_eta = eta + gran / np.sqrt(12.0) * z_eta
        cal_phi = phi + gran / np.sqrt(12.0) * z_phi
        cal_pdg = np.where(forward, np.where(em, 2, 1), np.where(em, 22, 130))
        threshold = np.where(em, self.photon_pt_min, self.neutral_hadron_pt_min)
        calo = calo & (e_reco > 0) & (cal_pt > threshold)

        keep = tracked | calo
        out_pt = np.where(tracked, trk_pt, cal_pt)[keep]
        out_eta = np.where(tracked, eta, cal_eta)[keep]
        out_phi = np.where(tracked, phi, cal_phi)[keep]
        out_phi = (out_phi + np.pi) % (2 * np.pi) - np.pi
        out_mass = np.where(tracked, trk_mass, 0.0)[keep]
        out_charge = np.where(tracked, np.sign(np.asarray(charge)), 0)[keep].astype(np.int32)
        out_pdg = np.where(tracked, trk_pdg, cal_pdg)[keep].astype(np.int32)
        out_counts = np.bincount(event[keep], minlength=counts.size).astype(np.int64)
        return PFCandidates(
            pt=out_pt.astype(np.float64),
            eta=out_eta.astype(np.float64),
            phi=out_phi.astype(np.float64),
            mass=out_mass.astype(np.float64),
            charge=out_charge,
            pdg_id=out_pdg,
            counts=out_counts,
        )
