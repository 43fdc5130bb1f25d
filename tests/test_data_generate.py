"""Generated PFNano samples: layout, coffea round trip, pseudo-data, determinism, atomicity."""

from __future__ import annotations

import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from advsyst.data import generate_sample, read_provenance
from advsyst.data.detector_response import DetectorResponse
from advsyst.data.generate import GenerationConfig
from advsyst.data.jets import ClusteredJets, truth_match
from advsyst.data.pythia import HadronicDecay
from advsyst.errors import ConfigError


def _arrays(path: Path) -> ak.Array:
    with uproot.open(path) as f:
        return f["Events"].arrays()


@pytest.mark.parametrize("coll", ["Jet", "FatJet"])
def test_association_is_contiguous_and_consistent(ttbar_file, coll):
    a = _arrays(ttbar_file)
    assert ak.all(a[f"n{coll}PFCands"] == ak.sum(a[f"{coll}_nConstituents"], axis=1))
    jet_idx = a[f"{coll}PFCands_jetIdx"]
    # rows are grouped jet by jet, in jet order, with nConstituents rows each
    expected = ak.unflatten(
        np.repeat(
            ak.to_numpy(ak.flatten(ak.local_index(a[f"{coll}_pt"]))),
            ak.to_numpy(ak.flatten(a[f"{coll}_nConstituents"])).astype(np.int64),
        ),
        ak.to_numpy(a[f"n{coll}PFCands"]),
    )
    assert ak.all(ak.flatten(jet_idx == expected))
    idx = a[f"{coll}PFCands_pFCandsIdx"]
    assert ak.all(ak.flatten((idx >= 0) & (idx < a.nPFCands)))
    # jets are pT ordered and above their thresholds
    pt = a[f"{coll}_pt"]
    assert ak.all(ak.flatten(pt[:, 1:] <= pt[:, :-1]))
    assert ak.all(ak.flatten(pt > (170.0 if coll == "FatJet" else 15.0)))


def test_every_stored_candidate_belongs_to_a_jet(ttbar_file):
    a = _arrays(ttbar_file)
    for e in range(20):
        used = set(a.JetPFCands_pFCandsIdx[e].tolist()) | set(
            a.FatJetPFCands_pFCandsIdx[e].tolist()
        )
        assert used == set(range(int(a.nPFCands[e])))
        pt = ak.to_numpy(a.PFCands_pt[e])
        assert np.all(np.diff(pt) <= 0)


def test_branch_types_and_event_ids(ttbar_file):
    with uproot.open(ttbar_file) as f:
        t = f["Events"]
        assert t.num_entries == 200
        types = {k: t[k].typename for k in t.keys()}
    assert types["run"] == "uint32_t" and types["event"] == "uint64_t"
    assert types["genWeight"] == "float"
    assert types["Jet_pt"] == "float[]" and types["JetPFCands_pFCandsIdx"] == "int32_t[]"
    assert types["Jet_nConstituents"] == "uint8_t[]"
    a = _arrays(ttbar_file)
    assert np.array_equal(ak.to_numpy(a.event), np.arange(1, 201, dtype=np.uint64))
    assert np.all(ak.to_numpy(a.run) == 1)


def test_coffea_pfnano_schema_reads_constituents_without_warnings(ttbar_file):
    from coffea.nanoevents import NanoEventsFactory, PFNanoAODSchema

    with uproot.open(ttbar_file) as f:
        ours = set(f["Events"].keys())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = NanoEventsFactory.from_root(
            {str(ttbar_file): "Events"}, schemaclass=PFNanoAODSchema, mode="virtual"
        ).events()
        for coll in ("Jet", "FatJet"):
            jets = events[coll]
            pf = jets.constituents.pf
            assert ak.all(ak.num(pf, axis=2) == jets.nConstituents)
            # the jet four-momentum is the sum of its constituents (E-scheme)
            summed = pf.sum(axis=2)
            np.testing.assert_allclose(
                ak.to_numpy(ak.flatten(summed.pt)), ak.to_numpy(ak.flatten(jets.pt)), rtol=2e-4
            )
            m_sum = ak.to_numpy(ak.flatten(summed.mass))
            m_jet = ak.to_numpy(ak.flatten(jets.mass))
            heavy = m_jet > 10.0  # float32 sums cannot resolve tiny masses
            np.testing.assert_allclose(m_sum[heavy], m_jet[heavy], rtol=1e-2)
    for w in caught:
        msg = str(w.message)
        assert "Missing cross-reference target" not in msg, msg
        if "Missing cross-reference index for" in msg:
            indexer = msg.split("for ")[1].split(" =>")[0]
            assert indexer not in ours, msg
        else:
            raise AssertionError(f"unexpected warning: {msg}")


def test_truth_branches_and_physics(ttbar_file, ww_file):
    t = _arrays(ttbar_file)
    w = _arrays(ww_file)
    assert set(np.unique(ak.flatten(t.FatJet_truthLabel))) == {1}
    assert set(np.unique(ak.flatten(w.FatJet_truthLabel))) == {0}
    # boosted tops: some large-R jets contain a whole top, none in WW events
    assert ak.sum(t.FatJet_truthMatch == 2) > 20
    assert ak.sum(w.FatJet_truthMatch == 2) == 0
    assert ak.sum(w.FatJet_truthMatch == 1) > 50
    m_top = ak.flatten(t.FatJet_msoftdrop[t.FatJet_truthMatch == 2])
    m_w = ak.flatten(w.FatJet_msoftdrop[w.FatJet_truthMatch == 1])
    assert 140 < np.median(ak.to_numpy(m_top)) < 200
    assert 65 < np.median(ak.to_numpy(m_w)) < 95
    # detector acceptance: no tracks beyond |eta| = 2.5
    charged = t.PFCands_charge != 0
    assert ak.all(ak.flatten(abs(t.PFCands_eta[charged]) < 2.5))
    assert set(np.unique(np.abs(ak.flatten(t.PFCands_pdgId)))) <= {1, 2, 11, 13, 22, 130, 211}


