"""The adversarial detector workflow."""

from __future__ import annotations

import numpy as np
import pytest

from advsyst.attacks import ConservAttack
from advsyst.attacks.metrics import auroc
from advsyst.errors import InputError
from advsyst.models import train_classifier
from advsyst.workflows.detector import flag_adversarial, train_detector


@pytest.fixture(scope="module")
def attacked():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 4))
    X[:, 1] += 0.7 * X[:, 0]
    y = (X[:, 0] + 0.5 * X[:, 2] + 0.5 * rng.normal(size=3000) > 0).astype(int)
    tagger, _ = train_classifier(X, y, hidden=(16, 8), epochs=8, progress=False, seed=1)
    res = ConservAttack(
        min_change=0.05,
        step=0.1,
        num_bins=30,
        n_iterations=4,
        max_jsd=0.2,
        max_dfn=0.2,
        # the paper's single binning with a loose budget: a visible attack, so that the
        # detector workflow has something to separate (the binning-robust default keeps
        # every marginal below half its statistical resolution)
        robust_binnings=None,
        progress=False,
    ).run(X, tagger)
    return X, res


def test_detector_separates_clean_from_adversarial(attacked):
    X, res = attacked
    det = train_detector(X, res.X_adv, moved=res.moved, hidden=(32, 16), epochs=15, progress=False)
    assert set(det.train_events).isdisjoint(det.test_events)
    assert len(det.train_events) + len(det.test_events) == int(res.moved.sum())
    # the held-out AUROC is recomputed from the detector's own outputs
    te = det.test_events
    Xp = np.concatenate([X[te], res.X_adv[te]])
    yp = np.r_[np.zeros(len(te)), np.ones(len(te))]
    assert det.auroc == pytest.approx(auroc(yp, det.p_adversarial(Xp)))
    assert det.auroc > 0.6
    flags = flag_adversarial(det, Xp)
    assert flags.dtype == bool and flags.shape == (2 * len(te),)
    assert flags[len(te) :].mean() > flags[: len(te)].mean()


def test_detector_needs_moved_events(attacked):
    X, _ = attacked
    with pytest.raises(InputError, match="only 0 events were moved"):
        train_detector(X, X.copy(), progress=False)
    with pytest.raises(InputError, match="shapes differ"):
        train_detector(X, X[:, :3], progress=False)
