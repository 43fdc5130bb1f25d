"""coffea jet processors: features vs a direct computation, executors, layouts, bad inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from advsyst.processors import JetConstituentProcessor, detect_layout
from advsyst.processors.jet_features import collections_from_branches
from advsyst.processors.run import extract_features

from advsyst.data import write_nano_tree
from advsyst.errors import MissingBranchError, UnreadableFileError

KEYS = ("X_raw", "X", "y", "w", "pt", "eta", "phi", "mass", "event", "dataset")


@pytest.fixture(scope="session")
def fileset(ttbar_file, ww_file, data_file) -> dict:
    return {
        "ttbar": {"files": {str(ttbar_file): "Events"}, "metadata": {"label": 1, "is_data": False}},
        "ww": {"files": {str(ww_file): "Events"}, "metadata": {"label": 0, "is_data": False}},
        "data": {"files": {str(data_file): "Events"}, "metadata": {"is_data": True}},
    }


def _wrap(x):
    return (x + np.pi) % (2 * np.pi) - np.pi


def _topodnn_oracle(cpt, ceta, cphi, jpt):
    """Straightforward per-jet TopoDNN preprocessing (the test's independent reference)."""
    order = np.argsort(-cpt, kind="stable")[:30]
    p, e, f = cpt[order], ceta[order], cphi[order]
    x, y = e - e[0], _wrap(f - f[0])
    if len(p) >= 2 and np.hypot(x[1], y[1]) > 0:
        a = -np.pi / 2 - np.arctan2(y[1], x[1])
        x, y = x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)
    if len(p) >= 3 and x[2] < 0:
        x = -x
    out = np.zeros((30, 3))
    out[: len(p), 0] = p / jpt
    out[: len(p), 1] = x
    out[: len(p), 2] = y
    out[0, 1:] = 0.0
    out[1, 1] = 0.0
    return np.delete(out.reshape(90), [1, 2, 4])


