"""Histogram filling, mirrored down templates, evaluate_variations and the builder."""

from __future__ import annotations

import hist
import numpy as np
import pytest
import torch

import advsyst.systematics as S
from advsyst.errors import ConfigError, InputError, ModelOutputError

W_MODEL = np.array([1.5, -1.0, 0.5])


def linear_model() -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.tensor([W_MODEL.tolist()])
        m[0].bias[:] = 0.0
    return m


def np_scores(X):
    return 1.0 / (1.0 + np.exp(-(X @ W_MODEL)))


def _col_shift(X, model, *, context, amount=0.5):
    up = X.copy()
    up[:, 0] += amount
    down = X.copy()
    down[:, 0] -= amount
    return S.VariationResult(up=up, down=down)


def _col_shift_up_only(X, model, *, context, amount=0.5):
    up = X.copy()
    up[:, 0] += amount
    return S.VariationResult(up=up, flags={"moved": np.ones(len(X), bool)})


@pytest.fixture
def variations():
    S.register_variation("tcol", _col_shift, overwrite=True)
    S.register_variation("tcolup", _col_shift_up_only, overwrite=True)
    yield
    S.unregister("tcol")
    S.unregister("tcolup")


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 3))
    w = rng.uniform(0.5, 1.5, 300)
    masks = {"control": X[:, 2] < 0, "signal": X[:, 2] >= 0}
    return X, w, masks


def _np_hist(score, w, edges):
    """Brute-force values/variances, upper edge counted in the last bin."""
    s = np.where(score == edges[-1], np.nextafter(edges[-1], 0), score)
    v, _ = np.histogram(s, edges, weights=w)
    var, _ = np.histogram(s, edges, weights=w**2)
    return v, var


def test_make_hist_axes():
    h = S.make_hist()
    assert [a.name for a in h.axes] == ["process", "region", "systematic", "score"]
    assert list(h.axes["region"]) == ["control", "signal"]
    assert h.axes["score"].size == 20 and h.axes["score"].edges[[0, -1]].tolist() == [0, 1]
    assert h.storage_type is hist.storage.Weight
    h2 = S.make_hist(hist.axis.Regular(5, 0, 1, name="x"), variable_label="BDT")
    assert h2.axes["score"].size == 5 and h2.axes["score"].label == "BDT"
    assert isinstance(h2.axes["score"], hist.axis.Regular)


def test_fill_variations_brute_force():
    rng = np.random.default_rng(0)
    n = 200
    nom = rng.uniform(0, 1, n)
    nom[:3] = [0.0, 1.0, 0.5]  # edges: 1.0 goes into the last bin
    up = np.clip(nom + rng.normal(0, 0.1, n), 0, 1)
    dn = rng.uniform(0, 1, n)
    w = rng.uniform(0.5, 2, n)
    masks = {"control": nom < 0.6, "signal": nom >= 0.6}
    h = S.make_hist()
    S.fill_variations(
        h,
        process="p",
        region_masks=masks,
        nominal_score=nom,
        varied_scores={"a": (up, dn), "b": (up, None)},
        weights=w,
        down="per-jet",
    )
    edges = h.axes["score"].edges
    mirror = np.clip(2 * nom - up, 0, 1)
    for region, m in masks.items():
        for syst, s in [
            ("nominal", nom),
            ("aUp", up),
            ("aDown", dn),
            ("bUp", up),
            ("bDown", mirror),
        ]:
            sub = h[{"process": "p", "region": region, "systematic": syst}]
            v, var = _np_hist(s[m], w[m], edges)
            np.testing.assert_allclose(sub.values(), v, rtol=1e-12)
            np.testing.assert_allclose(sub.variances(), var, rtol=1e-12)
            assert sub.values(flow=True)[[0, -1]].tolist() == [0, 0]


def _template_mirror(nom, up):
    """Brute force, written out: cabinetry's Symmetrize with a floor at 0."""
    r = up.sum() / nom.sum()
    shape = np.array([max(2 * n - u / r, 0.0) for n, u in zip(nom, up)])
    shape = shape * nom.sum() / shape.sum()
    return (2 - r) * shape


