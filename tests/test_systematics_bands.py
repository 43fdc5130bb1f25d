"""Fooling ratios, yield bands, detector efficiencies: every number by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import advsyst.systematics as S
from advsyst.errors import InputError
from advsyst.systematics.registry import VariationResult


def _frac(passed, w, sel):
    """Brute-force weighted fraction with n_eff binomial error."""
    ws = w[sel]
    p = w[sel & passed].sum() / ws.sum()
    neff = ws.sum() ** 2 / (ws**2).sum()
    return p, np.sqrt(p * (1 - p) / neff), neff


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 60))
def test_weighted_fraction_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    passed = rng.random(n) < 0.4
    w = rng.uniform(0.1, 3, n)
    sel = rng.random(n) < 0.7
    sel[0] = True
    f = S.weighted_fraction(passed, w, sel)
    p, e, neff = _frac(passed, w, sel)
    assert f.value == pytest.approx(p, abs=1e-12)
    assert f.error == pytest.approx(e, abs=1e-12)
    assert f.n_eff == pytest.approx(neff, rel=1e-12)
    assert f.n_events == sel.sum() and f.n_pass == (sel & passed).sum()
    assert f.sum_w == pytest.approx(w[sel].sum())


def test_weighted_fraction_unweighted_and_empty():
    f = S.weighted_fraction(np.array([1, 0, 0, 1, 1], bool))
    assert f.value == pytest.approx(0.6)
    assert f.error == pytest.approx(np.sqrt(0.6 * 0.4 / 5))
    e = S.weighted_fraction(np.array([True, False]), select=np.array([False, False]))
    assert np.isnan(e.value) and np.isnan(e.error) and e.n_events == 0
    assert S.effective_entries(np.array([1.0, 1.0, 2.0])) == pytest.approx(16 / 6)


def test_fooling_ratio_and_corrected():
    rng = np.random.default_rng(2)
    n = 500
    a = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < 0.3, 1 - a, a)
    det = rng.random(n) < 0.4
    w = rng.uniform(0.5, 2, n)
    m = rng.random(n) < 0.5
    fr, corr = S.fooling_ratio(a, b, w, m, det)
    p, e, _ = _frac(a != b, w, m)
    pc, ec, _ = _frac((a != b) & ~det, w, m)
    assert (fr.value, fr.error) == pytest.approx((p, e), abs=1e-12)
    assert (corr.value, corr.error) == pytest.approx((pc, ec), abs=1e-12)
    # corrected = FR * (1 - detection efficiency among flipped events)
    flipped = (a != b) & m
    eff_flip = w[flipped & det].sum() / w[flipped].sum()
    assert corr.value == pytest.approx(fr.value * (1 - eff_flip), abs=1e-12)
    fr2, none = S.fooling_ratio(a, b, w, m)
    assert none is None and fr2 == fr
    with pytest.raises(InputError):
        S.fooling_ratio(a, b[:-1])


def _outcome(rng, n=400, detected=True):
    nom_s = rng.uniform(0, 1, n)
    up_s = np.clip(nom_s + rng.normal(0, 0.2, n), 0, 1)
    X = np.zeros((n, 1))
    return S.VariationOutcome(
        name="v",
        process="p",
        result=VariationResult(up=X),
        nominal_score=nom_s,
        up_score=up_s,
        down_score=np.clip(2 * nom_s - up_s, 0, 1),
        down_mirrored=True,
        nominal_pred=(nom_s >= 0.5).astype(int),
        up_pred=(up_s >= 0.5).astype(int),
        down_pred=None,
        detected=(rng.random(n) < 0.5) if detected else None,
        weights=rng.uniform(0.5, 1.5, n),
        region_masks={"control": nom_s < 0.3, "signal": nom_s >= 0.3},
    )


def test_fooling_ratios_and_yield_bands():
    rng = np.random.default_rng(5)
    o = _outcome(rng)
    frs = S.fooling_ratios(o)
    bands = S.yield_bands(o, 0.6)
    cbands = S.yield_bands(o, 0.6, use_corrected=True)
    flipped = o.nominal_pred != o.up_pred
    for region, m in o.region_masks.items():
        p, e, _ = _frac(flipped, o.weights, m)
        pc, _, _ = _frac(flipped & ~o.detected, o.weights, m)
        assert frs[region].fooling_ratio.value == pytest.approx(p, abs=1e-12)
        assert frs[region].corrected.value == pytest.approx(pc, abs=1e-12)
        tag = m & (o.nominal_score >= 0.6)
        y = o.weights[tag].sum()
        b = bands[region]
        assert b.nominal == pytest.approx(y)
        assert b.nominal_error == pytest.approx(np.sqrt((o.weights[tag] ** 2).sum()))
        # the band: fooling ratio of the TAGGED jets of the region, counted by hand
        n_tag = n_flip = 0.0
        n_flip_undetected = 0.0
        for k in range(len(o.weights)):
            if m[k] and o.nominal_score[k] >= 0.6:
                n_tag += o.weights[k]
                if o.nominal_pred[k] != o.up_pred[k]:
                    n_flip += o.weights[k]
                    if not o.detected[k]:
                        n_flip_undetected += o.weights[k]
        if n_tag == 0:  # the control region (score < 0.3) has no tagged jets
            assert np.isnan(b.fooling_ratio) and (b.up, b.down) == (0.0, 0.0) and y == 0
            continue
        pt, pct = n_flip / n_tag, n_flip_undetected / n_tag
        assert b.fooling_ratio == pytest.approx(pt, abs=1e-12)
        assert (b.up, b.down) == pytest.approx((y * (1 + pt), y * (1 - pt)))
        assert abs(pt - p) > 0.01  # not the fooling ratio of all jets of the region
        assert b.varied == pytest.approx(o.weights[m & (o.up_score >= 0.6)].sum())
        assert (cbands[region].up, cbands[region].down) == pytest.approx(
            (y * (1 + pct), y * (1 - pct))
        )
        assert b.to_dict()["region"] == region
        assert frs[region].to_dict()["corrected"]["value"] == pytest.approx(pc)
    o2 = _outcome(rng, detected=False)
    assert S.fooling_ratios(o2)["signal"].corrected is None
    with pytest.raises(InputError, match="no detector decision"):
        S.yield_bands(o2, use_corrected=True)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_detector_efficiency_curve_brute_force(seed, weighted):
    rng = np.random.default_rng(seed)
    n = 80
    p = np.round(rng.random(n), 2)  # values on the threshold grid on purpose
    w = rng.uniform(0.2, 2, n) if weighted else None
    t, eff, err = S.detector_efficiency_curve(p, w)
    ww = np.ones(n) if w is None else w
    neff = ww.sum() ** 2 / (ww**2).sum()
    np.testing.assert_array_equal(t, np.linspace(0, 1, 101))
    for k, tk in enumerate(t):
        e = ww[p < tk].sum() / ww.sum()
        assert eff[k] == pytest.approx(e, abs=1e-12)
        assert err[k] == pytest.approx(np.sqrt(e * (1 - e) / neff), abs=1e-12)


def test_detector_efficiency_point_and_pull():
    rng = np.random.default_rng(9)
    pm, pd = rng.random(1000), rng.random(800) * 0.9
    wm = rng.uniform(0.5, 1.5, 1000)
    d = S.detector_efficiency(pm, 0.7, wm, pd)
    em, sm, _ = _frac(pm < 0.7, wm, np.ones(1000, bool))
    ed, sd, _ = _frac(pd < 0.7, np.ones(800), np.ones(800, bool))
    assert (d.mc.value, d.mc.error) == pytest.approx((em, sm))
    assert (d.data.value, d.data.error) == pytest.approx((ed, sd))
    assert d.pull == pytest.approx((ed - em) / np.hypot(sm, sd))
    assert d.consistent(2.0) is (abs(d.pull) < 2.0)
    no_data = S.detector_efficiency(pm, 0.7)
    assert no_data.consistent() is None and np.isnan(no_data.pull)
    assert d.to_dict()["threshold"] == 0.7
    with pytest.raises(InputError, match="NaN"):
        S.detector_efficiency(np.array([0.1, np.nan]))


def test_compare_data_mc():
    em = np.array([0.5, 0.8, 0.0, 1.0])
    sm = np.array([0.05, 0.04, 0.0, 0.0])
    ed = np.array([0.6, 0.79, 0.0, 0.9])
    sd = np.array([0.05, 0.03, 0.0, 0.0])
    out = S.compare_data_mc(em, sm, ed, sd)
    sig = np.hypot(sm, sd)
    np.testing.assert_allclose(out["pull"][:2], (ed - em)[:2] / sig[:2])
    assert out["pull"][2] == 0.0 and out["pull"][3] == -np.inf
    np.testing.assert_allclose(out["ratio"][[0, 1, 3]], (ed / np.where(em > 0, em, 1))[[0, 1, 3]])
    assert np.isnan(out["ratio"][2])
    np.testing.assert_allclose(out["ratio_err"][:2], np.hypot(sd / em, ed * sm / em**2)[:2])
    chi2 = float(np.sum(((ed - em)[:2] / sig[:2]) ** 2))
    assert out["chi2"] == pytest.approx(chi2) and out["ndf"] == 2
    assert out["p_value"] == pytest.approx(stats.chi2.sf(chi2, 2))
    assert out["max_abs_pull"] == np.inf
    scalar = S.compare_data_mc(0.5, 0.1, 0.7, 0.1)
    assert isinstance(scalar["pull"], float)
    assert scalar["pull"] == pytest.approx(0.2 / np.hypot(0.1, 0.1))
