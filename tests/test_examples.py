"""The examples run end to end (``--quick``) in a subprocess and write their outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from advsyst.workflows.twopass import VariedScores

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SYSTEMATICS = [  # the report's order: nominal, then each name's Up and Down
    "nominal",
    "conservattackUp",
    "conservattackDown",
    "fgsmUp",
    "fgsmDown",
    "pileupUp",
    "pileupDown",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Shared by both examples, so the second reuses the generated samples."""
    return tmp_path_factory.mktemp("examples")


def _run(script: str, workdir: Path, *extra: str) -> str:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--workdir", str(workdir), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=workdir,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def _check_outputs(out: str, workdir: Path) -> None:
    lines = out.splitlines()
    assert any(line.startswith("pass 1") and "x 87 features" in line for line in lines)
    assert any(line.startswith("cutflow ttbar: events 150") for line in lines)
    table = lines[lines.index("tagged yield (score >= 0.5) per systematic") + 1 :]
    assert table[0].split()[0] == "systematic"
    assert [row.split()[0] for row in table[1 : 1 + len(SYSTEMATICS)]] == SYSTEMATICS
    assert "wrote 28 histograms to" in out  # 2 regions x 2 processes x 7 systematics
    with uproot.open(workdir / "templates.root") as f:
        names = {k.split(";")[0] for k in f.keys()}
        assert len(names) == 28
        assert {"signal_ttbar_nominal", "control_ww_conservattackUp"} <= names
        h = f["signal_ttbar_fgsmDown"]
        assert h.values().sum() > 0
    varied = VariedScores.load(workdir / "varied_scores.npz")
    # one-sided variations: the lookup gives Up only, the Down templates are mirrored
    assert varied.systematics() == ["nominal", "conservattackUp", "fgsmUp"]
    assert varied.one_sided == ("conservattack", "fgsm")
    assert varied.datasets == ["ttbar", "ww"]
    assert np.any(varied.varied["conservattack"][0] != varied.nominal)


def test_add_to_existing_analysis(workdir):
    out = _run("add_to_existing_analysis.py", workdir)
    _check_outputs(out, workdir)
    assert "CONSERVAttack fooled" in out


def test_run_on_dask_with_gpu_resource(workdir):
    out = _run("run_on_dask.py", workdir, "--gpu-resource")
    _check_outputs(out, workdir)
    assert "LocalCluster: 2 workers with GPU=1" in out
    assert "pass 1 (dask):" in out
    assert "attack: submitted with resources={'GPU': 1}" in out
    assert "attack ran on device 'cpu'" in out  # no CUDA here: the task falls back


def test_analysis_dask_awkward(workdir, tmp_path):
    """Own builder, NLO weights, pass 2 in eager and dask mode: identical templates with the
    project's names; the table and efficiencies come from the two-pass result."""
    out = _run("analysis_dask_awkward.py", workdir, "--out", str(tmp_path))
    assert "(own builder)" in out and "simulated jets with negative weight" in out
    assert "eager and dask histograms identical: True" in out
    assert "detector clean-jet efficiency" in out and "data " in out
    assert (tmp_path / "uncertainty_table.md").read_text().startswith("| region | process |")
    files = {m: tmp_path / f"templates_{m}.root" for m in ("eager", "dask")}
    with uproot.open(files["eager"]) as fe, uproot.open(files["dask"]) as fd:
        names = {k.split(";")[0] for k in fe.keys()}
        assert names == {k.split(";")[0] for k in fd.keys()}
        # 2 regions x (2 simulated processes x 5 systematics + collision data nominal)
        assert len(names) == 22
        assert {"signal_ttbar_nominal", "control_ww_conservattackUp", "signal_data_nominal",
                "control_ttbar_fgsmDown"} <= names  # fmt: skip
        for name in names:
            np.testing.assert_array_equal(fe[name].values(), fd[name].values(), err_msg=name)
            np.testing.assert_array_equal(fe[name].variances(), fd[name].variances())
        assert fe["signal_ttbar_nominal"].values().sum() != 0
    varied = VariedScores.load(tmp_path / "varied_scores.npz")
    assert varied.provenance["pass1"]["normalization"]["ttbar"]["sumw_source"] == "Runs"
    assert np.any(varied.weights < 0)  # signed weights reached the attack


