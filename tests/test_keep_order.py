"""``keep_order``: groups of features (constituent pT stored sorted) whose order within every
event the attack keeps, recomputed independently of the engine."""

from __future__ import annotations

import numpy as np
import pytest

import _bruteforce as bf
from _toys import fit_mlp
from advsyst.attacks import ConservAttack
from advsyst.attacks.conservattack import order_bounds, order_violations, resolve_order_groups
from advsyst.errors import ConfigError, InputError

NAMES = ["pt_1", "pt_2", "pt_3", "eta", "mass"]


def _descending(X: np.ndarray, cols: list[int]) -> np.ndarray:
    """Per event: the columns are non-increasing (plain numpy, not the engine's check)."""
    return (np.diff(X[:, cols], axis=1) <= 0).all(axis=1)


def _sorted_sample(rng, n):
    """Rows non-increasing over columns 0..3 across many magnitudes and signs, with exact
    ties and neighbours one ulp apart; column 4 free."""
    V = -np.sort(-(rng.choice([0.0, 1e-3, 1.0, 1e3, -5.0], (n, 4)) * rng.random((n, 4))), axis=1)
    V[:50, 1] = V[:50, 0]  # exact ties
    V[50:100, 1] = np.nextafter(V[50:100, 0], -np.inf)
    V[50:100, 2] = np.minimum(V[50:100, 2], V[50:100, 1])
    V[50:100, 3] = np.minimum(V[50:100, 3], V[50:100, 2])
    return np.column_stack([V, rng.normal(size=n)])


