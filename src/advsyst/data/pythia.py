"""Pythia 8 event generation: process settings, stable particles and hard-process truth.

:class:`PythiaGenerator` wraps one initialised ``pythia8mc.Pythia`` instance for one
process.  :meth:`PythiaGenerator.next_batch` generates events with Pythia's vectorised
``nextBatch`` (awkward output) and returns the stable particles as flat NumPy arrays plus,
per event, the hadronic top and W decays of the hard process (directions of the decay
quarks), which the generator uses to label jets that contain a full decay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

__all__ = [
    "PROCESSES",
    "PROCESS_LABELS",
    "SIMULATION_TUNE",
    "PSEUDO_DATA_TUNE",
    "HadronicDecay",
    "ParticleBatch",
    "PythiaGenerator",
    "pythia_seed",
]

#: Pythia switches of each supported process.
PROCESSES: dict[str, tuple[str, ...]] = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "ww": ("WeakDoubleBoson:ffbar2WW = on",),
    "qcd": ("HardQCD:all = on",),
}
#: Truth label written per jet: 1 = from a tt̄ event (signal), 0 = WW, 2 = QCD dijet.
PROCESS_LABELS: dict[str, int] = {"ttbar": 1, "ww": 0, "qcd": 2}
#: Monash 2013 for simulation; ATLAS A14 (NNPDF2.3 LO) for the pseudo-data stand-in.
SIMULATION_TUNE = 14
PSEUDO_DATA_TUNE = 21

#: Decays with c·tau > 10 mm are left to the detector (as in CMS generator configurations).
_COMMON_SETTINGS = (
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
    "Next:numberCount = 0",
    "Print:quiet = on",
)


def pythia_seed(*entropy: int) -> int:
    """A Pythia seed (1 .. 900 000 000) derived deterministically from integers."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0]
    return int(state % 900_000_000) + 1


@dataclass(frozen=True)
class HadronicDecay:
    """A fully hadronic top (``code=2``: b q q') or W (``code=1``: q q') of the hard process."""

    code: int
    eta: np.ndarray
    phi: np.ndarray


@dataclass
class ParticleBatch:
    """Stable particles of a batch of events (flat arrays, ``counts`` per event)."""

    pdg_id: np.ndarray
    charge: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray
    counts: np.ndarray
    weight: np.ndarray
    label: np.ndarray
    decays: list[list[HadronicDecay]]

    @property
    def n_events(self) -> int:
        return int(self.counts.size)

    def reorder(self, order: np.ndarray) -> ParticleBatch:
        """Events in the given order (a permutation or selection of event indices)."""
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        idx = (
            np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in order])
            if len(order)
            else np.zeros(0, dtype=np.int64)
        ).astype(np.int64)
        return ParticleBatch(
            pdg_id=self.pdg_id[idx],
            charge=self.charge[idx],
            px=self.px[idx],
            py=self.py[idx],
            pz=self.pz[idx],
            energy=self.energy[idx],
            counts=self.counts[order],
            weight=self.weight[order],
            label=self.label[order],
            decays=[self.decays[i] for i in order],
        )

    @staticmethod
    def concatenate(batches: Sequence[ParticleBatch]) -> ParticleBatch:
        """Events of several batches one after the other."""
        return ParticleBatch(
            **{
                f: np.concatenate([getattr(b, f) for b in batches])
                for f in (
                    "pdg_id",
                    "charge",
                    "px",
                    "py",
                    "pz",
                    "energy",
                    "counts",
                    "weight",
                    "label",
                )
            },
            decays=[d for b in batches for d in b.decays],
        )


