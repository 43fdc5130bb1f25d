"""ROOT histogram export and the pyhf workspace."""

from __future__ import annotations

import json

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


def test_root_duplicates_and_bad_names(tmp_path):
    h = _filled_hist()
    with pytest.raises(InputError, match="twice"):
        S.write_root_histograms(tmp_path / "d.root", [h, h])
    assert not (tmp_path / "d.root").exists()
    with pytest.raises(InputError):
        S.histogram_name("a/b", "p", "nominal")
    with pytest.raises(InputError, match="axes"):
        S.write_root_histograms(tmp_path / "x.root", h[{"process": "sig"}])


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
    with pytest.raises(InputError, match="no observed data given for region 'signal'"):
        S.build_pyhf_workspace(h, signal_process="sig", data={"control": np.zeros(20)})
    with pytest.raises(InputError, match="shape"):
        S.build_pyhf_workspace(
            h, signal_process="sig", data={"control": np.zeros(3), "signal": np.zeros(3)}
        )
    with pytest.raises(ConfigError):
        S.build_pyhf_workspace(h, signal_process="sig", data="observed")
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
    with pytest.raises(InputError, match="observed events in score bins \\[19\\]"):
        S.build_pyhf_workspace(h, signal_process="sig", data=data)
    with pytest.raises(ConfigError, match="empty_bins"):
        S.build_pyhf_workspace(h, signal_process="sig", empty_bins="merge")
