"""Uncertainty tables: traceable numbers, the verdict rule, writers."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

import advsyst.systematics as S
from advsyst.errors import ConfigError
from advsyst.systematics.registry import VariationResult
from advsyst.systematics.tables import EXTRA, EXTRA_INCONSISTENT, NO_EXTRA


def _outcome(seed, process, detected=True, n=600):
    rng = np.random.default_rng(seed)
    nom_s = rng.uniform(0, 1, n)
    up_s = np.clip(nom_s + rng.normal(0, 0.15, n), 0, 1)
    return S.VariationOutcome(
        name="adv",
        process=process,
        result=VariationResult(up=np.zeros((n, 1))),
        nominal_score=nom_s,
        up_score=up_s,
        down_score=np.clip(2 * nom_s - up_s, 0, 1),
        down_mirrored=True,
        nominal_pred=(nom_s >= 0.5).astype(int),
        up_pred=(up_s >= 0.5).astype(int),
        down_pred=None,
        detected=(rng.random(n) < 0.6) if detected else None,
        weights=rng.uniform(0.5, 1.5, n),
        region_masks={"control": nom_s < 0.4, "signal": nom_s >= 0.4},
    )


@pytest.fixture
def outcomes():
    return {"tt": {"adv": _outcome(1, "tt")}, "ww": {"adv": _outcome(2, "ww", detected=False)}}


@pytest.fixture
def detector():
    rng = np.random.default_rng(3)
    return S.detector_efficiency(rng.random(2000), 0.8, None, rng.random(1500))


def test_rows_equal_direct_computation(outcomes, detector):
    table = S.build_uncertainty_table(outcomes, budget=0.05, working_point=0.6, detector=detector)
    assert len(table.rows) == 4
    for row in table.rows:
        o = outcomes[row.process]["adv"]
        m = o.region_masks[row.region]
        w = o.weights
        flipped = o.nominal_pred != o.up_pred
        ws = w[m]
        neff = ws.sum() ** 2 / (ws**2).sum()
        fr = w[m & flipped].sum() / ws.sum()
        tag = m & (o.nominal_score >= 0.6)
        assert row.n_events == m.sum()
        assert row.nominal_yield == pytest.approx(w[tag].sum(), rel=1e-12)
        assert row.nominal_yield_err == pytest.approx(np.sqrt((w[tag] ** 2).sum()), rel=1e-12)
        assert row.varied_yield == pytest.approx(w[m & (o.up_score >= 0.6)].sum(), rel=1e-12)
        assert row.fooling_ratio == pytest.approx(fr, abs=1e-12)
        assert row.fooling_ratio_err == pytest.approx(np.sqrt(fr * (1 - fr) / neff), abs=1e-12)
        # band: fooling ratio of the tagged jets of this region and process
        if row.region == "control":  # score < 0.4: nothing tagged at 0.6
            assert tag.sum() == 0 and (row.band_up, row.band_down) == (0.0, 0.0)
            assert math.isnan(row.band_fooling_ratio)
        else:
            frt = w[tag & flipped].sum() / w[tag].sum()
            assert abs(frt - fr) > 0.01  # differs from the fooling ratio of all jets
            assert row.band_fooling_ratio == pytest.approx(frt, abs=1e-12)
            neff_t = w[tag].sum() ** 2 / (w[tag] ** 2).sum()
            assert row.band_fooling_ratio_err == pytest.approx(
                np.sqrt(frt * (1 - frt) / neff_t), abs=1e-12
            )
            assert row.band_up == pytest.approx(w[tag].sum() * (1 + frt))
            assert row.band_down == pytest.approx(w[tag].sum() * (1 - frt))
        if o.detected is not None:
            frc = w[m & flipped & ~o.detected].sum() / ws.sum()
            assert row.corrected_fooling_ratio == pytest.approx(frc, abs=1e-12)
            assert row.corrected_fooling_ratio_err == pytest.approx(
                np.sqrt(frc * (1 - frc) / neff), abs=1e-12
            )
        else:
            assert math.isnan(row.corrected_fooling_ratio)
        assert row.detector_eff_mc == detector.mc.value
        assert row.detector_eff_data == detector.data.value
        assert row.detector_pull == pytest.approx(detector.pull)
        assert row.detector_threshold == 0.8
        assert row.extra_yield == pytest.approx(row.extra_uncertainty * row.nominal_yield)


@pytest.mark.parametrize(
    ("fr", "frc", "budget", "consistent", "expect"),
    [
        (0.30, 0.04, 0.05, True, (NO_EXTRA, 0.0, "corrected")),
        (0.30, 0.08, 0.05, True, (EXTRA, 0.03, "corrected")),
        (0.30, 0.04, 0.05, False, (EXTRA_INCONSISTENT, 0.30, "uncorrected")),
        (0.30, 0.04, 0.05, None, (EXTRA, 0.25, "uncorrected")),
        (0.04, None, 0.05, None, (NO_EXTRA, 0.0, "uncorrected")),
        (0.05, None, 0.05, None, (NO_EXTRA, 0.0, "uncorrected")),
        (0.10, None, 0.05, True, (EXTRA, 0.05, "uncorrected")),
    ],
)
def test_verdict_rule(fr, frc, budget, consistent, expect):
    text, extra, used = S.verdict(fr, frc, budget, consistent)
    assert text == expect[0] and used == expect[2]
    assert extra == pytest.approx(expect[1])


def test_verdicts_in_table(outcomes, detector):
    inconsistent = S.DetectorEfficiency(
        threshold=0.5,
        mc=S.weighted_fraction(np.arange(1000) < 900),
        data=S.weighted_fraction(np.arange(1000) < 500),
    )
    table = S.build_uncertainty_table(
        outcomes,
        budget={("signal", "tt"): 1.0, "control": 0.0, "*": 0.01},
        detector={"control": detector, "signal": inconsistent},
    )
    rows = {(r.region, r.process): r for r in table.rows}
    assert rows[("signal", "tt")].verdict == EXTRA_INCONSISTENT
    assert rows[("signal", "tt")].extra_uncertainty == rows[("signal", "tt")].fooling_ratio
    assert rows[("signal", "tt")].budget == 1.0
    assert rows[("signal", "ww")].budget == 0.01
    ctl = rows[("control", "tt")]
    assert ctl.budget == 0.0 and ctl.detector_consistent is detector.consistent()
    with pytest.raises(ConfigError, match="no budget"):
        S.build_uncertainty_table(outcomes, budget={"control": 0.1})
    none = S.build_uncertainty_table(outcomes, budget=0.02)
    assert all(r.detector_consistent is None and r.fr_used == "uncorrected" for r in none.rows)
    assert all(math.isnan(r.detector_eff_mc) for r in none.rows)


def test_writers(tmp_path, outcomes, detector):
    table = S.build_uncertainty_table(outcomes, budget=0.05, detector=detector)
    md = table.to_markdown(tmp_path / "t.md")
    assert (tmp_path / "t.md").read_text() == md
    assert md.count("\n|") == 1 + len(table.rows)  # separator + rows after the header
    assert "| region | process |" in md and "±" in md
    assert "fooling ratio of the tagged jets of that region and process" in md
    for r in table.rows:
        assert f"[{r.band_down:.4g}, {r.band_up:.4g}]" in md
    text = table.to_csv(tmp_path / "t.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert text == (tmp_path / "t.csv").read_text()
    assert len(rows) == len(table.rows)
    for parsed, row in zip(rows, table.rows):
        assert float(parsed["fooling_ratio"]) == row.fooling_ratio  # full precision
        assert float(parsed["nominal_yield"]) == row.nominal_yield
        assert parsed["verdict"] == row.verdict
    path = table.to_json(tmp_path / "t.json", study="unit test")
    obj = json.loads(path.read_text())
    assert obj["provenance"]["study"] == "unit test" and "versions" in obj["provenance"]
    assert obj["rows"][0]["fooling_ratio"] == pytest.approx(table.rows[0].fooling_ratio)
    ww = [r for r in obj["rows"] if r["process"] == "ww"][0]
    assert ww["corrected_fooling_ratio"] is None  # NaN -> null
    df = table.to_dataframe()
    assert list(df.columns) == table.columns and len(df) == len(table.rows)
    assert not list(tmp_path.glob(".*.tmp"))
