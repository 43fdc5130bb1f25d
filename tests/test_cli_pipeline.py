"""The command line end to end: generate -> features -> train -> attack."""

from __future__ import annotations

import json

import numpy as np
import pytest

from advsyst.cli import main
from advsyst.stats import delta_fn, jsd_per_feature


def test_generate_features_train_attack(tmp_path, capsys):
    for proc, seed in (("ttbar", 1), ("ww", 2)):
        assert (
            main(
                [
                    "generate",
                    "--process",
                    proc,
                    "--events",
                    "80",
                    "--seed",
                    str(seed),
                    "--out",
                    str(tmp_path / f"{proc}.root"),
                ]
            )
            == 0
        )
    feats = tmp_path / "f.npz"
    assert (
        main(
            [
                "features",
                "--input",
                str(tmp_path / "ttbar.root"),
                str(tmp_path / "ww.root"),
                "--schema",
                "pfnano",
                "--jet-collection",
                "FatJet",
                "--out",
                str(feats),
            ]
        )
        == 0
    )
    with np.load(feats) as z:
        X, y = z["X"], z["y"]
    assert X.shape[1] == 87 and set(np.unique(y)) == {0, 1}
    assert (
        main(
            [
                "train",
                "--data",
                str(feats),
                "--out",
                str(tmp_path / "t.pt"),
                "--epochs",
                "2",
                "--hidden",
                "16",
                "8",
            ]
        )
        == 0
    )
    assert "validation AUROC" in capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(
        "n_iterations: 2\nnum_bins: 20\nunits: range\nmin_change: 0.01\nstep: 0.01\n"
        "max_jsd: 0.05\nmax_dfn: 0.05\nprogress: false\n"
    )
    out = tmp_path / "att"
    assert (
        main(
            [
                "attack",
                "--model",
                str(tmp_path / "t.pt"),
                "--data",
                str(feats),
                "--config",
                str(tmp_path / "c.yaml"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rep = json.loads((out / "report.json").read_text())
    with np.load(out / "adversarial.npz") as z:
        X_adv = z["X_adv"]
    assert rep["jsd_max"] == pytest.approx(jsd_per_feature(X, X_adv, num_bins=20).max())
    # constant (zero-padded) TopoDNN columns are frozen and left out of the correlation
    valid = X.std(axis=0) > 0
    assert np.array_equal(X_adv[:, ~valid], X[:, ~valid])
    assert (
        rep["dfn"] == pytest.approx(delta_fn(X, X_adv, valid=valid)) and rep["dfn"] <= 0.05 + 1e-9
    )


def test_train_rejects_single_class(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).normal(size=(50, 3)), y=np.ones(50))
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "single class" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
