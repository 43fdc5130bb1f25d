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
