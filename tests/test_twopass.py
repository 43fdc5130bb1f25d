"""Two-pass flow: VariedScores lookup/save, build_varied_scores, pass-2 histograms."""

from __future__ import annotations

import warnings
from typing import Any

import awkward as ak
import hist
import numpy as np
import pytest
import uproot
from coffea import processor

import advsyst.systematics as S
from advsyst.errors import ConfigError, InputError
from advsyst.workflows.twopass import (
    KEY_FIELDS,
    ScoreStore,
    VariedScores,
    build_varied_scores,
    mirror_output,
    run_pass1,
    run_pass2,
    two_pass,
)

N_EVENTS = 150
PASS2_MIN_PT = 250.0  # tighter than pass 1's 200 GeV: a subset of pass 1's jets
OPTIONS = {
    "fgsm": {"epsilon": 0.02, "units": "range"},
    "shift": {"epsilon": 0.05},
    "conservattack": {
        "budget": "cumulative",
        "units": "range",
        "min_change": 0.01,
        "step": 0.01,
        "num_bins": 30,
        "n_iterations": 2,
        "max_jsd": 0.05,
        "max_dfn": 0.05,
        "seed": 3,
        "progress": False,
    },
}


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fileset(sample_factory) -> dict[str, Any]:
    return {
        "ttbar": {
            "files": {str(sample_factory("ttbar", N_EVENTS, 1)): "Events"},
            "metadata": {"label": 1, "is_data": False},
        },
        "ww": {
            "files": {str(sample_factory("ww", N_EVENTS, 2)): "Events"},
            "metadata": {"label": 0, "is_data": False},
        },
    }


@pytest.fixture(scope="module")
def features(fileset) -> dict[str, np.ndarray]:
    return run_pass1(fileset, chunksize=64)


@pytest.fixture(scope="module")
def model(features):
    from advsyst.models import train_classifier

    m, _ = train_classifier(
        features["X"], features["y"], features["w"], hidden=(16,), epochs=2, progress=False
    )
    return m.eval()


@pytest.fixture(scope="module")
def varied(features, model) -> VariedScores:
    opts = {k: OPTIONS[k] for k in ("fgsm", "shift")}
    return build_varied_scores(features, model, ["fgsm", "shift"], opts)


def _toy(rng: np.random.Generator, n: int = 500, **extra: Any) -> VariedScores:
    keys = np.unique(
        np.column_stack(
            [
                rng.integers(0, 2, n),
                rng.integers(1, 3, n),
                rng.integers(1, 4, n),
                np.where(
                    np.arange(n) % 7 == 0,
                    rng.integers(2**62, 2**64 - 1, n, dtype=np.uint64),
                    rng.integers(1, 50, n).astype(np.uint64),
                ),
                rng.integers(0, 4, n),
            ]
        ).astype(np.uint64),
        axis=0,
    )
    m = len(keys)
    nominal = rng.uniform(0, 1, m)
    return VariedScores(
        dataset=np.where(keys[:, 0] == 0, "ttbar", "ww"),
        run=keys[:, 1],
        luminosityBlock=keys[:, 2],
        event=keys[:, 3],
        jet_index=keys[:, 4],
        nominal=nominal,
        varied={"a": (nominal + 0.1, nominal - 0.1), "b": (nominal * 0.5, nominal * 0.25)},
        flags={"a.moved": rng.uniform(size=m) < 0.5},
        provenance={"note": "toy", "seed": 7},
        **extra,
    )


def _keys(v: VariedScores, idx: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(getattr(v, k)[idx] for k in KEY_FIELDS)


# ---------------------------------------------------------------------- VariedScores
def test_lookup_round_trip_with_shuffled_keys(rng):
    v = _toy(rng)
    assert v.systematics() == ["nominal", "aUp", "aDown", "bUp", "bDown"]
    perm = rng.permutation(len(v))
    got = v.lookup(*_keys(v, perm))
    assert list(got) == v.systematics()
    np.testing.assert_array_equal(got["nominal"], v.nominal[perm])
    np.testing.assert_array_equal(got["aUp"], v.varied["a"][0][perm])
    np.testing.assert_array_equal(got["bDown"], v.varied["b"][1][perm])
    np.testing.assert_array_equal(v.index_of(*_keys(v, perm)), perm)
    np.testing.assert_array_equal(
        v.lookup_flags(*_keys(v, perm))["a.moved"], v.flags["a.moved"][perm]
    )
    # one dataset name for all queried jets, scalars broadcast, awkward inputs
    tt = np.flatnonzero(v.dataset == "ttbar")[::-1]
    ds, run, lumi, event, jet = _keys(v, tt)
    got = v.lookup("ttbar", ak.Array(run), lumi, event, ak.Array(jet))
    np.testing.assert_array_equal(got["nominal"], v.nominal[tt])
    one = v.lookup("ttbar", run[0], lumi[0], event[0], jet[0])
    assert one["nominal"].tolist() == [v.nominal[tt[0]]]
    with pytest.raises(InputError, match="jet_index must be a jagged"):
        v.lookup_jagged("ttbar", run[:1], lumi[:1], event[:1], ak.Array([[{"x": 1}]]))


def test_lookup_jagged_matches_flat(rng):
    v = _toy(rng)
    tt = np.flatnonzero(v.dataset == "ttbar")[:5]
    _, run, lumi, event, jet = _keys(v, tt)
    # one event per queried jet, plus an event without jets
    got = v.lookup_jagged(
        "ttbar",
        np.append(run, 1),
        np.append(lumi, 1),
        np.append(event, 0),
        ak.Array([[j] for j in jet.tolist()] + [[]]),
    )
    assert ak.num(got["aUp"]).tolist() == [1] * 5 + [0]
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(got["aUp"])), v.varied["a"][0][tt])