def test_template_mirror_is_the_default_and_does_not_pile_up():
    """Regression: the per-jet mirror piled the down template into the first bin."""
    rng = np.random.default_rng(3)
    n = 4000
    nom = rng.uniform(0, 1, n)
    up = np.clip(nom + np.where(nom < 0.5, 0.3, -0.3), 0, 1)  # the attack pulls to the middle
    w = rng.uniform(0.5, 2, n)
    masks = {"control": nom < 0.5, "signal": nom >= 0.5}
    h = S.make_hist()
    S.fill_variations(
        h, process="p", region_masks=masks, nominal_score=nom,
        varied_scores={"adv": (up, None)}, weights=w,
    )  # fmt: skip
    h_jet = S.make_hist()
    S.fill_variations(
        h_jet, process="p", region_masks=masks, nominal_score=nom,
        varied_scores={"adv": (up, None)}, weights=w, down="per-jet",
    )  # fmt: skip
    edges = h.axes["score"].edges
    for region, m in masks.items():
        nv, nvar = _np_hist(nom[m], w[m], edges)
        uv, _ = _np_hist(up[m], w[m], edges)
        sel = {"process": "p", "region": region, "systematic": "advDown"}
        down = h[sel]
        np.testing.assert_allclose(down.values(), _template_mirror(nv, uv), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(down.variances(), nvar, rtol=1e-12)
        assert down.values().sum() == pytest.approx(nv.sum(), rel=1e-12)  # r = 1: yield kept
    # per-jet: every jet pushed up from below 0.3 lands in the first bin (6 bins' worth)
    first = {"process": "p", "region": "control", "systematic": "advDown"}
    nom_first = h[{"process": "p", "region": "control", "systematic": "nominal"}].values()[0]
    assert h_jet[first].values()[0] > 4 * nom_first
    assert h[first].values()[0] <= 2 * nom_first  # all of bin 0 left: at most its mirror 2 N0


def test_mirror_templates_general_normalisation_and_channels():
    """r != 1, a second channel axis and a non-score observable, against brute force."""
    rng = np.random.default_rng(5)
    h = hist.Hist(
        hist.axis.StrCategory([], growth=True, name="process"),
        hist.axis.StrCategory(["a", "b"], name="region"),
        hist.axis.IntCategory([2017, 2018], name="year"),
        hist.axis.StrCategory([], growth=True, name="systematic"),
        hist.axis.Regular(8, 50, 250, name="mass"),
        storage=hist.storage.Weight(),
    )
    for region in ("a", "b"):
        for year in (2017, 2018):
            m = rng.normal(150, 40, 500)
            w = rng.uniform(0.5, 1.5, 500)
            h.fill(process="tt", region=region, year=year, systematic="nominal", mass=m, weight=w)
            h.fill(
                process="tt", region=region, year=year, systematic="xUp", mass=m * 1.05,
                weight=w * 1.2,
            )  # fmt: skip
    S.mirror_templates(h, ["x"])
    for region in ("a", "b"):
        for year in (2017, 2018):
            sel = {"process": "tt", "region": region, "year": hist.loc(year)}
            nv = h[{**sel, "systematic": "nominal"}].values(flow=True)
            uv = h[{**sel, "systematic": "xUp"}].values(flow=True)
            dv = h[{**sel, "systematic": "xDown"}].values(flow=True)
            np.testing.assert_allclose(dv, _template_mirror(nv, uv), rtol=1e-10, atol=1e-10)
            assert dv.sum() / nv.sum() == pytest.approx(2 - uv.sum() / nv.sum(), rel=1e-12)
    h.fill(process="data", region="a", year=2017, systematic="nominal", mass=[100.0] * 5)
    S.mirror_templates(h, ["x"])  # data has no xUp: left alone, no error
    assert h[{"process": "data", "systematic": "xDown"}].sum(flow=True).value == 0
    before = h.view(flow=True).copy()
    S.mirror_templates(h, ["x"])  # idempotent
    np.testing.assert_array_equal(h.view(flow=True), before)
    bad = h.copy()
    bad.fill(process="tt", region="a", year=2017, systematic="xUp", mass=[100.0], weight=[1e6])
    with pytest.raises(InputError, match="up/nominal yield ratio"):
        S.mirror_templates(bad, ["x"])
    with pytest.raises(InputError, match="no 'yUp' template"):
        S.mirror_templates(h, ["y"])
    with pytest.raises(ConfigError, match="down must be one of"):
        S.fill_variations(
            S.make_hist(), process="p", region_masks={"control": np.ones(20, bool)},
            nominal_score=np.full(20, 0.5), varied_scores={}, down="mirror",
        )  # fmt: skip


def test_mirror_scores():
    nom = np.array([0.2, 0.5, 0.9, 0.05])
    up = np.array([0.3, 0.4, 0.6, 0.9])
    np.testing.assert_allclose(S.mirror_scores(nom, up, 0, 1), [0.1, 0.6, 1.0, 0.0])


def test_fill_errors():
    h = S.make_hist()
    n = 20
    good = dict(nominal_score=np.full(n, 0.5), varied_scores={}, weights=None)
    masks = {"control": np.ones(n, bool)}
    with pytest.raises(InputError, match="region 'signal' of process 'p' has 3 events"):
        S.fill_variations(h, process="p", region_masks={"signal": np.arange(n) < 3}, **good)
    with pytest.raises(InputError, match="not a category"):
        S.fill_variations(h, process="p", region_masks={"elsewhere": np.ones(n, bool)}, **good)
    bad = np.full(n, 0.5)
    bad[4] = np.nan
    with pytest.raises(InputError, match="aUp scores of process 'p' contain 1 NaN"):
        S.fill_variations(
            h,
            process="p",
            region_masks=masks,
            nominal_score=np.full(n, 0.5),
            varied_scores={"a": (bad, None)},
        )
    with pytest.raises(InputError, match="nominal scores of process 'p' contain"):
        S.fill_variations(h, process="p", region_masks=masks, nominal_score=bad, varied_scores={})
    with pytest.raises(InputError, match="shape"):
        S.fill_variations(h, process="p", region_masks={"control": np.ones(n + 1, bool)}, **good)
    with pytest.raises(InputError, match="weights of process 'p'"):
        S.fill_variations(
            h, process="p", region_masks=masks, nominal_score=np.full(n, 0.5),
            varied_scores={}, weights=np.ones(3),
        )  # fmt: skip
    with pytest.raises(ConfigError, match="process name"):
        S.fill_variations(h, process="", region_masks=masks, **good)
    # nothing was filled by the failing calls
    assert h.sum().value == 0


def test_low_stats_warn_opt_in():
    h = S.make_hist()
    n = 20
    with pytest.warns(S.LowStatisticsWarning, match="region 'signal' of process 'p'"):
        S.fill_variations(
            h,
            process="p",
            region_masks={"signal": np.arange(n) < 3},
            nominal_score=np.full(n, 0.5),
            varied_scores={},
            on_low_stats="warn",
        )
    assert h.sum().value == 3


def test_evaluate_variations_brute_force(variations, data):
    X, w, masks = data
    ctx = S.VariationContext(weights=w)
    h, out = S.evaluate_variations(
        X,
        linear_model(),
        ["tcol", "tcolup"],
        ctx,
        {"tcol": {"amount": 0.3}, "tcolup": {"amount": 0.7}},
        process="proc",
        region_masks=masks,
    )
    edges = h.axes["score"].edges
    nom = np_scores(X)
    up3 = X.copy()
    up3[:, 0] += 0.3
    dn3 = X.copy()
    dn3[:, 0] -= 0.3
    up7 = X.copy()
    up7[:, 0] += 0.7
    s_up7 = np_scores(up7)
    expect = {
        "nominal": nom,
        "tcolUp": np_scores(up3),
        "tcolDown": np_scores(dn3),
        "tcolupUp": s_up7,
    }
    for region, m in masks.items():
        for syst, s in expect.items():
            sub = h[{"process": "proc", "region": region, "systematic": syst}]
            v, var = _np_hist(s[m], w[m], edges)
            np.testing.assert_allclose(sub.values(), v, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(sub.variances(), var, rtol=1e-9, atol=1e-9)
        nv, nvar = _np_hist(nom[m], w[m], edges)
        uv, _ = _np_hist(s_up7[m], w[m], edges)
        sub = h[{"process": "proc", "region": region, "systematic": "tcolupDown"}]
        np.testing.assert_allclose(sub.values(), _template_mirror(nv, uv), rtol=1e-9, atol=1e-9)
    o = out["tcolup"]
    assert o.down_mirrored and o.down_pred is None and o.detected is None
    np.testing.assert_allclose(o.nominal_score, nom, atol=1e-6)
    np.testing.assert_array_equal(o.nominal_pred, (o.nominal_score >= 0.5).astype(int))
    np.testing.assert_array_equal(o.flipped, o.nominal_pred != o.up_pred)
    assert not out["tcol"].down_mirrored and out["tcol"].down_pred is not None
    np.testing.assert_array_equal(o.weights, w)


def test_evaluate_variations_detector(variations, data):
    X, w, masks = data

    def detector(Z):
        return (Z[:, 0] > 1.0).astype(float)

    ctx = S.VariationContext(detector=detector, detector_threshold=0.5)
    _, out = S.evaluate_variations(
        X, linear_model(), ["tcolup"], ctx, process="p", region_masks=masks
    )
    np.testing.assert_array_equal(out["tcolup"].detected, X[:, 0] + 0.5 > 1.0)


def test_evaluate_variations_errors(variations, data):
    X, w, masks = data
    m = linear_model()
    with pytest.raises(ConfigError, match="unknown variation 'nope'.*tcol"):
        S.evaluate_variations(X, m, ["nope"], process="p", region_masks=masks)
    with pytest.raises(ConfigError, match="not requested"):
        S.evaluate_variations(X, m, ["tcol"], None, {"other": {}}, process="p", region_masks=masks)
    with pytest.raises(ConfigError, match="duplicate"):
        S.evaluate_variations(X, m, ["tcol", "tcol"], process="p", region_masks=masks)
    small = {"control": np.arange(len(X)) < 5, "signal": np.arange(len(X)) >= 5}
    with pytest.raises(InputError, match="region 'control' of process 'p' has 5 events"):
        S.evaluate_variations(X, m, ["tcol"], process="p", region_masks=small)
    with pytest.raises(InputError, match="weights has 3"):
        S.evaluate_variations(X, m, ["tcol"], process="p", region_masks=masks, weights=np.ones(3))


def test_region_specs_accepted(variations, data):
    X, w, _ = data
    y = (X[:, 0] > 0).astype(int)
    split = S.optimal_cut_regions(X, y)
    h1, out = S.evaluate_variations(X, linear_model(), ["tcol"], process="p", region_masks=split)
    h2, _ = S.evaluate_variations(
        X, linear_model(), ["tcol"], process="p", region_masks=[split.control, split.signal]
    )
    assert np.array_equal(h1.values(), h2.values())
    np.testing.assert_array_equal(out["tcol"].region_masks["signal"], split.masks(X)["signal"])


def test_multiclass_score_class(variations, data):
    X, _, masks = data
    m = torch.nn.Linear(3, 3)
    with pytest.raises(ModelOutputError, match="score_class"):
        S.evaluate_variations(X, m, ["tcol"], process="p", region_masks=masks)
    _, out = S.evaluate_variations(X, m, ["tcol"], process="p", region_masks=masks, score_class=2)
    with torch.no_grad():
        p = torch.softmax(m(torch.as_tensor(X, dtype=torch.float32)), 1).numpy()
    np.testing.assert_allclose(out["tcol"].nominal_score, p[:, 2], atol=1e-6)
    np.testing.assert_array_equal(out["tcol"].nominal_pred, p.argmax(1))


def test_builder_two_processes(variations, data):
    X, w, masks = data
    b = S.SystematicsBuilder(linear_model(), ["tcol"], {"tcol": {"amount": 0.2}})
    b.add_process("a", X, region_masks=masks, weights=w)
    b.add_process("b", X[:150], region_masks={k: v[:150] for k, v in masks.items()})
    assert list(b.hist.axes["process"]) == ["a", "b"]
    assert set(b.outcomes) == {"a", "b"}
    tot_a = b.hist[{"process": "a", "systematic": "nominal"}].sum(flow=True).value
    assert tot_a == pytest.approx(w.sum())
    tot_b = b.hist[{"process": "b", "systematic": "tcolUp"}].sum(flow=True).value
    assert tot_b == pytest.approx(150)
    with pytest.raises(ConfigError, match="already added"):
        b.add_process("a", X, region_masks=masks)
    table = b.table(budget=0.1)
    assert len(table.rows) == 4
