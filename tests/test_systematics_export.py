"""ROOT histogram export and the pyhf workspace."""

from __future__ import annotations

import json

import hist
import numpy as np
import pyhf
import pytest
import uproot

import advsyst.systematics as S
from advsyst.errors import ConfigError, InputError


def _filled_hist(seed=0, n=400):
    rng = np.random.default_rng(seed)
    h = S.make_hist(variable_label="tagger")
    for proc, shift in (("sig", 0.25), ("bkg", -0.25)):
        nom = np.clip(rng.normal(0.5 + shift, 0.2, n), 0, 1)
        up = np.clip(nom + rng.normal(0.05, 0.05, n), 0, 1)
        dn = np.clip(nom - rng.normal(0.05, 0.05, n), 0, 1)
        w = rng.uniform(0.5, 1.5, n)
        other = rng.normal(shift, 1.0, n)  # regions from another feature, as in analyses
        masks = {"control": other < 0, "signal": other >= 0}
        S.fill_variations(
            h,
            process=proc,
            region_masks=masks,
            nominal_score=nom,
            varied_scores={"adv": (up, None), "shape": (up, dn)},
            weights=w,
        )
    return h


def test_root_roundtrip(tmp_path):
    h = _filled_hist()
    names = S.write_root_histograms(tmp_path / "t.root", h)
    assert len(names) == 2 * 2 * 5
    assert "signal_sig_nominal" in names and "control_bkg_advDown" in names
    with uproot.open(tmp_path / "t.root") as f:
        keys = {k.split(";")[0] for k in f.keys()}
        assert keys == set(names)
        for name in names:
            region, process, syst = name.split("_")
            sub = h[{"process": process, "region": region, "systematic": syst}]
            got = f[name]
            np.testing.assert_array_equal(got.values(), sub.values())
            np.testing.assert_array_equal(got.variances(), sub.variances())
            np.testing.assert_array_equal(got.values(flow=True), sub.values(flow=True))
            np.testing.assert_allclose(got.axis().edges(), sub.axes[0].edges, atol=1e-15)
            assert got.member("fSumw2") is not None and len(got.member("fSumw2")) == 22
    assert not list(tmp_path.glob(".*.tmp"))


def test_root_duplicates_and_bad_input(tmp_path):
    h = _filled_hist()
    with pytest.raises(InputError, match="twice"):
        S.write_root_histograms(tmp_path / "d.root", [h, h])
    assert not (tmp_path / "d.root").exists()
    with pytest.raises(InputError, match="'process' category axis"):
        S.write_root_histograms(tmp_path / "x.root", h[{"process": "sig"}])
    with pytest.raises(InputError, match="non-empty"):
        S.histogram_name("", "p", "nominal")


DAS = "/TTToSemiLeptonic_TuneCP5_13TeV/RunIISummer20UL18NanoAODv9-106X/NANOAODSIM"


@pytest.mark.parametrize(
    "name", [DAS, "a;b:c d", "100%", "tab\there", "ü/é", "plain_name-1.0", "%2F"]
)
def test_key_part_is_reversible_and_root_safe(name):
    key = S.key_part(name)
    assert S.unkey_part(key) == name
    assert not set("/;: \t") & set(key)


def test_dataset_names_with_slashes_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    h = S.make_hist()
    n = 200
    nom = rng.uniform(0, 1, n)
    w = rng.uniform(0.5, 1.5, n)
    masks = {"control": nom < 0.5, "signal": nom >= 0.5}
    S.fill_variations(
        h, process=DAS, region_masks=masks, nominal_score=nom,
        varied_scores={"adv": (np.clip(nom + 0.05, 0, 1), None)}, weights=w,
    )  # fmt: skip
    names = S.write_root_histograms(tmp_path / "t.root", h)
    with uproot.open(tmp_path / "t.root") as f:
        keys = {k.split(";")[0] for k in f.keys()}
        assert keys == set(names) and len(names) == 6
        for key in keys:
            region, proc, syst = key.split("_", 1)[0], *key.split("_", 1)[1].rsplit("_", 1)
            assert S.unkey_part(proc) == DAS
            sub = h[{"process": DAS, "region": region, "systematic": syst}]
            np.testing.assert_array_equal(f[key].values(), sub.values())


def _with_data(seed=1, n_data=900, data_systematics=False):
    """The _filled_hist simulation plus a collision-data process 'data' (brute force kept)."""
    rng = np.random.default_rng(seed)
    h = _filled_hist()
    nom = np.clip(rng.normal(0.5, 0.3, n_data), 0, 1)
    other = rng.normal(0.0, 1.0, n_data)
    masks = {"control": other < 0, "signal": other >= 0}
    varied = {"adv": (nom, nom)} if data_systematics else {}  # data jets keep their score
    S.fill_variations(h, process="data", region_masks=masks, nominal_score=nom,
                      varied_scores=varied)  # fmt: skip
    edges = h.axes["score"].edges
    counts = {r: np.histogram(nom[m], edges)[0].astype(float) for r, m in masks.items()}
    return h, counts