def test_missing_keys_raise_naming_count_and_first(rng):
    v = _toy(rng)
    idx = np.arange(10)
    ds, run, lumi, event, jet = (np.array(a) for a in _keys(v, idx))
    ds = ds.astype(object)
    ds[2] = "qcd"  # unknown dataset
    jet[5] = 99  # unknown jet
    event[7], jet[7] = np.uint64(2**64 - 1), 3  # most likely unknown
    exists = v.index_of(ds[7], run[7], lumi[7], event[7], jet[7])[0] >= 0
    n_missing = 2 + (not exists)
    with pytest.raises(InputError) as err:
        v.lookup(ds, run, lumi, event, jet)
    msg = str(err.value)
    assert f"{n_missing} of 10 jets have no scores" in msg
    assert f"dataset='qcd', run={int(run[2])}, luminosityBlock={int(lumi[2])}" in msg
    assert f"event={int(event[2])}, jet_index={int(jet[2])}" in msg
    got = v.lookup(ds, run, lumi, event, jet, missing="nan")
    bad = np.isnan(got["nominal"])
    assert bad.sum() == n_missing and bad[2] and bad[5]
    np.testing.assert_array_equal(got["bUp"][~bad], v.varied["b"][0][idx[~bad]])
    with pytest.raises(ConfigError, match="missing"):
        v.lookup(ds, run, lumi, event, jet, missing="zero")


def test_duplicate_and_inconsistent_inputs_are_rejected():
    base = dict(
        dataset=["a", "a"], run=[1, 1], luminosityBlock=[1, 1], event=[5, 5], nominal=[0.1, 0.2]
    )
    with pytest.raises(InputError, match="1 duplicate jet keys; first: .*event=5, jet_index=0"):
        VariedScores(**base, jet_index=[0, 0])
    VariedScores(**base, jet_index=[0, 1])  # different jets of one event
    with pytest.raises(InputError, match="fooUp scores have shape"):
        VariedScores(**base, jet_index=[0, 1], varied={"foo": ([0.1], [0.1])})
    with pytest.raises(InputError, match="NaN"):
        VariedScores(**base, jet_index=[0, 1], varied={"foo": ([0.1, np.nan], [0.1, 0.2])})
    with pytest.raises(InputError, match="event has shape"):
        VariedScores(**{**base, "event": [5]}, jet_index=[0, 1])


def test_save_load_round_trip(rng, tmp_path):
    m = len(_toy(np.random.default_rng(1)))
    extra = {
        "preds": {"nominal": np.arange(m) % 2, "aUp": np.arange(m) % 3 == 0},
        "detector": {"nominal": np.linspace(0, 1, m)},
        "weights": -np.linspace(0.5, 2, m),  # signed weights survive
    }
    v = _toy(np.random.default_rng(1), **extra)
    path = v.save(tmp_path / "scores.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.npz"]  # no temporaries
    w = VariedScores.load(path)
    for k in (*KEY_FIELDS, "nominal"):
        np.testing.assert_array_equal(getattr(w, k), getattr(v, k))
        assert getattr(w, k).dtype == getattr(v, k).dtype
    assert w.systematics() == v.systematics() and set(w.flags) == set(v.flags)
    for name in v.varied:
        for a, b in zip(w.varied[name], v.varied[name]):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(w.flags["a.moved"], v.flags["a.moved"])
    assert w.provenance == v.provenance
    for table in ("preds", "detector"):
        assert set(getattr(w, table)) == set(getattr(v, table)) and getattr(v, table)
        for k, arr in getattr(v, table).items():
            np.testing.assert_array_equal(getattr(w, table)[k], arr)
    np.testing.assert_array_equal(w.weights, v.weights)
    perm = rng.permutation(len(v))
    np.testing.assert_array_equal(w.lookup(*_keys(v, perm))["bUp"], v.varied["b"][0][perm])
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(InputError, match="not a VariedScores file"):
        VariedScores.load(tmp_path / "junk.npz")