class PythiaGenerator:
    """One initialised Pythia 8 instance generating one process.

    Parameters
    ----------
    process : str
        ``"ttbar"``, ``"ww"`` or ``"qcd"``.
    sqrt_s : float
        Centre-of-mass energy in GeV (8000 like the CMS 2012 samples, 13000, ...).
    pthat_min : float
        Minimum transverse momentum of the hard 2 -> 2 process (``PhaseSpace:pTHatMin``).
    seed : int
        Pythia random seed (1 .. 900 000 000).
    tune : int
        ``Tune:pp`` value.
    extra_settings : sequence of str
        Further ``readString`` lines, applied last.
    """

    def __init__(
        self,
        process: str,
        *,
        sqrt_s: float,
        pthat_min: float,
        seed: int,
        tune: int = SIMULATION_TUNE,
        extra_settings: Sequence[str] = (),
    ) -> None:
        import pythia8mc

        if process not in PROCESSES:
            raise ValueError(f"unknown process {process!r}; choose from {sorted(PROCESSES)}")
        self.process = process
        self.label = PROCESS_LABELS[process]
        settings = [
            f"Beams:eCM = {float(sqrt_s)}",
            f"Tune:pp = {int(tune)}",
            *PROCESSES[process],
            f"PhaseSpace:pTHatMin = {float(pthat_min)}",
            "Random:setSeed = on",
            f"Random:seed = {int(seed)}",
            *_COMMON_SETTINGS,
            *extra_settings,
        ]
        self._pythia = pythia8mc.Pythia("", False)
        for line in settings:
            if not self._pythia.readString(line):
                raise ValueError(f"Pythia rejected the setting {line!r}")
        ok = self._pythia.init()
        if not ok:
            raise RuntimeError(f"Pythia initialisation failed for process {process!r}")
        self.settings = tuple(settings)
        self._charge_cache: dict[int, float] = {}

    def reseed(self, seed: int) -> None:
        """Restart the random-number stream (used at the start of each block)."""
        self._pythia.rndm.init(int(seed))

    def sigma_gen_pb(self) -> float:
        """Estimated cross section of the generated process so far, in pb."""
        return float(self._pythia.infoPython().sigmaGen()) * 1e9

    def _charges(self, ids: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(ids, return_inverse=True)
        pdata = self._pythia.particleData
        vals = np.empty(uniq.size)
        for i, pid in enumerate(uniq.tolist()):
            if pid not in self._charge_cache:
                self._charge_cache[pid] = float(pdata.charge(int(pid)))
            vals[i] = self._charge_cache[pid]
        return vals[inv]

    def next_batch(self, n: int) -> ParticleBatch:
        """Generate ``n`` events (failed events are regenerated)."""
        pieces = []
        have = 0
        while have < n:
            batch = self._pythia.nextBatch(n - have)
            if len(batch) == 0:  # pragma: no cover - Pythia gave up entirely
                raise RuntimeError("Pythia failed to generate events")
            pieces.append(batch)
            have += len(batch)
        events = pieces[0] if len(pieces) == 1 else ak.concatenate(pieces)
        return self._to_batch(events)

    def _to_batch(self, events: ak.Array) -> ParticleBatch:
        prt = events["prt"]
        stable = prt[prt["status"] > 0]
        ids = ak.to_numpy(ak.flatten(stable["id"])).astype(np.int64)
        mom = stable["p"]
        weights = events["info"]["weights"]
        weight = np.asarray(ak.fill_none(ak.firsts(weights), 1.0), dtype=np.float64)
        return ParticleBatch(
            pdg_id=ids,
            charge=self._charges(ids) if ids.size else np.zeros(0),
            px=ak.to_numpy(ak.flatten(mom["px"])).astype(np.float64),
            py=ak.to_numpy(ak.flatten(mom["py"])).astype(np.float64),
            pz=ak.to_numpy(ak.flatten(mom["pz"])).astype(np.float64),
            energy=ak.to_numpy(ak.flatten(mom["e"])).astype(np.float64),
            counts=ak.to_numpy(ak.num(stable)).astype(np.int64),
            weight=weight,
            label=np.full(len(events), self.label, dtype=np.int32),
            decays=hadronic_decays(prt),
        )


def _daughters(d1: int, d2: int) -> list[int]:
    if d1 <= 0:
        return []
    if d2 == 0 or d2 == d1:
        return [d1]
    if d2 > d1:
        return list(range(d1, d2 + 1))
    return [d1, d2]


def _last_copy(i: int, ids: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> int:
    """Follow a particle through its recoil/radiation copies to the copy that decays."""
    for _ in range(200):
        same = [d for d in _daughters(int(d1[i]), int(d2[i])) if ids[d] == ids[i]]
        if not same:
            return i
        i = same[0]
    return i  # pragma: no cover - malformed record


def hadronic_decays(prt: ak.Array) -> list[list[HadronicDecay]]:
    """Per event, the fully hadronic top and W decays of the hard process.

    A top counts when its W decays to quarks; its decay quarks are the b and the two W
    daughters.  Every hadronic W (also those from top decays) is listed on its own.
    """
    counts = ak.to_numpy(ak.num(prt))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    ids_all = ak.to_numpy(ak.flatten(prt["id"])).astype(np.int64)
    d1_all = ak.to_numpy(ak.flatten(prt["daughter1"])).astype(np.int64)
    d2_all = ak.to_numpy(ak.flatten(prt["daughter2"])).astype(np.int64)
    p = prt["p"]
    px_all = ak.to_numpy(ak.flatten(p["px"]))
    py_all = ak.to_numpy(ak.flatten(p["py"]))
    pz_all = ak.to_numpy(ak.flatten(p["pz"]))
    out: list[list[HadronicDecay]] = []
    for e in range(counts.size):
        lo, hi = offsets[e], offsets[e + 1]
        ids, d1, d2 = ids_all[lo:hi], d1_all[lo:hi], d2_all[lo:hi]
        px, py, pz = px_all[lo:hi], py_all[lo:hi], pz_all[lo:hi]

        def direction(idx: list[int], px=px, py=py, pz=pz) -> tuple[np.ndarray, np.ndarray]:
            sel = np.asarray(idx)
            pt = np.hypot(px[sel], py[sel])
            return np.arcsinh(pz[sel] / np.maximum(pt, 1e-12)), np.arctan2(py[sel], px[sel])

        decays: list[HadronicDecay] = []
        for i in np.nonzero((np.abs(ids) == 6) | (np.abs(ids) == 24))[0]:
            dau = _daughters(int(d1[i]), int(d2[i]))
            if not dau or any(ids[d] == ids[i] for d in dau):
                continue  # not the last copy
            if abs(ids[i]) == 24:
                if len(dau) == 2 and all(abs(ids[d]) <= 5 for d in dau):
                    decays.append(HadronicDecay(1, *direction(dau)))
                continue
            bs = [d for d in dau if abs(ids[d]) == 5]
            ws = [d for d in dau if abs(ids[d]) == 24]
            if not bs or not ws:
                continue
            w = _last_copy(ws[0], ids, d1, d2)
            wq = _daughters(int(d1[w]), int(d2[w]))
            if len(wq) == 2 and all(abs(ids[d]) <= 5 for d in wq):
                decays.append(HadronicDecay(2, *direction([bs[0], *wq])))
        out.append(decays)
    return out