def test_bounds_let_no_pair_swap_even_at_the_bounds_of_both():
    rng = np.random.default_rng(3)
    X = _sorted_sample(rng, 4000)
    assert _descending(X, [0, 1, 2, 3]).all()
    groups = resolve_order_groups(["c*"], ["c0", "c1", "c2", "c3", "x"], X)
    lo, hi = order_bounds(X, groups, np.full((1, 5), -np.inf), np.full((1, 5), np.inf))
    assert np.isinf(lo[:, 4]).all() and np.isinf(hi[:, 4]).all()  # not in a group
    # every entry moved to either of its bounds the way the kernels do (x + (bound - x)),
    # all at once: the order survives every combination
    for pick in range(16):
        to_hi = (pick >> np.arange(4)) & 1
        Y = X.copy()
        for j in range(4):
            b = hi[:, j] if to_hi[j] else lo[:, j]
            ok = np.isfinite(b) & ((b - X[:, j]) * (1 if to_hi[j] else -1) > 0)
            Y[ok, j] = X[ok, j] + (b[ok] - X[ok, j])
        assert _descending(Y, [0, 1, 2, 3]).all()
        assert order_violations(Y, groups) == 0
    # tied neighbours cannot move towards each other
    assert (lo[:50, 0] >= X[:50, 0]).all() and (hi[:50, 1] <= X[:50, 1]).all()
    # the bounds reach half-way to the neighbour (up to the margin)
    gap = X[:, 0] - X[:, 1]
    wide = gap > 1e-6
    np.testing.assert_allclose((X[:, 1] + gap / 2)[wide], hi[wide, 1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((X[:, 1] + gap / 2)[wide], lo[wide, 0], rtol=1e-12, atol=1e-12)
    # the check sees a swap
    Z = X.copy()
    Z[wide, 0], Z[wide, 1] = X[wide, 1], X[wide, 0]
    assert order_violations(Z, groups) == wide.sum() > 0


def test_non_decreasing_groups_and_unsorted_data():
    X = np.array([[1.0, 2.0, 2.0, 9.0], [0.0, 0.5, 3.0, 1.0]])
    (g,) = resolve_order_groups([["a", "b", "c"]], ["a", "b", "c", "d"], X)
    assert g.tolist() == [2, 1, 0]  # stored non-decreasing: taken reversed
    lo, hi = order_bounds(X, [g], np.full((1, 4), -np.inf), np.full((1, 4), np.inf))
    assert hi[0, 1] <= 2.0 and lo[0, 2] >= 2.0  # the tie b == c stays in order
    assert hi[0, 0] == pytest.approx(1.5) and lo[0, 1] == pytest.approx(1.5)
    with pytest.raises(
        InputError,
        match=r"not sorted in every clean event: 2 event\(s\) break a non-increasing order, 1 a",
    ):
        resolve_order_groups([["a", "b", "c", "d"]], ["a", "b", "c", "d"], X)


def test_bounds_respect_the_bounds_they_are_given():
    X = np.array([[5.0, 3.0, 1.0]])
    lo, hi = order_bounds(X, [np.array([0, 1, 2])], np.array([[4.5, 0.0, 0.9]]),
                          np.array([[5.5, 3.2, 9.0]]))  # fmt: skip
    assert lo[0, 0] == 4.5 and hi[0, 0] == 5.5  # the given bounds are tighter
    assert lo[0, 1] == pytest.approx(2.0) and hi[0, 1] == 3.2
    assert lo[0, 2] == 0.9 and hi[0, 2] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "bad, match",
    [("pt_*", "list of groups"), ([["pt_1"]], "fewer than two"), ([["pt_1", "nope"]], "nope"),
     ([[]], "non-empty"), ([[1.5, 2]], "names, globs or column indices"),
     ([["pt_1", True]], "column indices")],
)  # fmt: skip
def test_bad_groups_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        cfg = ConservAttack(keep_order=bad).config
        resolve_order_groups(cfg.keep_order, NAMES, np.zeros((3, 5)))


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(5)
    n = 1500
    pts = -np.sort(-(rng.exponential(20, (n, 3)) + 5), axis=1)
    X = np.column_stack([pts, rng.normal(0, 1.5, n), rng.normal(90, 10, n)])
    y = ((X[:, 1] - X[:, 2]) / 10 - X[:, 3] / 2 + rng.normal(size=n) > 0.5).astype(int)
    net = fit_mlp(X, y, standardise=True)

    w = rng.uniform(0.2, 2.0, n)
    return X, y, net, w


CFG = dict(min_change=0.002, step=0.01, units="range", num_bins=40, n_iterations=5,
           progress=False, max_jsd=0.1, max_dfn=0.05, robust_binnings=None)  # fmt: skip


@pytest.mark.parametrize("method", ["fast", "exact"])
def test_attack_keeps_the_order_and_every_budget(toy, method):
    X, y, net, w = toy
    assert _descending(X, [0, 1, 2]).all()
    res = ConservAttack(CFG, method=method, keep_order=["pt_*"]).run(
        X, net, y=y, weights=w, feature_names=NAMES
    )
    assert _descending(res.X_adv, [0, 1, 2]).all()
    assert res.metrics["keep_order"] == {"groups": [[0, 1, 2]], "events_out_of_order": 0}
    moved_pt = (res.X_adv[:, :3] != X[:, :3]).any(axis=1)
    assert moved_pt.sum() > 100  # the constrained features do move
    assert res.fooling_ratio > 0.05
    # the budgets, recomputed from scratch with plain numpy in the moved, weighted state
    assert bf.jsd_per_feature(X, res.X_adv, w, num_bins=40).max() <= 0.1 + 1e-9
    assert bf.dfn(X, res.X_adv, w) <= 0.05 + 1e-9
    # the same attack without the constraint breaks the order (this test can fail)
    free = ConservAttack(CFG, method=method).run(X, net, y=y, weights=w, feature_names=NAMES)
    assert (~_descending(free.X_adv, [0, 1, 2])).sum() > 10
    assert "keep_order" not in free.metrics


def test_groups_by_index_without_names(toy):
    X, y, net, w = toy
    res = ConservAttack(CFG, keep_order=[[0, 1, 2]], n_iterations=2).run(X, net, weights=w)
    assert _descending(res.X_adv, [0, 1, 2]).all()
    assert (res.X_adv[:, :3] != X[:, :3]).any()


def test_sharded_attack_refuses_keep_order():
    from advsyst.distributed._engine_glue import UnsupportedBySharding, check_supported

    with pytest.raises(UnsupportedBySharding, match="keep_order"):
        check_supported(ConservAttack(keep_order=["pt_*"]).config)