# ---------------------------------------------------------------------- pass 1 keys
def test_pass1_records_the_jet_keys(fileset, features):
    path = next(iter(fileset["ttbar"]["files"]))
    with uproot.open(path) as f:
        a = f["Events"].arrays(["run", "luminosityBlock", "event", "FatJet_pt", "FatJet_eta"])
    sel = (a.FatJet_pt > 200) & (abs(a.FatJet_eta) < 2.4)
    tt = features["dataset"] == "ttbar"
    for key in ("run", "luminosityBlock", "event"):
        expect = ak.flatten(ak.broadcast_arrays(a[key], a.FatJet_pt)[0][sel])
        np.testing.assert_array_equal(features[key][tt], ak.to_numpy(expect))
    idx = ak.flatten(ak.local_index(a.FatJet_pt, axis=1)[sel])
    np.testing.assert_array_equal(features["jet_index"][tt], ak.to_numpy(idx))
    assert features["jet_index"].max() > 0  # not only leading jets


# ---------------------------------------------------------------------- attack step
def _context(features) -> S.VariationContext:
    return S.VariationContext(
        y=features["y"],
        weights=features["w"],
        control_mask=features["region_CR"],
        feature_names=[str(n) for n in features["feature_names"]],
    )


@pytest.mark.parametrize("name", ["fgsm", "shift", "conservattack"])
def test_build_varied_scores_equals_direct_scoring(features, model, name):
    X = features["X"]
    v = build_varied_scores(features, model, [name], {name: OPTIONS[name]})
    res = S.run_variation(name, X, model, context=_context(features), **OPTIONS[name])
    nominal, _ = S.model_scores(model, X)
    up, _ = S.model_scores(model, res.up)
    down = S.mirror_scores(nominal, up, 0.0, 1.0) if res.down is None else None
    if down is None:
        down, _ = S.model_scores(model, res.down)
    np.testing.assert_array_equal(v.nominal, nominal)
    np.testing.assert_array_equal(v.varied[name][0], up)
    np.testing.assert_array_equal(v.varied[name][1], down)
    assert np.any(v.varied[name][0] != nominal)
    for k, flag in res.flags.items():
        np.testing.assert_array_equal(v.flags[f"{name}.{k}"], flag)
    assert v.flags["varied"].all() and v.provenance["config"]["variations"] == [name]
    for k in KEY_FIELDS:
        np.testing.assert_array_equal(getattr(v, k), features[k].astype(getattr(v, k).dtype))


def test_vary_mask_keeps_other_jets_nominal(features, model):
    tt = features["dataset"] == "ttbar"
    v = build_varied_scores(features, model, ["fgsm"], {"fgsm": OPTIONS["fgsm"]}, vary_mask=tt)
    sub = {k: (a[tt] if np.shape(a)[:1] == tt.shape else a) for k, a in features.items()}
    direct = build_varied_scores(sub, model, ["fgsm"], {"fgsm": OPTIONS["fgsm"]})
    np.testing.assert_array_equal(v.varied["fgsm"][0][tt], direct.varied["fgsm"][0])
    np.testing.assert_array_equal(v.varied["fgsm"][0][~tt], v.nominal[~tt])
    np.testing.assert_array_equal(v.varied["fgsm"][1][~tt], v.nominal[~tt])
    np.testing.assert_array_equal(v.flags["varied"], tt)


def test_build_varied_scores_bad_inputs(features, model):
    with pytest.raises(ConfigError, match="unknown variation"):
        build_varied_scores(features, model, ["nope"], {})
    with pytest.raises(ConfigError, match="not requested"):
        build_varied_scores(features, model, ["fgsm"], {"shift": {}})
    no_keys = {k: v for k, v in features.items() if k != "jet_index"}
    with pytest.raises(InputError, match=r"lack the jet keys \['jet_index'\]"):
        build_varied_scores(no_keys, model, ["fgsm"], {})