def test_analysis_full(workdir, tmp_path):
    """Own per-particle builder, ONNX tagger, 25 % negative weights, dask pass 2 with
    mirrored down templates, the table, the efficiencies and a cabinetry fit; the
    templates are recomputed from the per-jet scores and checked against the table."""
    import json

    import cabinetry

    out = _run("analysis_full.py", workdir, "--out", str(tmp_path))
    assert "own builder" in out and "cabinetry fit: mu =" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_columns"] == 90 and summary["score_bins"] == 2
    assert summary["n_negative_weight_jets"] > 0
    assert summary["padded_entries"] > 0
    assert summary["padded_unchanged"] and summary["masks_kept"]

    varied = VariedScores.load(tmp_path / "varied_scores.npz")
    data = varied.flags["data"]
    w = varied.weights
    assert varied.datasets == ["data", "ttbar", "ww"]
    assert np.any(w[~data] < 0) and np.all(w[data] == 1.0)  # signed weights reached pass 1
    assert varied.provenance["pass1"]["normalization"]["ttbar"]["sumw_source"] == "Runs"
    assert varied.provenance["config"]["options"]["conservattack"]["robust_binnings"] is None

    # padding, recomputed without ParticleLayout: a slot is padding when all 3 features are 0
    att = np.load(tmp_path / "conservattack_features.npz")
    assert att["X"].shape == att["X_adv"].shape == (int((~data).sum()), 90)
    x, xa = att["X"].reshape(-1, 30, 3), att["X_adv"].reshape(-1, 30, 3)
    pad = (x == 0).all(axis=2)
    assert pad.any() and (~pad).any()
    np.testing.assert_array_equal(xa[pad], 0.0)  # padded entries never move
    np.testing.assert_array_equal((xa == 0).all(axis=2), pad)  # no particle became padding
    assert (xa[~pad] != x[~pad]).any()

    rows = json.loads((tmp_path / "uncertainty_table.json").read_text())["rows"]
    cells = {(r["region"], r["process"], r["variation"]) for r in rows}
    assert cells == {(g, p, v) for g in ("CR", "SR") for p in ("ttbar", "ww")
                     for v in ("conservattack", "fgsm")}  # fmt: skip
    eff = json.loads((tmp_path / "detector_efficiency.json").read_text())
    for side in ("mc", "data"):
        assert 0 <= eff[side]["value"] <= 1 and eff[side]["n_events"] > 0
    assert eff["data"]["n_events"] == int(data.sum())

    # templates (dask mode, normalised) against a brute-force fill of the per-jet scores
    edges = np.array([0.0, 0.5, 1.0])
    exact = 0
    dataset = np.asarray(varied.dataset)
    with uproot.open(tmp_path / "templates_dask.root") as f:
        names = {k.split(";")[0] for k in f.keys()}
        assert len(names) == 2 * (2 * 5 + 1)
        for region, flag in (("signal", "SR"), ("control", "CR")):
            obs = f[f"{region}_data_nominal"].values()
            in_region = varied.flags[f"region.{flag}"]
            assert obs.sum() == (in_region & data).sum()
            for proc in ("ttbar", "ww"):
                sel = in_region & (dataset == proc)
                nom = f[f"{region}_{proc}_nominal"].values()
                expect, _ = np.histogram(varied.nominal[sel] * (1 - 1e-12), edges, weights=w[sel])
                np.testing.assert_allclose(nom, expect, rtol=1e-9, atol=1e-9)
                for name in ("conservattack", "fgsm"):
                    up = f[f"{region}_{proc}_{name}Up"].values()
                    s_up = varied.varied[name][0][sel]
                    expect, _ = np.histogram(s_up * (1 - 1e-12), edges, weights=w[sel])
                    np.testing.assert_allclose(up, expect, rtol=1e-9, atol=1e-9)
                    # cabinetry's Symmetrize: (2 - r) * (2 N - U / r), r = sum(U) / sum(N)
                    down = f[f"{region}_{proc}_{name}Down"].values()
                    r = up.sum() / nom.sum()
                    raw = 2 * nom - up / r
                    if (raw >= 0).all():
                        np.testing.assert_allclose(down, (2 - r) * raw, rtol=1e-9, atol=1e-9)
                        exact += 1
                    assert down.sum() == pytest.approx((2 - r) * nom.sum(), rel=1e-9)
                    # the table's tagged yields are the templates' upper bin
                    row = next(x for x in rows if (x["region"], x["process"],
                                                   x["variation"]) == (flag, proc, name))  # fmt: skip
                    assert row["nominal_yield"] == pytest.approx(nom[1], rel=1e-9)
                    assert row["varied_yield"] == pytest.approx(up[1], rel=1e-9)

    assert exact > 0  # at least one template mirrored without the floor
    cfg = cabinetry.configuration.load(tmp_path / "fit" / "cabinetry.yml")  # validates it
    assert [s["Name"] for s in cfg["Samples"] if s.get("Data")] == ["data"]
    assert {s["Name"] for s in cfg["Samples"] if not s.get("Data")} == {"ttbar", "ww"}
    fit = json.loads((tmp_path / "fit_result.json").read_text())
    assert fit["converged"] and fit["poi"] == "mu"
    assert np.isfinite(fit["mu"]) and 0 < fit["mu_uncertainty"] < np.inf
    assert abs(fit["mu"] - 1.0) < 4 * fit["mu_uncertainty"]  # pseudo-data is half tt̄
