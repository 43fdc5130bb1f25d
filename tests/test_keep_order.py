"""``keep_order``: groups of features (constituent pT stored sorted) whose order within every
event the attack keeps, recomputed independently of the engine."""

from __future__ import annotations

import numpy as np
import pytest

import _bruteforce as bf
from _cluster import inproc_cluster, worker_closer
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


# --------------------------------------------------------------------------- sharded
def _sharded_toy(n=600, seed=4):
    """Sorted pT (three columns), eta, mass; signed weights; a linear tagger that pulls
    pt_1 down and pt_2/pt_3 up, so that an unconstrained attack swaps neighbours."""
    import torch

    rng = np.random.default_rng(seed)
    pts = -np.sort(-(rng.exponential(20, (n, 3)) + 5), axis=1)
    X = np.column_stack([pts, rng.normal(0, 1.5, n), rng.normal(90, 10, n)])
    m = torch.nn.Sequential(torch.nn.Linear(5, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.tensor([[-0.08, 0.1, 0.08, 0.5, 0.01]])
        m[0].bias[:] = torch.tensor([-1.8])
    w = rng.choice([-1.0, 1.0, 2.0], p=[0.15, 0.55, 0.3], size=n)
    return X, torch.jit.script(m.eval()), w


SHARDED_CFG = dict(min_change=0.002, step=0.01, units="range", num_bins=40, n_iterations=4,
                   progress=False, max_jsd=0.1, max_dfn=0.05, robust_binnings=None,
                   block_size=64)  # fmt: skip
ETA_ENV = {"eta": {"absolute": 0.03}}  # one grid step fits, two do not


@pytest.fixture(scope="module")
def sharded_toy():
    return _sharded_toy()


def _same_run(res, loc):
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)
    assert res.metrics["keep_order"] == loc.metrics["keep_order"]
    assert [h["entries_moved"] for h in res.history] == [h["entries_moved"] for h in loc.history]
    assert [h["undone"] for h in res.history] == [h["undone"] for h in loc.history]
    assert res.best_iteration == loc.best_iteration


@pytest.mark.parametrize(
    "n_shards, groups, envelope, output, scorer",
    [(2, ["pt_*"], ETA_ENV, False, "numba"),
     (3, [["pt_3", "pt_2", "pt_1"]], ETA_ENV, True, "numba"),
     (3, [[0, 1, 2]], None, False, "numba"),
     (2, ["pt_*"], ETA_ENV, False, "torch")],
    ids=["2-shards-envelope", "3-shards-non-decreasing-listed-output-dir", "3-shards-plain",
         "2-shards-envelope-torch-scorer"],
)  # fmt: skip
def test_sharded_equals_single_process(sharded_toy, client, tmp_path, n_shards, groups, envelope,
                                       output, scorer):  # fmt: skip
    """Uneven shards, signed weights, an envelope on another feature (numba or the torch
    scorer on the workers): the sharded run with keep_order is ConservAttack.run bit for
    bit, and the order holds; the same sharded run without keep_order breaks it (so the
    bounds are what keeps it)."""
    from advsyst.distributed import sharded_attack

    X, model, w = sharded_toy
    assert _descending(X, [0, 1, 2]).all()
    cfg = {**SHARDED_CFG, "envelope": envelope}
    kw = {"weights": w, "feature_names": NAMES}
    out = {"output_dir": tmp_path / "out"} if output else {}
    res = sharded_attack(client, X, model, config={**cfg, "keep_order": groups},
                         n_shards=n_shards, scorer=scorer, **kw, **out)  # fmt: skip
    if output:
        assert "keep_order" in res.metrics  # the reduced recheck, without any gather
        res = res.load()
    loc = ConservAttack(cfg, keep_order=groups).run(X, model, **kw)
    assert res.provenance["sharded"]["n_shards"] == n_shards
    assert {sc.split(":")[0] for sc in res.provenance["sharded"]["scorers"]} == {scorer}
    _same_run(res, loc)
    assert res.metrics["keep_order"] == {"groups": [[0, 1, 2]], "events_out_of_order": 0}
    assert _descending(res.X_adv, [0, 1, 2]).all()
    assert (res.X_adv[:, :3] != X[:, :3]).any(axis=1).sum() > 100  # the pT do move
    if envelope is not None:  # the envelope is used, and held
        assert (np.abs(res.X_adv[:, 3] - X[:, 3]) <= 0.03 + 1e-12).all()
        assert (res.X_adv[:, 3] != X[:, 3]).sum() > 10
    free = sharded_attack(client, X, model, config=cfg, n_shards=n_shards, **kw)
    assert (~_descending(free.X_adv, [0, 1, 2])).sum() > 10
    assert "keep_order" not in free.metrics


MID_CFG = {**SHARDED_CFG, "envelope": ETA_ENV, "keep_order": ["pt_*"]}


@pytest.fixture(scope="module")
def single_ordered(sharded_toy):
    X, model, w = sharded_toy
    loc = ConservAttack(MID_CFG).run(X, model, weights=w, feature_names=NAMES)
    assert loc.history[1]["entries_moved"] > 0
    return loc


def test_sharded_rebuild_mid_iteration(sharded_toy, single_ordered):
    """A shard rebuilt mid-iteration (its worker closed) recovers the bounds of the
    iteration's start (it replays the earlier iterations, begins the iteration, then
    replays the iteration's moves): bit for bit the single-process run (with the bounds of
    the clean rows instead, it is not)."""
    pytest.importorskip("distributed")
    from advsyst.distributed import sharded_attack

    X, model, w = sharded_toy
    with inproc_cluster() as (cluster, c):
        close_worker = worker_closer(cluster)
        closed = close_worker.closed

        res = sharded_attack(c, X, model, weights=w, feature_names=NAMES, config=MID_CFG,
                             callback=close_worker)  # fmt: skip
    assert closed
    assert [r["shard"] for r in res.provenance["sharded"]["rebuilds"]] == [1]
    _same_run(res, single_ordered)


class _Abort(Exception):
    pass


def test_sharded_resume_mid_iteration(sharded_toy, single_ordered, client, tmp_path):
    """A run resumed from a checkpoint written mid-iteration (3 uneven shards): bit for bit
    the single-process run."""
    from advsyst.distributed import sharded_attack

    X, model, w = sharded_toy
    kw = {"weights": w, "feature_names": NAMES, "config": MID_CFG, "n_shards": 3}
    ck = tmp_path / "ck"

    def abort(ev):
        if ev["iteration"] == 2 and ev["round"] == 3:
            raise _Abort

    with pytest.raises(_Abort):
        sharded_attack(client, X, model, checkpoint_dir=ck, callback=abort, **kw)
    seen = []
    res = sharded_attack(client, X, model, checkpoint_dir=ck, resume=True, callback=seen.append,
                         **kw)  # fmt: skip
    assert res.provenance["sharded"]["resumed"]
    assert (seen[0]["iteration"], seen[0]["round"]) == (2, 4)  # continued mid-iteration
    _same_run(res, single_ordered)


def test_sharded_unsorted_clean_data_is_refused_from_counts(sharded_toy, client):
    """Clean data that breaks a group's order in events spread over the shards: the same
    InputError, with the same counts (recomputed here with plain numpy), as on one
    machine; the shards only send counts."""
    from advsyst.distributed import sharded_attack
    from advsyst.distributed.shards import ShardActor

    X, model, w = sharded_toy
    X = X.copy()
    X[[3, 10, 17], 1] = X[[3, 10, 17], 0] + 1.0  # pt_2 > pt_1 in 3 events on 3 shards
    down = int((np.diff(X[:, :3], axis=1) > 0).any(axis=1).sum())
    up = int((np.diff(X[:, :3], axis=1) < 0).any(axis=1).sum())
    assert down == 3 and up == len(X)
    cfg = {**SHARDED_CFG, "keep_order": ["pt_*"]}
    with pytest.raises(InputError) as single:
        ConservAttack(cfg).run(X, model, weights=w, feature_names=NAMES)
    sent = []
    orig = ShardActor.order_counts

    def spy(self, columns):
        out = orig(self, columns)
        sent.append(out)
        return out

    ShardActor.order_counts = spy  # in-process workers: the actors run this class
    try:
        with pytest.raises(InputError) as sharded:
            sharded_attack(client, X, model, weights=w, feature_names=NAMES, config=cfg,
                           n_shards=3)  # fmt: skip
    finally:
        ShardActor.order_counts = orig
    assert str(sharded.value) == str(single.value)
    assert f"{down} event(s) break a non-increasing order, {up} a non-decreasing" in str(
        sharded.value
    )
    assert len(sent) == 3 and all(s.shape == (1, 2) for s in sent)
    assert sum(s[0, 0] for s in sent) == down


def test_sharded_recheck_counts_events_out_of_order_over_the_shards():
    """The reduced final recheck sums the shards' events out of order and raises
    BudgetViolation naming their total (a result the attack never produces)."""
    from advsyst.attacks import _final as F
    from advsyst.distributed import _engine_glue as G
    from advsyst.errors import BudgetViolation

    X, _, _ = _sharded_toy(n=400, seed=9)
    cfg = G.ConservAttackConfig.from_dict({**SHARDED_CFG, "keep_order": ["pt_*"]})
    setup, _, w, cm = G.setup_in_memory(cfg, X, None, None, None, None, NAMES)
    assert [g.tolist() for g in setup.groups] == [[0, 1, 2]]
    Xa = X.copy()
    # pt_2 nudged just above pt_1 in 5 middling events, 2 in the first part, 3 in the second
    mid = np.argsort(X[:, 1])[150:250]
    mid = np.concatenate([mid[mid < 150][:2], mid[mid >= 150][:3]])
    Xa[mid, 1] = np.nextafter(X[mid, 0], np.inf)
    assert (~_descending(Xa, [0, 1, 2])).sum() == 5
    am, pred = np.ones(len(X), bool), np.zeros(len(X), np.int64)
    parts = [
        G.shard_final(setup, X[p], Xa[p], None, w[p], am[p], cm[p], pred[p], pred[p],
                      setup.lo, setup.hi, None)
        for p in (np.arange(len(X)) < 150, np.arange(len(X)) >= 150)
    ]  # fmt: skip
    assert [p["events_out_of_order"] for p in parts] == [2, 3]

    def covs(m0, m):
        return [F.final_covs(X, Xa, w, cm, m0, m)]

    with pytest.raises(BudgetViolation, match=r"out of order in 5 event\(s\)"):
        G.recheck(cfg, setup, parts, covs, lambda t: [np.zeros(len(t))], None)
    ok = [G.shard_final(setup, X, X, None, w, am, cm, pred, pred, setup.lo, setup.hi, None)]
    m = G.recheck(cfg, setup, ok, lambda m0, m: [F.final_covs(X, X, w, cm, m0, m)],
                  lambda t: [np.zeros(len(t))], None)  # fmt: skip
    assert m["keep_order"] == {"groups": [[0, 1, 2]], "events_out_of_order": 0}


def test_sharded_attack_accepts_keep_order():
    from advsyst.distributed._engine_glue import UnsupportedBySharding, check_supported

    check_supported(ConservAttack(keep_order=["pt_*"]).config)
    with pytest.raises(UnsupportedBySharding, match="use_disco") as ei:
        check_supported(ConservAttack(keep_order=["pt_*"], use_disco=True).config)
    assert "keep_order" not in str(ei.value)