# ---------------------------------------------------------------------- pass 2
class ScoreAnalysis(processor.ProcessorABC):
    """A minimal analysis processor: tighter jet cut, scores looked up, one histogram."""

    def __init__(self, varied: VariedScores) -> None:
        self.varied = varied

    @staticmethod
    def selected(events: Any) -> Any:
        """jet_index of the jets pass 2 selects (tighter than pass 1)."""
        jets = events.FatJet
        good = (jets.pt > PASS2_MIN_PT) & (abs(jets.eta) < 2.4)
        return ak.local_index(jets, axis=1)[good]

    def process(self, events: Any) -> dict[str, Any]:
        idx = self.selected(events)
        extra = (
            {"filename": events.metadata["filename"]} if hasattr(self.varied, "partition") else {}
        )
        scores = self.varied.lookup_jagged(
            events.metadata["dataset"],
            events.run,
            events.luminosityBlock,
            events.event,
            idx,
            **extra,
        )
        w_event = np.asarray(events.genWeight, float) * (1 + 0.25 * (events.event % 3))
        w = ak.to_numpy(ak.flatten(ak.broadcast_arrays(w_event, idx)[0]))
        h = hist.Hist(
            hist.axis.StrCategory([], growth=True, name="dataset"),
            hist.axis.StrCategory([], growth=True, name="systematic"),
            hist.axis.Regular(10, 0.0, 1.0, name="score"),
            storage=hist.storage.Weight(),
        )
        for syst, s in scores.items():
            h.fill(
                dataset=events.metadata["dataset"],
                systematic=syst,
                score=ak.to_numpy(ak.flatten(s)),
                weight=w,
            )
        return {"hist": h, "jets": len(w)}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def _file_jets(spec: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-jet event columns and jet_index of pass 2's jets, read straight from the file."""
    with uproot.open(next(iter(spec["files"]))) as f:
        a = f["Events"].arrays(
            ["run", "luminosityBlock", "event", "genWeight", "FatJet_pt", "FatJet_eta"]
        )
    good = (a.FatJet_pt > PASS2_MIN_PT) & (abs(a.FatJet_eta) < 2.4)
    per_jet = {
        k: ak.to_numpy(ak.flatten(ak.broadcast_arrays(a[k], a.FatJet_pt)[0][good]))
        for k in ("run", "luminosityBlock", "event", "genWeight")
    }
    return per_jet, ak.to_numpy(ak.flatten(ak.local_index(a.FatJet_pt, axis=1)[good]))


def _direct_hist(fileset, varied: VariedScores) -> dict[tuple[str, str], np.ndarray]:
    """The expected pass-2 content, straight from the files and the lookup."""
    out = {}
    for ds, spec in fileset.items():
        per_jet, idx = _file_jets(spec)
        scores = varied.lookup(
            ds, per_jet["run"], per_jet["luminosityBlock"], per_jet["event"], idx
        )
        w = per_jet["genWeight"] * (1 + 0.25 * (per_jet["event"] % 3))
        for syst, s in scores.items():
            out[ds, syst] = np.histogram(s, bins=10, range=(0.0, 1.0), weights=w)[0]
    return out


def test_pass2_histogram_equals_direct_numpy_histogram(fileset, varied):
    out = run_pass2(fileset, ScoreAnalysis(varied), executor="iterative", chunksize=40)
    h = out["hist"]
    expected = _direct_hist(fileset, varied)
    assert set(h.axes["systematic"]) == set(varied.systematics())
    for (ds, syst), counts in expected.items():
        np.testing.assert_allclose(
            h[{"dataset": ds, "systematic": syst}].values(), counts, rtol=1e-12, err_msg=syst
        )
    assert 0 < out["jets"] < len(varied)  # a strict subset of pass 1's jets


def test_iterative_and_futures_give_identical_histograms(fileset, varied):
    runs = {
        ex: run_pass2(fileset, ScoreAnalysis(varied), executor=ex, chunksize=40, workers=2)["hist"]
        for ex in ("iterative", "futures")
    }
    a, b = runs["iterative"], runs["futures"]
    for ds in a.axes["dataset"]:
        for syst in a.axes["systematic"]:
            va = a[{"dataset": ds, "systematic": syst}].view()
            vb = b[{"dataset": ds, "systematic": syst}].view()
            np.testing.assert_array_equal(va["value"], vb["value"])
            np.testing.assert_array_equal(va["variance"], vb["variance"])


def test_two_pass_convenience_and_collision_data(fileset, model, tmp_path):
    fs = {**fileset, "ww": {**fileset["ww"], "metadata": {"label": 0, "is_data": True}}}
    out, v = two_pass(
        fs,
        model,
        ["fgsm"],
        {"fgsm": OPTIONS["fgsm"]},
        analysis_processor_factory=ScoreAnalysis,
        executor="iterative",
        chunksize=64,
        save_scores=tmp_path / "v.npz",
        return_scores=True,
    )
    ww = v.dataset == "ww"
    np.testing.assert_array_equal(v.flags["varied"], ~ww)
    np.testing.assert_array_equal(v.varied["fgsm"][0][ww], v.nominal[ww])
    assert np.any(v.varied["fgsm"][0][~ww] != v.nominal[~ww])
    expected = _direct_hist(fs, v)
    for (ds, syst), counts in expected.items():
        np.testing.assert_allclose(
            out["hist"][{"dataset": ds, "systematic": syst}].values(), counts
        )
    np.testing.assert_array_equal(VariedScores.load(tmp_path / "v.npz").nominal, v.nominal)
    with pytest.raises(ConfigError, match="executor"):
        two_pass(fs, model, ["fgsm"], analysis_processor_factory=ScoreAnalysis, executor="spark")


def test_pass2_selection_looser_than_pass1_names_the_missing_jet(fileset, varied):
    class Loose(ScoreAnalysis):
        def process(self, events: Any) -> dict[str, Any]:
            idx = ak.local_index(events.FatJet, axis=1)  # every jet, also below 200 GeV
            self.varied.lookup_jagged(
                events.metadata["dataset"], events.run, events.luminosityBlock, events.event, idx
            )
            return {}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=r"jets have no scores; first missing: \(dataset="):
            run_pass2(fileset, Loose(varied), executor="iterative")


