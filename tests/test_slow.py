"""Long runs (marked slow; `python -m pytest -m slow` or `-m ""` runs them)."""

from __future__ import annotations

import numpy as np
import pytest

from advsyst.attacks import ConservAttack
from advsyst.models import train_classifier
from advsyst.stats import delta_fn, jsd_per_feature

pytestmark = pytest.mark.slow


def test_demo_at_a_realistic_size_gives_a_meaningful_tagger_attack_and_detector(tmp_path):
    from advsyst.workflows.demo import DemoConfig, run_demo

    cfg = DemoConfig(events=4000, data_events=4000, seed=5, cache_dir=str(tmp_path / "cache"))
    s = run_demo(tmp_path / "out", cfg)
    assert s["tagger"]["auroc_analysis"] > 0.75
    assert s["attack"]["fooling_ratio"] > 0.3
    assert s["attack"]["jsd_max"] <= cfg.attack["max_jsd_single_change"] + 1e-9
    assert s["attack"]["dfn"] <= cfg.attack["max_frob_single_change"] + 1e-9
    assert s["detector"]["auroc"] > 0.55
    assert s["fit"]["poi_bestfit"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("budget", ["cumulative", "per_change"])
def test_large_attack_fast_and_exact_keep_the_budget(budget):
    rng = np.random.default_rng(21)
    n, d = 20000, 12
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    X = rng.normal(size=(n, d)) @ A
    y = (X[:, :3].sum(1) + 0.5 * rng.normal(size=n) > 0).astype(int)
    w = rng.uniform(0.5, 1.5, n)
    tagger, _ = train_classifier(X, y, w, hidden=(64, 16), epochs=3, progress=False)
    for method in ("fast", "exact"):
        res = ConservAttack(
            min_change=0.005,
            step=0.01,
            units="range",
            num_bins=100,
            n_iterations=5,
            max_jsd=0.01,
            max_dfn=0.01,
            budget=budget,
            method=method,
            progress=False,
        ).run(X, tagger, weights=w)
        j = jsd_per_feature(X, res.X_adv, num_bins=100, weights=w)
        assert j.max() <= 0.01 + 1e-9
        if budget == "cumulative":
            assert delta_fn(X, res.X_adv, w) <= 0.01 + 1e-9
        assert res.fooling_ratio > 0.2