def test_pseudo_data_has_no_truth_and_no_genweight(data_file):
    with uproot.open(data_file) as f:
        keys = set(f["Events"].keys())
    assert "genWeight" not in keys
    assert not any("truth" in k for k in keys)
    a = _arrays(data_file)
    assert np.all(ak.to_numpy(a.run) >= 200000)
    prov = read_provenance(data_file)
    assert prov["config"]["pseudo_data"] is True
    assert prov["config"]["tune"] == 21
    assert set(prov["sigma_gen_pb"]) == {"ttbar", "ww"}


def test_provenance_record(ttbar_file):
    prov = read_provenance(ttbar_file)
    assert prov["seed"] == 1 and prov["config"]["process"] == "ttbar"
    assert prov["config"]["sqrt_s"] == 13000.0 and prov["n_events"] == 200
    assert prov["seconds_per_event"] > 0 and "uproot" in prov["versions"]


def test_same_seed_same_file_and_worker_count_independent(tmp_path):
    a = generate_sample("ww", 40, tmp_path / "a.root", seed=9, progress=False, block_size=10)
    b = generate_sample(
        "ww", 40, tmp_path / "b.root", seed=9, progress=False, block_size=10, workers=2
    )
    c = generate_sample("ww", 40, tmp_path / "c.root", seed=10, progress=False, block_size=10)
    x, y, z = _arrays(a), _arrays(b), _arrays(c)
    for f in x.fields:
        assert ak.all(ak.ravel(x[f] == y[f])), f
    assert x.PFCands_pt[0].tolist() != z.PFCands_pt[0].tolist()


def test_8tev_qcd_and_custom_radius(tmp_path):
    p = generate_sample(
        "qcd", 20, tmp_path / "q.root", sqrt_s=8000.0, progress=False, fatjet_r=1.0, seed=4
    )
    prov = read_provenance(p)
    assert prov["config"]["sqrt_s"] == 8000.0 and prov["config"]["fatjet_r"] == 1.0
    a = _arrays(p)
    assert set(np.unique(ak.flatten(a.Jet_truthLabel))) <= {2}


def test_failed_generation_leaves_no_file(tmp_path, monkeypatch):
    import advsyst.data.generate as gen

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gen, "make_block", boom)
    out = tmp_path / "x.root"
    with pytest.raises(RuntimeError, match="boom"):
        generate_sample("ww", 10, out, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"process": "zz"},
        {"n_events": 0},
        {"workers": 0},
        {"process": "mix", "mix": (("ttbar", -1.0),)},
        {"process": "mix", "mix": (("nope", 1.0),)},
        {"sqrt_s": 100.0},
    ],
)
def test_config_validation(kwargs):
    base = {"process": "ttbar", "n_events": 10}
    base.update(kwargs)
    with pytest.raises(ConfigError):
        GenerationConfig(**base)


def test_detector_response_rules():
    rng = np.random.default_rng(0)
    # neutrino, central pi+, forward pi+ (no track), photon, soft photon, central muon, K_L
    pid = np.array([12, 211, 211, 22, 22, 13, 130])
    charge = np.array([0, 1, 1, 0, 0, -1, 0])
    pt = np.array([50.0, 20.0, 20.0, 10.0, 0.1, 30.0, 15.0])
    eta = np.array([0.0, 0.5, 3.5, -1.0, 0.0, 1.0, 2.8])
    phi = np.zeros(7)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2)
    det = DetectorResponse(track_efficiency=1.0, lepton_efficiency=1.0)
    out = det.apply(pid, charge, px, py, pz, e, np.array([7]), rng)
    assert out.counts.tolist() == [5]
    assert sorted(out.pdg_id.tolist()) == sorted([211, 1, 22, 13, 130])
    assert out.pdg_id[out.charge != 0].tolist() == [211, 13]
    assert np.all(np.abs(out.eta[out.charge != 0]) < 2.5)
    np.testing.assert_allclose(out.pt[out.pdg_id == 211], 20.0, rtol=0.05)
    # same seed, same output; pseudo-data response differs
    again = det.apply(pid, charge, px, py, pz, e, np.array([7]), np.random.default_rng(0))
    np.testing.assert_array_equal(out.pt, again.pt)
    assert DetectorResponse.pseudo_data() != DetectorResponse()


def test_truth_match_codes():
    jets = ClusteredJets(
        counts=np.array([2]),
        pt=np.array([500.0, 400.0]),
        eta=np.array([0.0, 1.0]),
        phi=np.array([0.0, 3.0]),
        mass=np.array([170.0, 80.0]),
        n_constituents=np.array([0, 0]),
        constituents=np.zeros(0, dtype=np.int64),
        radius=0.8,
    )
    decays = [
        [
            HadronicDecay(2, np.array([0.1, -0.2, 0.3]), np.array([0.2, -0.3, 0.1])),
            HadronicDecay(1, np.array([1.2, 0.9]), np.array([3.1, -3.1])),  # across phi = pi
        ]
    ]
    assert truth_match(jets, decays).tolist() == [2, 1]