def test_two_pass_on_dask_matches_iterative(fileset, model):
    """executor="dask": pass 1 via apply_to_fileset and pass 2 via DaskExecutor, both on a
    temporary LocalCluster, give the iterative executor's histogram."""
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    try:
        runs = {
            ex: two_pass(
                fileset,
                model,
                ["fgsm"],
                {"fgsm": OPTIONS["fgsm"]},
                analysis_processor_factory=ScoreAnalysis,
                executor=ex,
                chunksize=64,
                workers=2,
            )["hist"]
            for ex in ("iterative", "dask")
        }
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    a, b = runs["iterative"], runs["dask"]
    assert set(a.axes["dataset"]) == set(b.axes["dataset"]) == {"ttbar", "ww"}
    assert set(a.axes["systematic"]) == set(b.axes["systematic"])
    for ds in a.axes["dataset"]:
        for syst in a.axes["systematic"]:
            sel = {"dataset": ds, "systematic": syst}
            np.testing.assert_array_equal(a[sel].values(), b[sel].values())
            np.testing.assert_array_equal(a[sel].variances(), b[sel].variances())


# ---------------------------------------------------------------------- tables
def _detector(X: np.ndarray) -> np.ndarray:
    """A stand-in adversarial detector: a fixed logistic function of two inputs."""
    return 1.0 / (1.0 + np.exp(-(3.0 * X[:, 0] - 2.0 * X[:, 5])))


@pytest.mark.parametrize("variation", ["fgsm", "shift"])
def test_uncertainty_table_and_efficiencies_from_two_passes_equal_numpy_api(
    fileset, sample_factory, model, variation
):
    """VariedScores -> outcomes -> build_uncertainty_table gives the NumPy API's numbers
    (evaluate_dataset + detector_efficiency on the same jets), data excluded from the
    outcomes and used for the data-vs-simulation efficiency."""
    fs = {
        **fileset,
        "data": {
            "files": {str(sample_factory("mix", N_EVENTS, 3, pseudo=True)): "Events"},
            "metadata": {"is_data": True},
        },
    }
    f = run_pass1(fs, chunksize=64, progress=False)
    data = f["dataset"] == "data"
    ctx = S.VariationContext(
        y=f["y"],
        weights=f["w"] * (1 + 0.5 * (f["event"] % 2)),  # non-trivial weights
        control_mask=f["region_CR"],
        feature_names=[str(n) for n in f["feature_names"]],
        detector=_detector,
        detector_threshold=0.4,
    )
    opts = {variation: OPTIONS[variation]}
    v = build_varied_scores(f, model, [variation], opts, context=ctx, vary_mask=~data,
                            data_mask=data)  # fmt: skip
    got = S.build_uncertainty_table(v.outcomes(), budget=0.02, detector=v.detector_efficiency())
    # the NumPy API on the simulated jets
    sim = ~data
    sub = S.VariationContext(
        y=f["y"][sim], weights=ctx.weights[sim], control_mask=f["region_CR"][sim],
        feature_names=ctx.feature_names, detector=_detector, detector_threshold=0.4,
    )  # fmt: skip
    _, outcomes = S.evaluate_dataset(
        f["X"][sim], model, [variation], sub, opts,
        processes=f["dataset"][sim],
        region_masks={"signal": f["region_SR"][sim], "control": f["region_CR"][sim]},
        min_events=0,
    )  # fmt: skip
    det = S.detector_efficiency(
        _detector(f["X"][sim]), 0.4, ctx.weights[sim], _detector(f["X"][data]), ctx.weights[data]
    )
    ref = S.build_uncertainty_table(outcomes, budget=0.02, detector=det)
    assert len(got.rows) == len(ref.rows) == 4  # 2 processes x 2 regions
    rename = {"signal": "SR", "control": "CR"}  # the histogram's names for pass 1's regions
    key = lambda r: (r.process, rename.get(r.region, r.region))  # noqa: E731
    for a, b in zip(sorted(got.rows, key=key), sorted(ref.rows, key=key)):
        da, db = a.to_dict(), {**b.to_dict(), "region": rename[b.region]}
        assert da.keys() == db.keys()
        for k in da:
            if isinstance(da[k], float):
                np.testing.assert_allclose(da[k], db[k], rtol=1e-12, atol=0, err_msg=k)
            else:
                assert da[k] == db[k], k
    assert got.rows[0].detector_eff_data == det.data.value and det.data is not None
    assert any(r.fooling_ratio > 0 for r in got.rows)
    # the record survives save/load
    assert np.all(v.flags[f"{variation}.detected"][data] == 0)
    assert set(v.outcomes()) == {"ttbar", "ww"}


def test_outcomes_need_predictions(rng):
    with pytest.raises(InputError, match="carry no predicted classes"):
        _toy(rng).outcomes()
    with pytest.raises(InputError, match="no detector scores"):
        _toy(rng).detector_efficiency()


