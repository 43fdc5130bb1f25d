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


def _capture(monkeypatch):
    """Keep every figure the plot functions save, with its overlapping panels measured
    right after saving (inside the plot style, as drawn)."""
    figs = []
    save = plots._save

    def keep(fig, path):
        out = save(fig, path)
        figs.append((fig, _overlapping(fig)))
        return out

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def _overlapping(fig):
    """Pairs of panels whose drawn extents (tick and axis labels included) overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [(ax, ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bad = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1 :]:
            inter = ba.intersection(ba, bb)
            if inter is not None and inter.width > 1 and inter.height > 1:
                bad.append((a.get_ylabel(), b.get_ylabel()))
    return bad


def _edge_heavy_hist():
    """Scores piled at 0 and 1 with an attack that empties the edge bins' neighbours:
    ratios up to ~100 in sparse bins, as in the demo."""
    rng = np.random.default_rng(11)
    n = 4000
    nom = np.concatenate([rng.beta(0.3, 4, n // 2), rng.beta(4, 0.3, n // 2)])
    up = np.clip(nom + np.where(nom < 0.5, 1, -1) * np.abs(rng.normal(0, 0.03, n)), 0, 1)
    up[:40] = 0.52  # a few jets into the empty middle bin: huge ratio there
    h = S.make_hist()
    S.fill_variations(
        h, process="ttbar", region_masks={"control": nom < 0.5, "signal": nom >= 0.5},
        nominal_score=nom, varied_scores={"conservattack": (up, None)},
    )  # fmt: skip
    return h


def test_score_plot_is_readable(tmp_path, monkeypatch):
    """Regression: one experiment label, a ratio range that shows the bulk with
    off-scale bins marked, panels that do not run into each other."""
    figs = _capture(monkeypatch)
    h = _edge_heavy_hist()
    plots.plot_score_variations(h, tmp_path / "s.png", process="ttbar", variation="conservattack")
    fig, overlaps = figs[-1]
    top = [ax for ax in fig.axes if ax.get_ylabel() == "weighted events"]
    ratio = [ax for ax in fig.axes if ax.get_ylabel() == "var. / nom."]
    assert len(top) == len(ratio) == 2
    for ax in top:
        texts = [ax.get_title(loc=loc) for loc in ("left", "center", "right")]
        texts += [t.get_text() for t in ax.texts]
        assert sum(t.count("Simulation") for t in texts) == 1
    for rax, region in zip(ratio, ("control", "signal")):
        nv = h[{"process": "ttbar", "region": region, "systematic": "nominal"}].values()
        uv = h[{"process": "ttbar", "region": region, "systematic": "conservattackUp"}].values()
        lo, hi = rax.get_ylim()
        assert 0 <= lo < 1 < hi <= 2  # not stretched to the ~100x of the sparse bins
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(nv > 0, uv / nv, np.inf)
        off = int(np.sum((r > hi) & (uv > 0)))
        assert off >= 1
        markers = [ln for ln in rax.lines if ln.get_marker() == "^"]
        assert sum(len(ln.get_xdata()) for ln in markers) >= off
    assert overlaps == []


def test_multi_panel_layouts_do_not_collide(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 4)) * np.array([1.0, 1e3, 1e5, 1e-3])
    jsd = np.array([0.01, 0.03, 0.002, 0.02])
    w = np.full(500, 1234.5)  # large weighted counts: wide tick labels
    plots.plot_marginals(X, X * 1.01, jsd, tmp_path / "m.png", weights=w,
                         feature_names=["a", "pt [GeV]", "m2", "tiny"])  # fmt: skip
    history = [
        {"iteration": i, "fooling_ratio": 0.1 * i, "jsd_mean": 1e-3 * i, "jsd_max": 2e-3 * i,
         "dfn": 1e-4 * i}
        for i in range(1, 4)
    ]  # fmt: skip
    plots.plot_attack_history(history, tmp_path / "h.png")
    assert len(figs) == 2
    for _, overlaps in figs:
        assert overlaps == []


def test_ratio_range():
    nominal = np.array([1.0, 100, 200, 150, 0.5])
    lo, hi = plots.ratio_range(nominal, [np.array([120.0, 1.1, 0.95, 1.02, 0.0])])
    assert (lo, hi) == pytest.approx((0.8, 1.2))  # 0.1 * 1.1 -> 0.2: edge bins ignored
    assert plots.ratio_range(nominal, [np.ones(5)]) == pytest.approx((0.95, 1.05))
    assert plots.ratio_range(nominal, [np.full(5, 9.0)]) == pytest.approx((0.0, 2.0))
