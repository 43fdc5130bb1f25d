"""The main job end to end at a small size: outputs exist and agree with each other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot

from advsyst.attacks import AttackResult
from advsyst.attacks.model import as_adapter
from advsyst.models import load_model
from advsyst.workflows.demo import DemoConfig, _default_attack, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(
        events=350,
        data_events=300,
        seed=3,
        workers=1,
        tagger_epochs=3,
        detector_epochs=3,
        tagger_hidden=(32, 16),
        attack=dict(_default_attack(), n_iterations=2, num_bins=20),
        cache_dir=str(out / "cache"),
    )
    summary = run_demo(out / "run", cfg)
    return out / "run", summary, cfg


def test_every_output_is_written(demo):
    out, summary, _ = demo
    for name in (
        "histograms.root",
        "cabinetry.yml",
        "workspace.json",
        "uncertainty_table.md",
        "uncertainty_table.csv",
        "uncertainty_table.json",
        "report.md",
        "config.json",
        "summary.json",
        "tagger.pt",
        "detector.pt",
        "attack_result.npz",
    ):
        assert (out / name).stat().st_size > 0, name
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    for stem in ("marginals", "correlations", "attack_history", "detector_efficiency"):
        assert f"{stem}.png" in pngs
    assert not list(out.rglob(".*.tmp"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 3 and "torch" in cfg["versions"] and cfg["config"]["events"] == 350
    report = (out / "report.md").read_text()
    assert f"{summary['attack']['fooling_ratio']:.4f}" in report


def test_attack_numbers_are_reproducible_from_the_saved_arrays(demo):
    out, summary, cfg = demo
    res = AttackResult.load(out / "attack_result.npz")
    tagger = as_adapter(load_model(out / "tagger.pt"))
    pred_adv = tagger.predict(res.X_adv)
    assert np.array_equal(pred_adv, res.pred_adv)
    assert summary["attack"]["fooling_ratio"] == pytest.approx(np.mean(pred_adv != res.pred_clean))
    assert res.metrics["jsd_max"] <= cfg.attack["max_jsd_single_change"] + 1e-9
    assert res.metrics["dfn"] <= cfg.attack["max_frob_single_change"] + 1e-9


def test_table_yields_equal_the_root_histograms(demo):
    out, summary, cfg = demo
    table = json.loads((out / "uncertainty_table.json").read_text())
    variations = {r["variation"] for r in table["rows"]}
    assert {
        "conservattack",
        "conservattack_detected",
        "fgsm",
        "ngm",
        "noise",
        "shift",
    } <= variations
    with uproot.open(out / "histograms.root") as f:
        names = {k.split(";")[0] for k in f.keys()}
        for row in table["rows"]:
            for var in ("nominal", f"{row['variation']}Up", f"{row['variation']}Down"):
                assert f"{row['region']}_{row['process']}_{var}" in names
            h = f[f"{row['region']}_{row['process']}_nominal"]
            vals, edges = h.to_numpy()
            tagged = vals[edges[:-1] >= cfg.working_point].sum()
            assert row["nominal_yield"] == pytest.approx(tagged, rel=1e-6)
            up = f[f"{row['region']}_{row['process']}_{row['variation']}Up"].to_numpy()[0]
            assert row["varied_yield"] == pytest.approx(
                up[edges[:-1] >= cfg.working_point].sum(), rel=1e-6
            )


def test_cabinetry_config_works_from_the_output_folder_and_fits(demo, monkeypatch):
    """As a user would: cd DIR; cabinetry templates / workspace / fit with DIR/cabinetry.yml."""
    cabinetry = pytest.importorskip("cabinetry")
    out, summary, _ = demo
    assert summary["fit"]["builder"].startswith("cabinetry")
    monkeypatch.chdir(out)
    cfg = cabinetry.configuration.load("cabinetry.yml")
    assert not cfg["General"]["InputPath"].startswith("/")
    cfg["General"]["HistogramFolder"] = "histograms_from_test"  # leave the demo's own alone
    cabinetry.templates.collect(cfg)
    ws = cabinetry.workspace.build(cfg)
    assert ws == json.loads((out / "workspace.json").read_text())
    samples = {s["name"] for ch in ws["channels"] for s in ch["samples"]}
    assert samples == {"ttbar", "ww"}  # the observation is not a sample
    model, data = cabinetry.model_utils.model_and_data(ws)
    res = cabinetry.fit.fit(model, data)
    assert np.all(np.isfinite(res.bestfit))
    mu = res.bestfit[model.config.poi_index]
    assert mu == pytest.approx(1.0, abs=1e-2)  # Asimov data
    assert summary["fit"]["poi_bestfit"] == pytest.approx(mu, abs=1e-3)
    with uproot.open(out / "histograms.root") as f:
        for ch in ws["channels"]:
            total = sum(
                f[f"{ch['name']}_{s}_nominal"].values() for s in ("ttbar", "ww") if
                f"{ch['name']}_{s}_nominal" in f
            )  # fmt: skip
            np.testing.assert_allclose(f[f"{ch['name']}_asimov_nominal"].values(), total)