# ---------------------------------------------------------------------- pass 2, dask mode
class DualModeAnalysis(processor.ProcessorABC):
    """One analysis for coffea's eager (Runner) and dask (apply_to_fileset) modes."""

    def __init__(self, varied: VariedScores, datasets: list[str]) -> None:
        self.varied = varied
        self.datasets = datasets

    def process(self, events: Any) -> dict[str, Any]:
        import dask_awkward as dak
        import hist.dask

        lazy = isinstance(events, dak.Array)
        lib = dak if lazy else ak
        jets = events.FatJet
        good = (jets.pt > PASS2_MIN_PT) & (abs(jets.eta) < 2.4)
        idx = lib.local_index(jets, axis=1)[good]
        scores = self.varied.lookup_jagged(
            events.metadata["dataset"], events.run, events.luminosityBlock, events.event, idx,
            jets=jets[good],
        )  # fmt: skip
        w = lib.flatten(idx * 0 + events.genWeight * (1 + 0.25 * (events.event % 3)))
        h = (hist.dask.Hist if lazy else hist.Hist)(
            hist.axis.StrCategory(self.datasets, name="dataset"),
            hist.axis.StrCategory(self.varied.systematics(), name="systematic"),
            hist.axis.Regular(10, 0.0, 1.0, name="score"),
            storage=hist.storage.Weight(),
        )
        for syst in self.varied.systematics():
            h.fill(
                dataset=events.metadata["dataset"],
                systematic=syst,
                score=lib.flatten(scores[syst]),
                weight=w,
            )
        return {"hist": h}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def test_pass2_dask_mode_equals_eager_mode_and_direct_numpy(fileset, varied):
    proc = DualModeAnalysis(varied, list(fileset))
    eager = run_pass2(fileset, proc, chunksize=40, progress=False)["hist"]
    lazy = run_pass2(fileset, proc, chunksize=40, mode="dask", workers=2)["hist"]
    assert type(lazy) is type(eager)
    np.testing.assert_array_equal(lazy.view(flow=True), eager.view(flow=True))
    expected = _direct_hist(fileset, varied)
    for (ds, syst), counts in expected.items():
        np.testing.assert_allclose(
            lazy[{"dataset": ds, "systematic": syst}].values(), counts, rtol=1e-12
        )
    assert np.any(lazy.values() > 0)


def test_lookup_is_lazy_and_names_the_cut_in_dask_mode(fileset, varied):
    """The lookup builds a dask graph (nothing computed, no ak.to_numpy on lazy arrays);
    a looser pass-2 cut fails at compute time naming jet_min_pt."""
    import dask_awkward as dak

    class Loose(DualModeAnalysis):
        def process(self, events: Any) -> dict[str, Any]:
            jets = events.FatJet
            good = jets.pt > 150.0  # looser than pass 1's 200 GeV
            idx = dak.local_index(jets, axis=1)[good]
            s = self.varied.lookup_jagged(
                events.metadata["dataset"], events.run, events.luminosityBlock, events.event,
                idx, jets=jets[good],
            )  # fmt: skip
            assert isinstance(s["nominal"], dak.Array)
            return {"n": dak.sum(dak.num(s["nominal"], axis=1))}

    with pytest.raises(InputError, match=r"Loosen jet_min_pt: pass 2 selected a jet with pt ="):
        run_pass2(fileset, Loose(varied, list(fileset)), mode="dask", chunksize=80)


def test_looser_pass2_cut_is_named_in_eager_mode(fileset, varied):
    class Loose(ScoreAnalysis):
        def process(self, events: Any) -> dict[str, Any]:
            jets = events.FatJet
            good = (jets.pt > 100.0) & (abs(jets.eta) < 2.4)
            idx = ak.local_index(jets, axis=1)[good]
            self.varied.lookup_jagged(
                events.metadata["dataset"], events.run, events.luminosityBlock, events.event,
                idx, jets=jets[good],
            )  # fmt: skip
            return {}

    with pytest.raises(InputError) as err:
        run_pass2(fileset, Loose(varied), chunksize=200, progress=False)
    msg = str(err.value)
    assert "Pass 1 kept FatJet jets with pt > 200 GeV and |eta| < 2.4" in msg
    assert "Loosen jet_min_pt" in msg and "jet_max_abs_eta" not in msg.split("Loosen")[1]


def test_two_pass_skips_bad_files_in_both_passes(fileset, model, tmp_path):
    """A broken file: pass 1 skips and reports it, pass 2 leaves it out (no missing-key
    crash), and the histogram equals the run without it."""
    junk = tmp_path / "broken.root"
    junk.write_bytes(b"not a root file")
    ww = fileset["ww"]
    fs = {**fileset, "ww": {**ww, "files": {**ww["files"], str(junk): "Events"}}}
    kw = dict(analysis_processor_factory=ScoreAnalysis, chunksize=80, progress=False,
              return_scores=True)  # fmt: skip
    with pytest.warns(RuntimeWarning, match="skipping unreadable file"):
        out, v = two_pass(fs, model, ["shift"], {"shift": OPTIONS["shift"]},
                          skip_bad_files=True, **kw)  # fmt: skip
    assert v.provenance["pass1"]["skipped_files"] == [str(junk)]
    ref, _ = two_pass(fileset, model, ["shift"], {"shift": OPTIONS["shift"]}, **kw)
    np.testing.assert_array_equal(out["hist"].view(), ref["hist"].view())
    assert out["jets"] == ref["jets"] > 0