@pytest.mark.parametrize(("coll", "min_pt"), [("FatJet", 200.0), ("Jet", 30.0)])
def test_features_equal_direct_awkward_computation(ttbar_file, coll, min_pt):
    from coffea.nanoevents import NanoEventsFactory, PFNanoAODSchema

    res = extract_features(
        {"tt": [str(ttbar_file)]},
        jet_collection=coll,
        jet_min_pt=min_pt,
        chunksize=64,
        truth_label_branch="truthLabel",  # opt-in: real NanoAOD has no such branch
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        events = NanoEventsFactory.from_root(
            {str(ttbar_file): "Events"}, schemaclass=PFNanoAODSchema, mode="virtual"
        ).events()
    jets = events[coll]
    sel = (jets.pt > min_pt) & (abs(jets.eta) < 2.4)
    pf = ak.flatten(jets.constituents.pf[sel], axis=1)
    pf = pf[ak.argsort(pf.pt, axis=1, ascending=False, stable=True)][:, :30]
    raw = np.stack(
        [
            ak.to_numpy(ak.fill_none(ak.pad_none(pf[v], 30, axis=1, clip=True), 0.0))
            for v in ("pt", "eta", "phi")
        ],
        axis=-1,
    ).reshape(-1, 90)
    assert res["X_raw"].shape == raw.shape and raw.shape[0] > 50
    np.testing.assert_array_equal(res["X_raw"], raw)
    flat = ak.flatten(jets[sel])
    np.testing.assert_array_equal(res["pt"], ak.to_numpy(flat.pt))
    np.testing.assert_array_equal(res["mass"], ak.to_numpy(flat.mass))
    np.testing.assert_array_equal(
        res["event"], ak.to_numpy(ak.flatten(ak.broadcast_arrays(events.event, jets.pt)[0][sel]))
    )
    np.testing.assert_array_equal(res["y"], ak.to_numpy(flat.truthLabel))
    np.testing.assert_array_equal(
        res["n_constituents"], ak.to_numpy(flat.nConstituents).astype(np.int64)
    )
    assert np.all(res["w"] == 1.0)
    # TopoDNN inputs against a per-jet reference implementation
    all_pf = ak.flatten(jets.constituents.pf[sel], axis=1)
    for i in range(len(res["pt"])):
        expect = _topodnn_oracle(
            ak.to_numpy(all_pf.pt[i]).astype(float),
            ak.to_numpy(all_pf.eta[i]).astype(float),
            ak.to_numpy(all_pf.phi[i]).astype(float),
            res["pt"][i],
        )
        np.testing.assert_allclose(res["X"][i], expect, atol=1e-9)
    assert res["X"].shape[1] == 87 and len(res["feature_names"]) == 87
    # fewer than 30 constituents: zero padding
    short = res["n_constituents"] < 30
    if short.any():
        i = np.nonzero(short)[0][0]
        assert np.all(res["X_raw"][i, 3 * res["n_constituents"][i] :] == 0.0)


def test_executors_agree_exactly(fileset):
    runs = {
        ex: extract_features(fileset, jet_collection="FatJet", executor=ex, chunksize=64, workers=w)
        for ex, w in (("iterative", 1), ("futures", 2), ("dask", 2))
    }
    ref = runs["iterative"]
    assert set(np.unique(ref["dataset"])) == {"ttbar", "ww", "data"}
    for ex in ("futures", "dask"):
        assert set(runs[ex]) == set(ref)
        for k in ref:
            assert runs[ex][k].dtype == ref[k].dtype, (ex, k)
            np.testing.assert_array_equal(runs[ex][k], ref[k], err_msg=f"{ex}: {k}")


def test_labels_weights_regions(fileset):
    res = extract_features(fileset, jet_collection="FatJet")
    ds = res["dataset"]
    assert np.all(res["y"][ds == "ttbar"] == 1) and np.all(res["y"][ds == "ww"] == 0)
    assert np.all(res["y"][ds == "data"] == -1) and np.all(res["w"][ds == "data"] == 1.0)
    assert list(ds[: np.sum(ds == "ttbar")]) == ["ttbar"] * int(np.sum(ds == "ttbar"))
    sr = (res["mass"] >= 105) & (res["mass"] < 210)
    np.testing.assert_array_equal(res["region_SR"], sr)
    np.testing.assert_array_equal(res["region_CR"], ~sr)
    assert res["region_names"].tolist() == ["SR", "CR"]
    # metadata label wins over the truth branch
    flipped = extract_features(
        {"tt": {"files": [next(iter(fileset["ttbar"]["files"]))], "metadata": {"label": 7}}},
        jet_collection="FatJet",
    )
    assert np.all(flipped["y"] == 7)


def test_require_truth_match(ttbar_file):
    res = extract_features([str(ttbar_file)], jet_collection="FatJet", require_truth_match=True)
    with uproot.open(ttbar_file) as f:
        a = f["Events"].arrays(["FatJet_pt", "FatJet_eta", "FatJet_truthMatch"])
    expected = (a.FatJet_pt > 200) & (abs(a.FatJet_eta) < 2.4) & (a.FatJet_truthMatch > 0)
    assert len(res["pt"]) == ak.sum(expected) > 0


def _copy_events(src: Path, dst: Path, layout: str, rng: np.random.Generator) -> None:
    """Rewrite a generated file in another real-world layout (FatJet constituents only)."""
    with uproot.open(src) as f:
        a = f["Events"].arrays()
    out = {
        "run": ak.to_numpy(a.run),
        "luminosityBlock": ak.to_numpy(a.luminosityBlock),
        "event": ak.to_numpy(a.event),
        "genWeight": ak.to_numpy(a.genWeight),
        "FatJet": ak.zip({k: a[f"FatJet_{k}"] for k in ("pt", "eta", "phi", "mass")}),
    }
    idx = a.FatJetPFCands_pFCandsIdx
    if layout == "pfnano_inline":
        out["FatJetPFCands"] = ak.zip(
            {"jetIdx": a.FatJetPFCands_jetIdx}
            | {k: a[f"PFCands_{k}"][idx] for k in ("pt", "eta", "phi", "mass")}
        )
    else:  # NanoAOD v15: rows not grouped per jet, candidates in their own order
        perm = ak.Array([rng.permutation(n) for n in ak.to_numpy(a.nFatJetPFCands)])
        perm = ak.values_astype(perm, np.int64)
        out["FatJetPFCand"] = ak.zip(
            {"jetIdx": a.FatJetPFCands_jetIdx[perm], "pfCandIdx": idx[perm]}
        )
        out["PFCand"] = ak.zip({k: a[f"PFCands_{k}"] for k in ("pt", "eta", "phi", "mass")})
    write_nano_tree(dst, out)


@pytest.mark.parametrize("layout", ["pfnano_inline", "nanoaod_v15"])
def test_other_real_layouts_give_the_same_features(ttbar_file, tmp_path, layout):
    dst = tmp_path / f"{layout}.root"
    _copy_events(ttbar_file, dst, layout, np.random.default_rng(0))
    with uproot.open(dst) as f:
        fields = collections_from_branches(f["Events"].keys())
    assert detect_layout(fields, "FatJet").kind == layout
    ref = extract_features({"x": [str(ttbar_file)]}, jet_collection="FatJet", chunksize=64)
    for ex in ("iterative", "dask"):
        got = extract_features(
            {"x": [str(dst)]}, jet_collection="FatJet", executor=ex, chunksize=64
        )
        for k in ("X_raw", "X", "pt", "event", "w", "n_constituents"):
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        assert np.all(got["y"] == -1)  # no truth branch, no metadata label


def _plain_nanoaod(path: Path, n: int = 30, *, data: bool = False) -> Path:
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 4, n)
    tot = counts.sum()
    jets = ak.unflatten(
        ak.zip(
            {
                "pt": rng.uniform(20, 400, tot).astype(np.float32),
                "eta": rng.uniform(-3, 3, tot).astype(np.float32),
                "phi": rng.uniform(-3, 3, tot).astype(np.float32),
                "mass": rng.uniform(0, 50, tot).astype(np.float32),
                "btagDeepFlavB": rng.uniform(0, 1, tot).astype(np.float32),
                "qgl": rng.uniform(0, 1, tot).astype(np.float32),
            }
        ),
        counts,
    )
    arrays = {
        "run": np.ones(n, np.uint32),
        "luminosityBlock": np.ones(n, np.uint32),
        "event": np.arange(1, n + 1, dtype=np.uint64),
        "Jet": jets,
    }
    if not data:
        arrays["genWeight"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return write_nano_tree(path, arrays)


def test_nanoaod_jet_variables(tmp_path, ttbar_file):
    plain = _plain_nanoaod(tmp_path / "nano.root")
    with pytest.raises(MissingBranchError, match="schema nanoaod"):
        extract_features([str(plain)], schema="pfnano")
    res = extract_features([str(plain)], schema="nanoaod", jet_collection="Jet")
    assert res["feature_names"].tolist() == ["pt", "eta", "phi", "mass", "btagDeepFlavB", "qgl"]
    assert res["X_raw"].shape == (len(res["pt"]), 0)
    np.testing.assert_array_equal(res["X"][:, 0], res["pt"])
    with uproot.open(plain) as f:
        a = f["Events"].arrays()
    sel = (a.Jet_pt > 30) & (abs(a.Jet_eta) < 2.4)
    np.testing.assert_array_equal(res["X"][:, 4], ak.to_numpy(ak.flatten(a.Jet_btagDeepFlavB[sel])))
    w_expected = ak.to_numpy(ak.flatten(ak.broadcast_arrays(a.genWeight, a.Jet_pt)[0][sel]))
    np.testing.assert_array_equal(res["w"], w_expected.astype(np.float64))
    with pytest.raises(MissingBranchError, match="Jet_tau1"):
        extract_features([str(plain)], schema="nanoaod", variables=["pt", "tau1"])
    fat = extract_features([str(ttbar_file)], schema="nanoaod", jet_collection="FatJet")
    names = fat["feature_names"].tolist()
    assert {"msoftdrop", "tau1", "tau2", "tau3", "tau21", "tau32"} <= set(names)
    t = fat["X"][:, names.index("tau32")]
    np.testing.assert_allclose(
        t, fat["X"][:, names.index("tau3")] / fat["X"][:, names.index("tau2")]
    )
    dask = extract_features(
        [str(ttbar_file)], schema="nanoaod", jet_collection="FatJet", executor="dask"
    )
    np.testing.assert_array_equal(dask["X"], fat["X"])


def test_collision_data_without_genweight(tmp_path):
    plain = _plain_nanoaod(tmp_path / "data.root", data=True)
    res = extract_features([str(plain)], schema="nanoaod")
    assert np.all(res["w"] == 1.0) and np.all(res["y"] == -1)


def test_missing_collection_and_unreadable_files(tmp_path, ttbar_file):
    plain = _plain_nanoaod(tmp_path / "nano.root")
    with pytest.raises(MissingBranchError, match=r"nano\.root.*FatJet"):
        extract_features([str(plain)], schema="nanoaod", jet_collection="FatJet")
    bad = tmp_path / "bad.root"
    bad.write_bytes(b"this is not a ROOT file" * 10)
    with pytest.raises(UnreadableFileError, match="bad.root"):
        extract_features({"a": [str(ttbar_file), str(bad)]}, jet_collection="FatJet")
    with pytest.warns(RuntimeWarning, match="skipping unreadable"):
        res = extract_features(
            {"a": [str(ttbar_file), str(bad)], "b": [str(tmp_path / "absent.root")]},
            jet_collection="FatJet",
            skip_bad_files=True,
        )
    assert sorted(res["skipped_files"].tolist()) == sorted(
        [str(bad), str(tmp_path / "absent.root")]
    )
    ref = extract_features([str(ttbar_file)], jet_collection="FatJet")
    np.testing.assert_array_equal(res["X"], ref["X"])


def test_empty_files_and_empty_chunks(tmp_path, ttbar_file):
    with uproot.open(ttbar_file) as f:
        a = f["Events"].arrays(entry_stop=0)
    arrays = {k: ak.to_numpy(a[k]) for k in ("run", "luminosityBlock", "event", "genWeight")}
    for coll, fields in (
        ("FatJet", ("pt", "eta", "phi", "mass")),
        ("FatJetPFCands", ("jetIdx", "pFCandsIdx")),
        ("PFCands", ("pt", "eta", "phi")),
    ):
        arrays[coll] = ak.zip({k: a[f"{coll}_{k}"] for k in fields})
    path = write_nano_tree(tmp_path / "empty.root", arrays)
    for ex in ("iterative", "dask"):
        res = extract_features({"e": [str(path)]}, jet_collection="FatJet", executor=ex)
        assert res["X_raw"].shape == (0, 90) and res["X"].shape == (0, 87)
        assert res["dataset"].shape == (0,)
    both = extract_features({"e": [str(path)], "t": [str(ttbar_file)]}, jet_collection="FatJet")
    ref = extract_features({"t": [str(ttbar_file)]}, jet_collection="FatJet")
    np.testing.assert_array_equal(both["X"], ref["X"])
    # a chunk where no jet passes the selection
    none = extract_features([str(ttbar_file)], jet_collection="FatJet", jet_min_pt=1e6)
    assert none["X"].shape == (0, 87) and none["y"].shape == (0,)


def test_kernel_on_zero_events():
    proc = JetConstituentProcessor("FatJet")
    z = ak.Array([[0.0]])[:0]
    zi = ak.values_astype(z, np.int32)
    inputs = {
        "jet_pt": z, "jet_eta": z, "jet_phi": z, "jet_mass": z,
        "event": np.zeros(0, np.uint64),
        "assoc_jet": zi, "assoc_cand": zi,
        "cand_pt": z, "cand_eta": z, "cand_phi": z,
    }  # fmt: skip
    out = proc.compute(inputs, label=None, is_data=True)
    assert out["X_raw"].shape == (0, 90) and out["X"].shape == (0, 87)
    assert out["event"].dtype == np.uint64 and out["region_SR"].dtype == np.bool_
