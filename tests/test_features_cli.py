"""``advsyst features`` through the real dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from advsyst.cli import main
from advsyst.data import generate_sample, load_table


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.getbasetemp() / "advsyst_samples"
    d.mkdir(exist_ok=True)
    out = []
    for process, seed in (("ttbar", 1), ("ww", 2)):
        path = d / f"{process}_200_{seed}_0.root"
        if not path.exists():
            generate_sample(process, 200, path, seed=seed, progress=False)
        out.append(path)
    return out[0], out[1]


def test_features_npz_contents(samples, tmp_path, capsys):
    tt, ww = samples
    out = tmp_path / "features.npz"
    rc = main(
        ["features", "--input", str(tt), str(ww), "--label", "1", "0",
         "--jet-collection", "FatJet", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    assert "jets x 87 features" in capsys.readouterr().out
    z = np.load(out)
    n = z["y"].size
    assert z["X_raw"].shape == (n, 90) and z["X"].shape == (n, 87)
    assert z["feature_names"].shape == (87,)
    for key in ("w", "pt", "eta", "phi", "mass", "event", "dataset"):
        assert z[key].shape == (n,), key
    assert set(z["dataset"].tolist()) == {tt.stem, ww.stem}
    assert set(z["y"][z["dataset"] == tt.stem].tolist()) == {1}
    assert set(z["y"][z["dataset"] == ww.stem].tolist()) == {0}
    # pT-descending constituents, zero-padded
    pts = z["X_raw"][:, 0::3]
    assert np.all(np.diff(pts, axis=1) <= 0)
    assert json.loads(str(z["provenance"]))["kind"] == "advsyst.features"
    # the attack reads the same file through the tabular loader
    table = load_table(out)
    assert table.X.shape == (n, 87) and table.feature_names == z["feature_names"].tolist()
    np.testing.assert_array_equal(table.y, z["y"])


def test_features_errors_exit_2(samples, tmp_path, capsys):
    tt, _ = samples
    rc = main(
        ["features", "--input", str(tt), "--label", "1", "0", "--out", str(tmp_path / "a.npz")]
    )
    assert rc == 2 and "--label" in capsys.readouterr().err
    bad = tmp_path / "bad.root"
    bad.write_text("garbage")
    rc = main(["features", "--input", str(bad), "--out", str(tmp_path / "b.npz")])
    assert rc == 2 and "bad.root" in capsys.readouterr().err
    with pytest.warns(RuntimeWarning, match="skipping unreadable"):
        rc = main(
            ["features", "--input", str(tt), str(bad), "--skip-bad-files",
             "--jet-collection", "FatJet", "--out", str(tmp_path / "c.npz")]
        )  # fmt: skip
    assert rc == 0 and "skipped unreadable file" in capsys.readouterr().out
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()
