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


def test_generate_nlo_like_negative_weights_and_runs_tree(tmp_path):
    """--negative-weight-fraction: signed genWeight, and a Runs tree with NanoAOD's
    genEventCount / genEventSumw / genEventSumw2 equal to the Events' sums."""
    out = tmp_path / "nlo.root"
    args = ["generate", "--process", "ww", "--events", "120", "--seed", "3", "--out", str(out),
            "--negative-weight-fraction", "0.25", "--block-size", "50", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    with uproot.open(out) as f:
        gw = f["Events"]["genWeight"].array(library="np").astype(np.float64)
        runs = f["Runs"].arrays(library="np")
        assert f["Runs"]["genEventSumw"].typename == "double"
        assert f["Runs"]["genEventCount"].typename == "int64_t"
        assert f["Runs"]["run"].typename == "uint32_t"
    assert 0.12 < np.mean(gw < 0) < 0.38 and set(np.abs(gw)) == {1.0}
    assert runs["run"].tolist() == [1] and runs["genEventCount"].tolist() == [120]
    assert runs["genEventSumw"][0] == gw.sum() and runs["genEventSumw2"][0] == (gw**2).sum()
    assert read_provenance(out)["config"]["negative_weight_fraction"] == 0.25
    # reproducible: the same seed gives the same signs
    again = tmp_path / "again.root"
    assert main([str(again) if a == str(out) else a for a in args]) == 0
    with uproot.open(again) as f:
        np.testing.assert_array_equal(f["Events"]["genWeight"].array(library="np"), gw)


def test_negative_weight_fraction_is_checked(tmp_path):
    import pytest

    from advsyst.data.generate import GenerationConfig
    from advsyst.errors import ConfigError

    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="negative_weight_fraction must lie in"):
            GenerationConfig("ttbar", 10, negative_weight_fraction=bad)
    with pytest.raises(ConfigError, match="simulation, not pseudo-data"):
        GenerationConfig("mix", 10, pseudo_data=True, negative_weight_fraction=0.2)


def test_pseudo_data_runs_tree_has_runs_only(tmp_path):
    out = tmp_path / "d.root"
    assert main(["generate", "--process", "ww", "--pseudo-data", "--events", "20", "--out",
                 str(out), "--no-progress"]) == 0  # fmt: skip
    with uproot.open(out) as f:
        assert f["Runs"].keys() == ["run"]
        assert f["Runs"]["run"].array(library="np").tolist() == [200000]
