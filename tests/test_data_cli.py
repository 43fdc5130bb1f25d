"""``advsyst generate`` through the real dispatcher."""

from __future__ import annotations

import numpy as np
import uproot

from advsyst.cli import main
from advsyst.data import read_provenance


def test_generate_root_file(tmp_path, capsys):
    out = tmp_path / "ww.root"
    rc = main(
        [
            "generate",
            "--process",
            "ww",
            "--events",
            "20",
            "--seed",
            "5",
            "--out",
            str(out),
            "--sqrt-s",
            "8000",
            "--pthat-min",
            "300",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "ms/event" in capsys.readouterr().out
    with uproot.open(out) as f:
        assert f["Events"].num_entries == 20
    prov = read_provenance(out)
    assert prov["config"]["sqrt_s"] == 8000.0 and prov["config"]["pthat_min"] == 300.0


def test_generate_pseudo_data_mix(tmp_path):
    out = tmp_path / "data.root"
    rc = main(
        [
            "generate",
            "--process",
            "mix",
            "--pseudo-data",
            "--events",
            "20",
            "--out",
            str(out),
            "--mix",
            "ttbar=0.3,ww=0.7",
            "--no-progress",
        ]
    )
    assert rc == 0
    with uproot.open(out) as f:
        assert "genWeight" not in f["Events"].keys()
    assert read_provenance(out)["config"]["mix"] == [["ttbar", 0.3], ["ww", 0.7]]


def test_generate_donut_npz(tmp_path):
    out = tmp_path / "donut.npz"
    assert main(["generate", "--process", "donut", "--events", "100", "--out", str(out)]) == 0
    z = np.load(out)
    assert z["X"].shape == (100, 2) and z["feature_names"].tolist() == ["x1", "x2"]


def test_bad_arguments_exit_2(tmp_path, capsys):
    rc = main(
        ["generate", "--process", "ttbar", "--events", "0", "--out", str(tmp_path / "x.root")]
    )
    assert rc == 2
    assert "--events" in capsys.readouterr().err
    rc = main(
        [
            "generate",
            "--process",
            "mix",
            "--events",
            "5",
            "--out",
            str(tmp_path / "y.root"),
            "--mix",
            "ttbar=0.5,zz=0.5",
        ]
    )
    assert rc == 2
    assert not (tmp_path / "y.root").exists()
