"""Every plot writes a non-empty PNG atomically; bad inputs raise InputError."""

from __future__ import annotations

import numpy as np
import pytest

import advsyst.systematics as S
from advsyst.errors import InputError
from advsyst.systematics import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def _no_tmp(tmp_path):
    return not list(tmp_path.glob(".*.tmp"))


def test_score_variations(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    nom = rng.uniform(0, 1, n)
    up = np.clip(nom + 0.1, 0, 1)
    h = S.make_hist()
    S.fill_variations(
        h,
        process="tt",
        region_masks={"control": nom < 0.5, "signal": nom >= 0.5},
        nominal_score=nom,
        varied_scores={"adv": (up, None)},
    )
    out = plots.plot_score_variations(h, tmp_path / "score.png", process="tt", variation="adv")
    assert out == tmp_path / "score.png" and _is_png(out) and _no_tmp(tmp_path)
    with pytest.raises(InputError, match="advXUp"):
        plots.plot_score_variations(h, tmp_path / "x.png", process="tt", variation="advX")
    with pytest.raises(InputError, match="process 'ww'"):
        plots.plot_score_variations(h, tmp_path / "x.png", process="ww", variation="adv")


def test_marginals_and_correlations(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 5))
    X[:, 1] += 0.5 * X[:, 0]
    Xa = X + rng.normal(0, 0.05, X.shape)
    jsd = np.array([0.01, 0.03, 0.002, 0.02, 0.05])
    out = plots.plot_marginals(X, Xa, jsd, tmp_path / "marg.png", feature_names=list("abcde"))
    assert _is_png(out)
    out = plots.plot_correlation_matrices(X, Xa, tmp_path / "corr.png", weights=np.ones(500))
    assert _is_png(out) and _no_tmp(tmp_path)
    with pytest.raises(InputError, match="jsd"):
        plots.plot_marginals(X, Xa, jsd[:3], tmp_path / "x.png")
    with pytest.raises(InputError, match="shapes"):
        plots.plot_correlation_matrices(X, Xa[:10], tmp_path / "x.png")


def test_weighted_correlation_brute_force():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    X[:, 2] += X[:, 0]
    w = rng.uniform(0.5, 2, 200)
    C = plots.weighted_correlation(X, w)
    mu = (w[:, None] * X).sum(0) / w.sum()
    for i in range(3):
        for j in range(3):
            cov = lambda a, b: np.sum(w * (X[:, a] - mu[a]) * (X[:, b] - mu[b])) / w.sum()  # noqa: E731
            assert C[i, j] == pytest.approx(cov(i, j) / np.sqrt(cov(i, i) * cov(j, j)))


def test_attack_history(tmp_path):
    hist = [
        {
            "iteration": i,
            "fooling_ratio": 0.1 * i,
            "jsd_mean": 1e-3 * i,
            "jsd_max": 2e-3 * i,
            "dfn": 1e-4 * i,
        }
        for i in range(1, 6)
    ]
    assert _is_png(plots.plot_attack_history(hist, tmp_path / "hist.png"))
    with pytest.raises(InputError, match="lacks keys \\['dfn'\\]"):
        plots.plot_attack_history(
            [{k: v for k, v in hist[0].items() if k != "dfn"}], tmp_path / "x.png"
        )
    with pytest.raises(InputError, match="empty"):
        plots.plot_attack_history([], tmp_path / "x.png")


def test_detector_efficiency_plot(tmp_path):
    rng = np.random.default_rng(3)
    t, em, sm = S.detector_efficiency_curve(rng.beta(1, 4, 1000))
    _, ed, sd = S.detector_efficiency_curve(rng.beta(1.1, 4, 700))
    out = plots.plot_detector_efficiency(t, em, sm, ed, sd, tmp_path / "det.png")
    assert _is_png(out) and _no_tmp(tmp_path)
    pdf = plots.plot_detector_efficiency(t, em, sm, ed, sd, tmp_path / "det.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    with pytest.raises(InputError):
        plots.plot_detector_efficiency(t, em[:5], sm, ed, sd, tmp_path / "x.png")
