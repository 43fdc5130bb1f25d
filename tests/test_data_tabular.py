"""Tabular loader (CSV / parquet / npz) and the Donut toy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advsyst.data import TabularData, load_table, make_donut
from advsyst.errors import InputError, MissingBranchError, UnreadableFileError


def _higgs_like(path, n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "EventId": np.arange(100000, 100000 + n),
            "DER_mass_MMC": rng.normal(120, 20, n),
            "DER_met": rng.exponential(30, n),
            "PRI_jet_leading_pt": rng.exponential(50, n),
            "Weight": rng.uniform(0.1, 2.0, n),
            "Label": np.where(rng.random(n) < 0.4, "s", "b"),
        }
    )
    df.loc[[1, 4, 9], "DER_mass_MMC"] = -999.0
    df.loc[[4, 7], "PRI_jet_leading_pt"] = -999.0
    df.to_csv(path, index=False)
    return df


def test_csv_atlas_style_with_sentinel(tmp_path):
    path = tmp_path / "higgs.csv"
    df = _higgs_like(path)
    data = load_table(path, weight="Weight", sentinel=-999.0)
    assert isinstance(data, TabularData)
    assert data.feature_names == ["DER_mass_MMC", "DER_met", "PRI_jet_leading_pt"]
    assert data.label_column == "Label"
    np.testing.assert_array_equal(data.y, (df.Label == "s").to_numpy().astype(int))
    np.testing.assert_allclose(data.w, df.Weight)
    assert data.missing is not None and data.missing.sum() == 5
    assert data.missing[4].tolist() == [True, False, True]
    present = df.DER_mass_MMC[df.DER_mass_MMC != -999.0]
    assert data.X[1, 0] == pytest.approx(np.median(present))
    assert not np.any(data.X == -999.0)
    assert data.X.dtype == np.float64 and data.X.shape == (50, 3)


@pytest.mark.parametrize(
    ("fill", "check"),
    [
        ("keep", lambda X: X[1, 0] == -999.0),
        ("zero", lambda X: X[1, 0] == 0.0),
        ("nan", lambda X: np.isnan(X[1, 0])),
        ("mean", lambda X: np.isfinite(X[1, 0]) and X[1, 0] != -999.0),
    ],
)
def test_sentinel_fill_policies(tmp_path, fill, check):
    path = tmp_path / "higgs.csv"
    _higgs_like(path)
    data = load_table(path, sentinel=-999.0, sentinel_fill=fill)
    assert check(data.X)


def test_drop_rows_and_feature_selection(tmp_path):
    path = tmp_path / "higgs.csv"
    _higgs_like(path)
    data = load_table(
        path, features=["DER_met", "DER_mass_MMC"], sentinel=-999.0, sentinel_fill="drop"
    )
    assert data.X.shape == (47, 2) and data.feature_names == ["DER_met", "DER_mass_MMC"]
    assert data.missing is None and data.y.shape == (47,)


def test_parquet_and_npz(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0, np.nan], "b": [3, 4, 5], "label": [0, 1, 1], "w": [1, 2, 3]})
    df.to_parquet(tmp_path / "t.parquet")
    data = load_table(tmp_path / "t.parquet", weight="w")
    assert data.feature_names == ["a", "b"] and data.y.tolist() == [0, 1, 1]
    assert data.X[2, 0] == 1.5  # NaN is missing, filled with the median
    np.savez(
        tmp_path / "t.npz",
        X=np.arange(6.0).reshape(3, 2),
        y=np.array([1, 0, 1]),
        w=np.ones(3),
        feature_names=np.array(["p", "q"]),
    )
    z = load_table(tmp_path / "t.npz", features=["q"])
    assert z.X[:, 0].tolist() == [1.0, 3.0, 5.0] and z.feature_names == ["q"]
    assert z.y.tolist() == [1, 0, 1] and z.w.tolist() == [1.0, 1.0, 1.0]


def test_bad_inputs(tmp_path):
    path = tmp_path / "higgs.csv"
    _higgs_like(path)
    with pytest.raises(MissingBranchError, match="nope"):
        load_table(path, features=["nope"])
    with pytest.raises(MissingBranchError, match="label column"):
        load_table(path, label="missing")
    with pytest.raises(InputError, match="sentinel_fill"):
        load_table(path, sentinel_fill="bogus")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="unsupported"):
        load_table(tmp_path / "x.json")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(UnreadableFileError):
        load_table(tmp_path / "broken.parquet")
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    with pytest.raises(MissingBranchError, match="'X'"):
        load_table(tmp_path / "nox.npz")
    with pytest.raises(FileNotFoundError):
        load_table(tmp_path / "absent.csv")
    pd.DataFrame({"a": [1.0, np.inf], "label": [0, 1]}).to_csv(tmp_path / "inf.csv", index=False)
    with pytest.raises(InputError, match="infinite"):
        load_table(tmp_path / "inf.csv")


def test_donut_shapes_fraction_and_geometry():
    X, y = make_donut(4000, seed=3, signal_fraction=0.25)
    assert X.shape == (4000, 2) and y.shape == (4000,) and y.sum() == 1000
    r = np.hypot(X[:, 0], X[:, 1])
    assert np.median(r[y == 1]) < 1.5 < 3.0 < np.median(r[y == 0])
    assert abs(np.corrcoef(X[y == 0].T)[0, 1]) < 0.1
    X2, y2 = make_donut(4000, seed=3, signal_fraction=0.25)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    Xs, ys = make_donut(10, shuffle=False, r_ring=10.0)
    assert ys.tolist() == [1] * 5 + [0] * 5
    with pytest.raises(InputError):
        make_donut(10, signal_fraction=1.5)