def test_collision_data_is_the_observation_never_a_sample(tmp_path):
    h, counts = _with_data(data_systematics=True)
    names = S.write_root_histograms(tmp_path / "t.root", h)
    assert not [nm for nm in names if "_data_" in nm and not nm.endswith("_data_nominal")]
    with uproot.open(tmp_path / "t.root") as f:
        for region, c in counts.items():
            np.testing.assert_array_equal(f[f"{region}_data_nominal"].values(), c)
    ws = S.build_pyhf_workspace(h, signal_process="sig", empty_bins="keep")
    for ch in ws["channels"]:
        assert [smp["name"] for smp in ch["samples"]] == ["sig", "bkg"]
    obs = {o["name"]: o["data"] for o in ws["observations"]}
    for region, c in counts.items():
        np.testing.assert_array_equal(obs[region], c)
    # asimov on request, data named explicitly, errors
    asimov = S.build_pyhf_workspace(h, signal_process="sig", data="asimov", empty_bins="keep")
    total = sum(
        h[{"process": p, "region": "signal", "systematic": "nominal"}].values()
        for p in ("sig", "bkg")
    )
    np.testing.assert_allclose(asimov["observations"][1]["data"], total)
    renamed = S.build_pyhf_workspace(
        h, signal_process="sig", data_processes=["data", "bkg"], empty_bins="keep"
    )
    assert [smp["name"] for smp in renamed["channels"][0]["samples"]] == ["sig"]
    with pytest.raises(InputError, match="collision-data process"):
        S.build_pyhf_workspace(h, signal_process="data")
    with pytest.raises(InputError, match=r"data processes \['Run2018'\]"):
        S.build_pyhf_workspace(h, signal_process="sig", data_processes=["Run2018"])
    with pytest.raises(InputError, match="no collision-data process"):
        S.build_pyhf_workspace(_filled_hist(), signal_process="sig", data="observed")


def test_any_observable_and_folded_axes(tmp_path):
    rng = np.random.default_rng(6)
    h = hist.Hist(
        hist.axis.StrCategory([], growth=True, name="process"),
        hist.axis.IntCategory([2017, 2018], name="year"),
        hist.axis.StrCategory(["signal"], name="region"),
        hist.axis.StrCategory([], growth=True, name="systematic"),
        hist.axis.Variable([50, 100, 150, 175, 250], name="mass", label="jet mass [GeV]"),
        storage=hist.storage.Weight(),
    )
    brute = {}
    for year in (2017, 2018):
        m = rng.normal(160, 50, 300)
        w = rng.uniform(0.5, 1.5, 300)
        h.fill(process="tt", year=year, region="signal", systematic="nominal", mass=m, weight=w)
        h.fill(process="tt", year=year, region="signal", systematic="jesUp", mass=m * 1.02,
               weight=w)  # fmt: skip
        brute[year] = (np.histogram(m, h.axes["mass"].edges, weights=w)[0], m, w)
    S.mirror_templates(h, ["jes"])
    names = S.write_root_histograms(tmp_path / "m.root", h)
    assert set(names) == {
        f"signal-{y}_tt_{s}" for y in (2017, 2018) for s in ("nominal", "jesUp", "jesDown")
    }
    with uproot.open(tmp_path / "m.root") as f:
        for year, (vals, m, w) in brute.items():
            got = f[f"signal-{year}_tt_nominal"]
            np.testing.assert_allclose(got.values(), vals, rtol=1e-12)
            np.testing.assert_allclose(got.axis().edges(), [50, 100, 150, 175, 250])
            under = w[m < 50].sum()
            assert got.values(flow=True)[0] == pytest.approx(under)
    ws = S.build_pyhf_workspace(h, signal_process="tt", empty_bins="keep")
    assert [c["name"] for c in ws["channels"]] == ["signal-2017", "signal-2018"]
    two = hist.Hist(
        hist.axis.StrCategory(["tt"], name="process"),
        hist.axis.StrCategory(["nominal"], name="systematic"),
        hist.axis.Regular(4, 0, 1, name="score"),
        hist.axis.Regular(4, 0, 300, name="mass"),
        storage=hist.storage.Weight(),
    )
    with pytest.raises(InputError, match=r"exactly one observable.*\['score', 'mass'\].*project"):
        S.write_root_histograms(tmp_path / "two.root", two)
    with pytest.raises(InputError, match="Weight"):
        S.write_root_histograms(tmp_path / "x.root", hist.Hist(*two.axes[:3]))


