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
SYSTEMATICS = [
    "nominal",
    "pileupUp",
    "pileupDown",
    "conservattackUp",
    "conservattackDown",
    "fgsmUp",
    "fgsmDown",
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
    assert varied.systematics() == [
        "nominal",
        "conservattackUp",
        "conservattackDown",
        "fgsmUp",
        "fgsmDown",
    ]
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
