"""Fit inputs through cabinetry: the configuration next to the ROOT file, the workspace
cabinetry builds from it, its equivalence with cabinetry's own Symmetrize and with the
direct pyhf builder, and a fit."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pyhf
import pytest
import yaml

import advsyst.systematics as S
from advsyst.errors import InputError

cabinetry = pytest.importorskip("cabinetry")

DAS = "/TTTo2L2Nu/RunIISummer20UL18NanoAODv9/NANOAODSIM"


def _hist(seed=0, n=3000, shift=0.02, data=True):
    """Two simulated processes (one with a CMS dataset name), smooth enough that no bin of
    the mirrored templates is floored; optionally collision data drawn from the same
    model.  Returns (hist, {region: data counts})."""
    rng = np.random.default_rng(seed)
    h = S.make_hist(score_axis=None)
    procs = (("sig", 0.15), (DAS, -0.15))
    for proc, mu in procs:
        nom = np.clip(rng.normal(0.5 + mu, 0.22, n), 0, 1)
        up = np.clip(nom + rng.normal(shift, 0.02, n), 0, 1)
        other = rng.normal(mu, 1.0, n)
        S.fill_variations(
            h, process=proc, region_masks={"control": other < 0, "signal": other >= 0},
            nominal_score=nom, varied_scores={"adv": (up, None)}, weights=rng.uniform(0.8, 1.2, n),
        )  # fmt: skip
    counts = {}
    if data:
        nom = np.concatenate([np.clip(rng.normal(0.5 + mu, 0.22, n), 0, 1) for _, mu in procs])
        other = np.concatenate([rng.normal(mu, 1.0, n) for _, mu in procs])
        masks = {"control": other < 0, "signal": other >= 0}
        S.fill_variations(h, process="data", region_masks=masks, nominal_score=nom,
                          varied_scores={})  # fmt: skip
        edges = h.axes["score"].edges
        counts = {
            r: np.histogram(np.minimum(nom[m], np.nextafter(1, 0)), edges)[0]
            for r, m in masks.items()
        }
    return h, counts


def _collect_and_build(cfg):
    cabinetry.templates.collect(cfg, method="uproot")
    return cabinetry.workspace.build(cfg)


def test_config_is_usable_from_its_folder_and_after_a_move(tmp_path, monkeypatch):
    h, counts = _hist()
    out = tmp_path / "out"
    fit = S.write_fit_inputs(out, h, signal_process="sig")
    assert fit.root_file == out / "histograms.root" and fit.config_file == out / "cabinetry.yml"
    cfg = cabinetry.configuration.load(out / "cabinetry.yml")
    assert cfg == fit.config
    assert cfg["General"]["InputPath"].startswith("histograms.root:")
    assert [s["Name"] for s in cfg["Samples"] if s.get("Data")] == ["data"]
    # as a user does it: cd out; cabinetry templates; cabinetry workspace
    monkeypatch.chdir(out)
    ws = _collect_and_build(cfg)
    for ch in ws["channels"]:
        assert sorted(s["name"] for s in ch["samples"]) == sorted(["sig", S.key_part(DAS)])
    obs = {o["name"]: o["data"] for o in ws["observations"]}
    for region, c in counts.items():
        np.testing.assert_array_equal(obs[region], c)
    # the folder can move; build_workspace resolves paths against the config's folder
    moved = tmp_path / "elsewhere" / "fit"
    shutil.move(str(out), moved)
    monkeypatch.chdir(tmp_path)
    ws2 = S.build_workspace(moved / "cabinetry.yml")
    assert ws2 == ws
    assert (moved / "cabinetry_histograms").is_dir()


def test_down_templates_match_cabinetry_symmetrize(tmp_path, monkeypatch):
    """Our explicit mirrored Down templates give the workspace cabinetry's own
    ``Symmetrize: true`` builds from the Up templates alone."""
    rng = np.random.default_rng(8)
    h = S.make_hist()
    for proc, mu in (("sig", 0.6), (DAS, 0.4)):
        for region in ("control", "signal"):
            nom = rng.uniform(0, 1, 2000)
            w = rng.uniform(0.8, 1.2, 2000)
            sel = {"process": proc, "region": region}
            h.fill(**sel, systematic="nominal", score=nom, weight=w)
            # a smooth variation that also changes the yield (r != 1)
            h.fill(**sel, systematic="advUp", score=nom, weight=w * (1 + 0.4 * (nom - mu)))
    S.mirror_templates(h)
    for proc in ("sig", DAS):
        for region in ("control", "signal"):
            sel = {"process": proc, "region": region}
            nom = h[{**sel, "systematic": "nominal"}].values()
            up = h[{**sel, "systematic": "advUp"}].values()
            r = up.sum() / nom.sum()
            assert abs(r - 1) > 0.01  # the normalisation part is exercised
            assert np.all(2 * nom - up / r >= 0)  # nothing floored: the conventions agree
    fit = S.write_fit_inputs(tmp_path, h, signal_process="sig")
    sym = copy.deepcopy(fit.config)
    sym["General"]["HistogramFolder"] = "cabinetry_histograms_sym"
    for syst in sym["Systematics"]:
        syst["Down"] = {"Symmetrize": True}
    monkeypatch.chdir(tmp_path)
    ours, theirs = _collect_and_build(fit.config), _collect_and_build(sym)
    for ch_o, ch_t in zip(ours["channels"], theirs["channels"], strict=True):
        for s_o, s_t in zip(ch_o["samples"], ch_t["samples"], strict=True):
            assert s_o["name"] == s_t["name"]
            np.testing.assert_allclose(s_o["data"], s_t["data"], rtol=1e-12)
            mo = {(m["name"], m["type"]): m["data"] for m in s_o["modifiers"]}
            mt = {(m["name"], m["type"]): m["data"] for m in s_t["modifiers"]}
            assert mo.keys() == mt.keys()
            for lim in ("hi", "lo"):
                assert mo["adv", "normsys"][lim] == pytest.approx(mt["adv", "normsys"][lim])
            for key in ("hi_data", "lo_data"):
                np.testing.assert_allclose(
                    mo["adv", "histosys"][key], mt["adv", "histosys"][key], rtol=1e-9, atol=1e-9
                )


def test_cabinetry_and_direct_pyhf_give_the_same_model(tmp_path):
    h, _ = _hist(seed=3)
    fit = S.write_fit_inputs(tmp_path, h, signal_process="sig")
    m_cab = pyhf.Workspace(S.build_workspace(fit.config_file)).model()
    m_dir = pyhf.Workspace(
        S.build_pyhf_workspace(h, signal_process="sig", empty_bins="keep")
    ).model()
    assert set(m_cab.config.parameters) == set(m_dir.config.parameters)
    rng = np.random.default_rng(1)
    for _ in range(3):
        pars = {
            name: rng.uniform(0.8, 1.2, m_cab.config.param_set(name).n_parameters)
            for name in m_cab.config.parameters
        }
        pars["adv"] = rng.normal(0, 1, 1)

        def vector(model, pars=pars):
            v = np.array(model.config.suggested_init(), dtype=float)
            for name, val in pars.items():
                v[model.config.par_slice(name)] = val
            return v

        for channel in m_cab.config.channels:
            e_cab = m_cab.expected_actualdata(vector(m_cab))[m_cab.config.channel_slices[channel]]
            e_dir = m_dir.expected_actualdata(vector(m_dir))[m_dir.config.channel_slices[channel]]
            np.testing.assert_allclose(e_cab, e_dir, rtol=1e-9)


def test_fit_through_cabinetry(tmp_path):
    """Asimov fit (no collision data: the observation is the Asimov template) and an
    observed-data fit, both built and fitted by cabinetry."""
    h, _ = _hist(seed=4, data=False)
    fit = S.write_fit_inputs(tmp_path / "asimov", h, signal_process="sig")
    assert [s["Name"] for s in fit.config["Samples"] if s.get("Data")] == ["asimov"]
    model, data = cabinetry.model_utils.model_and_data(S.build_workspace(fit.config_file))
    res = cabinetry.fit.fit(model, data)
    best = dict(zip(res.labels, res.bestfit, strict=True))
    assert best["mu"] == pytest.approx(1.0, abs=1e-3)
    assert best["adv"] == pytest.approx(0.0, abs=1e-3)
    h, _ = _hist(seed=5)
    fit = S.write_fit_inputs(tmp_path / "data", h, signal_process="sig")
    model, data = cabinetry.model_utils.model_and_data(S.build_workspace(fit.config_file))
    res = cabinetry.fit.fit(model, data)
    best = dict(zip(res.labels, res.bestfit, strict=True))
    unc = dict(zip(res.labels, res.uncertainty, strict=True))
    assert abs(best["mu"] - 1.0) < 4 * unc["mu"] and unc["mu"] < 0.2


def test_config_errors(tmp_path):
    h = S.make_hist()
    for region in ("control", "signal"):
        h.fill(process="sig", region=region, systematic="nominal", score=np.linspace(0, 0.9, 50))
    h.fill(process="data", region="signal", systematic="nominal", score=[0.999], weight=[1.0])
    h.fill(process="data", region="control", systematic="nominal", score=[0.5], weight=[1.0])
    with pytest.raises(InputError, match=r"channel 'signal' has observed events in bins \[19\]"):
        S.cabinetry_config(h, root_file="x.root", signal_process="sig")
    h2, _ = _hist(data=False)
    h2.fill(process="bkg2", region="signal", systematic="nominal", score=[0.5], weight=[1.0])
    cfg = S.cabinetry_config(h2, root_file="x.root", signal_process="sig")
    assert {"Name": "bkg2", "SamplePath": "bkg2", "Regions": ["signal"]} in cfg["Samples"]
    assert cfg["Systematics"][0]["Samples"] == sorted(["sig", S.key_part(DAS)])  # not bkg2
    # a sample with the systematic in one of its channels but not in the other
    h2.fill(process="bkg2", region="control", systematic="nominal", score=[0.5], weight=[1.0])
    for syst in ("advUp", "advDown"):
        h2.fill(process="bkg2", region="control", systematic=syst, score=[0.5], weight=[1.0])
    with pytest.raises(InputError, match="some but not all samples"):
        S.cabinetry_config(h2, root_file="x.root", signal_process="sig")
    cfg = S.cabinetry_config(h2, root_file="x.root", signal_process="sig", systematics=[])
    assert cfg["Systematics"] == []
    text = S.write_cabinetry_config(tmp_path / "c.yml", cfg).read_text()
    assert yaml.safe_load(text) == cfg