def test_workspace_modifiers_match_templates():
    h = _filled_hist()
    ws = S.build_pyhf_workspace(h, signal_process="sig")
    assert [c["name"] for c in ws["channels"]] == ["control", "signal"]
    for ch in ws["channels"]:
        for sample in ch["samples"]:

            def get(s, proc=sample["name"], region=ch["name"]):
                return h[{"process": proc, "region": region, "systematic": s}]

            nom = get("nominal")
            np.testing.assert_allclose(sample["data"], nom.values())
            mods = {(m["name"], m["type"]): m for m in sample["modifiers"]}
            assert (("mu", "normfactor") in mods) == (sample["name"] == "sig")
            for syst in ("adv", "shape"):
                up, dn = get(f"{syst}Up").values(), get(f"{syst}Down").values()
                ns = mods[(syst, "normsys")]["data"]
                assert ns["hi"] == pytest.approx(up.sum() / nom.values().sum())
                assert ns["lo"] == pytest.approx(dn.sum() / nom.values().sum())
                hs = mods[(syst, "histosys")]["data"]
                np.testing.assert_allclose(hs["hi_data"], up * nom.values().sum() / up.sum())
                np.testing.assert_allclose(hs["lo_data"], dn * nom.values().sum() / dn.sum())
                np.testing.assert_allclose(np.sum(hs["hi_data"]), nom.values().sum(), rtol=1e-12)
            st = mods[(f"staterror_{ch['name']}", "staterror")]["data"]
            np.testing.assert_allclose(st, np.sqrt(nom.variances()))
    obs = {o["name"]: o["data"] for o in ws["observations"]}
    for region in ("control", "signal"):
        total = sum(
            h[{"process": p, "region": region, "systematic": "nominal"}].values()
            for p in ("sig", "bkg")
        )
        np.testing.assert_allclose(obs[region], total)


def test_workspace_validates_and_fits(tmp_path):
    h = _filled_hist()
    rng = np.random.default_rng(4)
    asimov = S.build_pyhf_workspace(h, signal_process="sig", empty_bins="keep")
    data = {o["name"]: rng.poisson(o["data"]).astype(float) for o in asimov["observations"]}
    for spec in (
        S.build_pyhf_workspace(h, signal_process="sig"),
        S.build_pyhf_workspace(h, signal_process="sig", data=data, systematics=["adv"]),
    ):
        path = S.write_workspace(tmp_path / "ws.json", spec)
        ws = pyhf.Workspace(json.loads(path.read_text()))
        model = ws.model()
        pars = pyhf.infer.mle.fit(ws.data(model), model)
        assert np.all(np.isfinite(pars))
        assert model.config.poi_name == "mu"
        assert "adv" in model.config.parameters
    asimov = S.build_pyhf_workspace(h, signal_process="sig", staterror=False)
    ws = pyhf.Workspace(asimov)
    model = ws.model()
    pars = pyhf.infer.mle.fit(ws.data(model), model)
    assert pars[model.config.poi_index] == pytest.approx(1.0, abs=1e-3)


def test_workspace_errors():
    h = _filled_hist()
    with pytest.raises(InputError, match="signal process 'nope'"):
        S.build_pyhf_workspace(h, signal_process="nope")
    with pytest.raises(ConfigError, match="no Up/Down"):
        S.build_pyhf_workspace(h, signal_process="sig", systematics=["missing"])
    with pytest.raises(InputError, match="no observed data given for channel 'signal'"):
        S.build_pyhf_workspace(h, signal_process="sig", data={"control": np.zeros(20)})
    with pytest.raises(InputError, match="shape"):
        S.build_pyhf_workspace(
            h, signal_process="sig", data={"control": np.zeros(3), "signal": np.zeros(3)}
        )
    with pytest.raises(ConfigError):
        S.build_pyhf_workspace(h, signal_process="sig", data="measured")
    assert S.systematic_names(h) == ["adv", "shape"]


def test_workspace_empty_bins():
    rng = np.random.default_rng(8)
    n = 300
    h = S.make_hist()
    nom = rng.uniform(0.0, 0.6, n)  # bins above 0.6 are empty in nominal
    up = np.clip(nom + 0.1, 0, 1)  # ... but not in the up variation
    S.fill_variations(
        h,
        process="sig",
        region_masks={"control": nom < 0.3, "signal": nom >= 0.3},
        nominal_score=nom,
        varied_scores={"adv": (up, None)},
    )
    kept = S.build_pyhf_workspace(h, signal_process="sig")
    full = S.build_pyhf_workspace(h, signal_process="sig", empty_bins="keep")
    for ch_k, ch_f in zip(kept["channels"], full["channels"]):
        nom_f = np.array(ch_f["samples"][0]["data"])
        np.testing.assert_array_equal(ch_k["samples"][0]["data"], nom_f[nom_f != 0])
        assert len(ch_f["samples"][0]["data"]) == 20
    ws = pyhf.Workspace(kept)
    model = ws.model()
    pars = pyhf.infer.mle.fit(ws.data(model), model)
    assert np.all(np.isfinite(pars))
    assert np.all(model.expected_actualdata(pars) > 0)
    data = {o["name"]: np.array(o["data"]) for o in full["observations"]}
    data["signal"][-1] = 1.0
    with pytest.raises(InputError, match="observed events in bins \\[19\\]"):
        S.build_pyhf_workspace(h, signal_process="sig", data=data)
    with pytest.raises(ConfigError, match="empty_bins"):
        S.build_pyhf_workspace(h, signal_process="sig", empty_bins="merge")
