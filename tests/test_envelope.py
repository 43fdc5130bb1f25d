"""Per-event uncertainty envelopes on the total move, and the public per-entry mask."""

from __future__ import annotations

import numpy as np
import pytest

from _toys import fit_mlp
from advsyst.attacks import ConservAttack
from advsyst.attacks.conservattack import resolve_envelope
from advsyst.errors import ConfigError, InputError

NAMES = ["pt_lead", "pt_sub", "eta_lead", "mass"]


def test_the_most_specific_key_wins():
    env = {
        "*": {"absolute": 0.5},
        "pt_*": {"relative": 0.03},
        "pt_sub": {"absolute": 0.2},
        "pt_l*": {"relative": 0.01},
    }
    kind, val = resolve_envelope(env, NAMES)
    assert kind.tolist() == [1, 2, 2, 2]
    np.testing.assert_allclose(val, [0.01, 0.2, 0.5, 0.5])  # longest glob, exact name, "*"
    kind, _ = resolve_envelope({"eta_*": {"absolute": 0.1}}, NAMES)
    assert kind.tolist() == [0, 0, 2, 0]


@pytest.mark.parametrize(
    "bad",
    [{"pt_*": {"relative": -1}}, {"pt_*": {"fraction": 0.1}}, {"pt_*": 0.1},
     {"pt_*": {"relative": float("nan")}}, {"pt_*": {"relative": 0.1, "absolute": 1}}],
)  # fmt: skip
def test_bad_envelopes_are_config_errors(bad):
    with pytest.raises(ConfigError, match="envelope"):
        ConservAttack(envelope=bad)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(11)
    n = 1500
    X = np.column_stack(
        [rng.exponential(30, n) + 20, rng.exponential(20, n) + 15, rng.normal(0, 1.5, n),
         rng.normal(90, 10, n)]
    )  # fmt: skip
    y = (X[:, 0] / 30 - X[:, 2] + (X[:, 3] - 90) / 10 + rng.normal(size=n) > 1).astype(int)
    net = fit_mlp(X, y, standardise=True)
    return X, net


CFG = dict(min_change=0.002, step=0.01, units="range", num_bins=40, n_iterations=4,
           progress=False, max_jsd=0.1, max_dfn=0.05, robust_binnings=None)  # fmt: skip
ENV = {"pt_*": {"relative": 0.03}, "eta_*": {"absolute": 0.05}, "mass": {"absolute": 1.0}}


def _allowed(X):
    return np.column_stack([0.03 * np.abs(X[:, 0]), 0.03 * np.abs(X[:, 1]),
                            np.full(len(X), 0.05), np.full(len(X), 1.0)])  # fmt: skip


def test_envelope_bounds_the_total_move_of_every_entry(toy):
    X, net = toy
    res = ConservAttack(CFG, envelope=ENV).run(X, net, feature_names=NAMES)
    move = np.abs(res.X_adv - X)
    allowed = _allowed(X)
    assert (move <= allowed * (1 + 1e-12) + 1e-12).all()
    assert res.fooling_ratio > 0
    env = res.metrics["envelope"]
    q = env["move_over_envelope_quantiles"]
    ratio = (move / allowed)[res.X_adv != X]
    assert env["n_moved_entries"] == len(ratio) > 0
    assert q["0.5"] == pytest.approx(np.quantile(ratio, 0.5))
    assert q["1.0"] == pytest.approx(ratio.max()) and ratio.max() <= 1 + 1e-9
    # the same attack without envelope moves entries far beyond it (the check can fail)
    free = ConservAttack(CFG).run(X, net, feature_names=NAMES)
    assert (np.abs(free.X_adv - X) > allowed * 1.5).any()
    assert "envelope" not in free.metrics


def test_envelope_without_names_uses_column_indices(toy):
    X, net = toy
    res = ConservAttack(CFG, envelope={"2": {"absolute": 0.01}}).run(X, net)
    assert (np.abs(res.X_adv[:, 2] - X[:, 2]) <= 0.01 + 1e-12).all()


def test_movable_mask_pins_entries(toy):
    X, net = toy
    rng = np.random.default_rng(0)
    mask = rng.random(X.shape) < 0.5
    res = ConservAttack(CFG).run(X, net, movable=mask)
    changed = res.X_adv != X
    assert not changed[~mask].any()
    assert changed[mask].sum() > 0
    with pytest.raises(InputError, match="movable must have shape"):
        ConservAttack(CFG).run(X, net, movable=mask[:, :2])