# ---------------------------------------------------------------------- partitioned store
class StoreAnalysis(ScoreAnalysis):
    """ScoreAnalysis reading a ScoreStore: each chunk loads its own file's partition."""

    def process(self, events: Any) -> dict[str, Any]:
        out = super().process(events)
        # the chunk's lookup loaded its own file's partition, last in the cache
        assert list(self.varied._cache)[-1] == (
            events.metadata["dataset"],
            events.metadata["filename"],
        )
        return out


@pytest.fixture(scope="module")
def two_file_store(fileset, sample_factory, tmp_path_factory):
    """A fileset whose ttbar dataset has two files, its scores and their ScoreStore."""
    # two files in one dataset, so that partitions are really per file
    fs = {**fileset, "ttbar": {**fileset["ttbar"], "files": {
        **fileset["ttbar"]["files"], str(sample_factory("ttbar", 60, 9, event_offset=10_000)): "Events"}}}  # fmt: skip
    f = run_pass1(fs, chunksize=64, progress=False)
    v = build_varied_scores(f, _model_for(f), ["shift"], {"shift": OPTIONS["shift"]})
    return fs, v, ScoreStore.write(v, fs, tmp_path_factory.mktemp("two_file") / "store")


def test_score_store_partitions_by_file_and_gives_the_same_histogram(two_file_store, tmp_path):
    import pickle

    fs, v, store = two_file_store
    store = ScoreStore(store.directory)  # a fresh handle: empty cache
    assert sorted(p.name for p in store.directory.iterdir()) == [
        "index.json", "part00000.npz", "part00001.npz", "part00002.npz"]  # fmt: skip
    # the handle is small whatever the number of jets, and never ships a loaded partition
    store.partition("ttbar")
    size = len(pickle.dumps(store))
    assert size < 4000 < len(pickle.dumps(v)) and pickle.loads(pickle.dumps(store))._cache == {}
    # per-file partitions hold exactly the jets of that file's events
    files = list(fs["ttbar"]["files"])
    for path in files:
        part = store.partition("ttbar", path)
        with uproot.open(path) as fh:
            events = set(fh["Events"]["event"].array(library="np").tolist())
        assert set(part.event.tolist()) <= events and len(part) > 0
        assert list(store._cache)[-1] == ("ttbar", path)
    assert sum(len(store.partition("ttbar", p)) for p in files) == int(np.sum(v.dataset == "ttbar"))
    # pass 2 through the store equals pass 2 through the in-memory scores
    a = run_pass2(fs, ScoreAnalysis(v), chunksize=40, progress=False)
    b = run_pass2(fs, StoreAnalysis(store), chunksize=40, progress=False)
    np.testing.assert_array_equal(a["hist"].view(), b["hist"].view())
    with pytest.raises(InputError, match="no scores for file"):
        store.partition("ttbar", "elsewhere.root")
    with pytest.raises(InputError, match="not a ScoreStore"):
        ScoreStore(tmp_path)


def test_score_store_dask_mode_loads_only_each_chunks_own_file(two_file_store, monkeypatch):
    """coffea's dask mode: every chunk loads the partition of its own file, never the
    dataset's other files, and the histogram equals the eager run on the in-memory
    scores."""
    fs, v, store = two_file_store
    loads = []
    orig = ScoreStore._load

    def counting(self, dataset, names):
        loads.append((dataset, tuple(names)))
        return orig(self, dataset, names)

    monkeypatch.setattr(ScoreStore, "_load", counting)
    store = ScoreStore(store.directory, cache_size=1)
    ttbar = list(fs["ttbar"]["files"])
    assert all(store.ranges["ttbar"][f] is not None for f in ttbar)
    lazy = run_pass2(fs, DualModeAnalysis(store, list(fs)), chunksize=40, mode="dask",
                     workers=2)["hist"]  # fmt: skip
    eager = run_pass2(fs, DualModeAnalysis(v, list(fs)), chunksize=40, progress=False)["hist"]
    np.testing.assert_array_equal(lazy.view(flow=True), eager.view(flow=True))
    assert loads and all(len(names) == 1 for _, names in loads), loads
    by_ds = {ds: {n for d2, names in loads if d2 == ds for n in names} for ds in fs}
    assert by_ds["ttbar"] == {store.partitions["ttbar"][f] for f in ttbar}
    # eager lookups without a filename locate the chunk's file the same way
    loads.clear()
    with uproot.open(ttbar[1]) as fh:
        a = fh["Events"].arrays(["run", "luminosityBlock", "event"], library="np")
    assert store.files_of("ttbar", a["run"], a["luminosityBlock"], a["event"]) == [ttbar[1]]
    assert store.files_of("ttbar", a["run"][:3], a["luminosityBlock"][:3], a["event"][:3]) == [
        ttbar[1]
    ]


def _model_for(f):
    from advsyst.models import train_classifier

    m, _ = train_classifier(f["X"], f["y"], f["w"], hidden=(8,), epochs=1, progress=False)
    return m.eval()


# ---------------------------------------------------------------------- down templates
class TemplateAnalysis(ScoreAnalysis):
    """A template histogram (process / systematic / score) on a fixed, non-growing
    systematic axis listing what the lookup gives, as an analyst would write it."""

    def process(self, events: Any) -> dict[str, Any]:
        idx = self.selected(events)
        ds = events.metadata["dataset"]
        scores = self.varied.lookup_jagged(
            ds, events.run, events.luminosityBlock, events.event, idx
        )
        w = ak.to_numpy(ak.flatten(ak.broadcast_arrays(events.genWeight, idx)[0]))
        h = hist.Hist(
            hist.axis.StrCategory(["ttbar", "ww"], name="process"),
            hist.axis.StrCategory(self.varied.systematics(), name="systematic"),
            hist.axis.Regular(8, 0.0, 1.0, name="score"),
            storage=hist.storage.Weight(),
        )
        for syst in self.varied.systematics():
            s = ak.to_numpy(ak.flatten(scores[syst])) * (1 - 1e-12)
            h.fill(process=ds, systematic=syst, score=s, weight=w)
        return {"nested": {"templates": h}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def _symmetrize(nom: np.ndarray, up: np.ndarray) -> np.ndarray:
    """cabinetry's one-sided Symmetrize, written out independently for the test."""
    r = up.sum() / nom.sum()
    raw = np.maximum(2 * nom - up / r, 0.0)
    return (2 - r) * raw * nom.sum() / raw.sum()


def test_one_sided_down_is_the_template_mirror_by_default(fileset, model):
    """Default: fgsm (no down features) is one-sided -- pass 2 fills fgsmUp only and the
    merged template's fgsmDown is cabinetry's Symmetrize of it; shift keeps its own Down."""
    opts = {k: OPTIONS[k] for k in ("fgsm", "shift")}
    out, v = two_pass(
        fileset, model, ["fgsm", "shift"], opts, analysis_processor_factory=TemplateAnalysis,
        chunksize=64, return_scores=True, progress=False,
    )  # fmt: skip
    assert v.one_sided == ("fgsm",)
    assert v.systematics() == ["nominal", "fgsmUp", "shiftUp", "shiftDown"]
    keys = tuple(getattr(v, k) for k in KEY_FIELDS)
    assert list(v.lookup(*keys)) == v.systematics()  # no per-jet fgsmDown handed out
    h = out["nested"]["templates"]
    assert list(h.axes["systematic"]) == [*v.systematics(), "fgsmDown"]
    for ds, spec in fileset.items():
        per_jet, idx = _file_jets(spec)
        rows = v.index_of(ds, per_jet["run"], per_jet["luminosityBlock"], per_jet["event"], idx)
        assert (rows >= 0).all()

        def hist_of(s, rows=rows, w=per_jet["genWeight"]):
            return np.histogram(s[rows] * (1 - 1e-12), bins=8, range=(0, 1), weights=w)[0]

        nom, up = hist_of(v.nominal), hist_of(v.varied["fgsm"][0])
        sel = {"process": ds}
        np.testing.assert_allclose(h[{**sel, "systematic": "nominal"}].values(), nom)
        np.testing.assert_allclose(h[{**sel, "systematic": "fgsmUp"}].values(), up)
        np.testing.assert_allclose(
            h[{**sel, "systematic": "fgsmDown"}].values(), _symmetrize(nom, up), rtol=1e-12
        )
        np.testing.assert_allclose(
            h[{**sel, "systematic": "shiftDown"}].values(), hist_of(v.varied["shift"][1])
        )
        assert not np.allclose(up, nom)  # the variation did something
    # the per-jet mirror stays available, as an option
    w = build_varied_scores(run_pass1(fileset, chunksize=64, progress=False), model,
                            ["fgsm"], {"fgsm": OPTIONS["fgsm"]}, down="per-jet")  # fmt: skip
    assert w.one_sided == () and w.systematics() == ["nominal", "fgsmUp", "fgsmDown"]
    got = w.lookup(*(getattr(w, k) for k in KEY_FIELDS))
    np.testing.assert_array_equal(
        got["fgsmDown"], np.clip(2 * w.nominal - w.varied["fgsm"][0], 0.0, 1.0)
    )
    with pytest.raises(ConfigError, match="down must be one of"):
        build_varied_scores({}, model, ["fgsm"], down="mirror")


def test_one_sided_survives_save_load_and_store(varied, fileset, tmp_path, caplog):
    assert varied.one_sided == ("fgsm",)
    back = VariedScores.load(varied.save(tmp_path / "v.npz"))
    assert back.one_sided == ("fgsm",) and back.systematics() == varied.systematics()
    st = ScoreStore.write(varied, fileset, tmp_path / "store")
    assert st.one_sided == ["fgsm"] and st.systematics() == varied.systematics()
    part = st.partition("ttbar")
    assert part.one_sided == ("fgsm",) and part.systematics() == varied.systematics()
    # a histogram without a process axis is left alone, with a warning naming the fix
    h = hist.Hist(hist.axis.StrCategory(["nominal", "fgsmUp"], name="systematic"),
                  hist.axis.Regular(2, 0, 1, name="score"), storage=hist.storage.Weight())  # fmt: skip
    with caplog.at_level("WARNING"):
        assert mirror_output({"h": h}, varied)["h"] is h
    assert "mirror_templates" in caplog.text
