"""The sharded attack on an in-process LocalCluster with 2 workers: equivalence with the
single-process fast path, global budgets on the union, checkpoint and resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from _cluster import inproc_cluster, worker_closer
from _toys import SHARDED_CFG, linear_toy
from advsyst.attacks import ConservAttack
from advsyst.errors import ConfigError, InputError
from advsyst.stats import delta_fn, jsd_per_feature

distributed = pytest.importorskip("distributed")

from advsyst.distributed import (  # noqa: E402
    CheckpointMismatch,
    ShardSource,
    sharded_attack,
)
from advsyst.distributed import gpu_workers as distributed_gpu_workers  # noqa: E402
from advsyst.distributed._engine_glue import UnsupportedBySharding  # noqa: E402

CFG = SHARDED_CFG
_toy = linear_toy


@pytest.fixture(scope="module")
def toy():
    return _toy()


def _same_history(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for k in ("iteration", "n_fooled", "events_attacked", "events_moved", "entries_moved",
                  "undone"):  # fmt: skip
            assert ra[k] == rb[k], (k, ra, rb)
        # the state and the weighted fooling ratio are reduced from per-shard sums: equal up
        # to floating-point reassociation
        assert ra["fooling_ratio"] == pytest.approx(rb["fooling_ratio"], rel=1e-12)
        assert ra["dfn"] == pytest.approx(rb["dfn"], rel=1e-9, abs=1e-15)
        assert ra["jsd_max"] == pytest.approx(rb["jsd_max"], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"order": "margin", "optimize_already_fooled": True, "budget": "per_change",
         "use_no_change": False, "max_jsd": 0.05, "max_dfn": 0.01},
        {"weighted": True, "target": "label", "track_best": False, "units": "range",
         "min_change": 0.002, "step": 0.004, "integer_features": [3]},
    ],
    ids=["default", "margin-per_change", "weighted-masked-label"],
)  # fmt: skip
def test_equals_single_process_fast_path(toy, client, extra):
    """Same seed, blocks and event order: X_adv equal bit for bit to ConservAttack.run."""
    X, model = toy
    extra = dict(extra)
    kw = {}
    if extra.pop("weighted", False):
        rng = np.random.default_rng(5)
        X = X.copy()
        X[:, 3] = rng.integers(0, 6, size=len(X))
        kw = {
            "weights": rng.uniform(0.5, 1.5, len(X)),
            "attack_mask": rng.random(len(X)) < 0.7,
            "constraint_mask": rng.random(len(X)) < 0.8,
            "y": (X[:, 0] > 0).astype(int),
        }
    cfg = {**CFG, **extra}
    res = sharded_attack(client, X, model, config=cfg, **kw)
    loc = ConservAttack(cfg).run(X, model, **kw)
    assert res.provenance["sharded"]["n_shards"] == 2
    assert res.history[0]["events_moved"] > 0
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)
    for k in ("fooled", "moved", "pred_clean", "pred_adv", "attack_mask", "constraint_mask"):
        np.testing.assert_array_equal(getattr(res, k), getattr(loc, k), err_msg=k)
    assert res.best_iteration == loc.best_iteration
    _same_history(res.history, loc.history)
    assert res.metrics["fooling_ratio"] == loc.metrics["fooling_ratio"]
    if "y" in kw:
        assert res.metrics["auroc_adv"] == pytest.approx(loc.metrics["auroc_adv"])


@pytest.mark.parametrize(
    "extra",
    [
        {"randomize_step": True},
        {"num_candidates": 7},
        {"randomize_step": True, "budget": "per_change", "max_dfn": 0.01,
         "envelope": {"*": {"relative": 0.3}}},
    ],
    ids=["randomize_step", "num_candidates", "randomize-per_change-envelope"],
)  # fmt: skip
def test_seeded_draws_equal_single_process(toy, client, extra):
    """Per-event draws are seeded by the global event id, not the shard's local row: 3
    uneven shards give the single-process result bit for bit (the draws differ from the
    grid run, so the setting is really used)."""
    X, model = toy
    cfg = {**CFG, **extra}
    res = sharded_attack(client, X, model, config=cfg, n_shards=3)
    loc = ConservAttack(cfg).run(X, model)
    assert res.history[0]["entries_moved"] > 0
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)
    _same_history(res.history, loc.history)
    grid = ConservAttack({**cfg, "randomize_step": False, "num_candidates": None}).run(X, model)
    assert not np.array_equal(grid.X_adv, loc.X_adv)


def test_new_engine_options_equal_single_process(toy, client):
    """Signed weights (negative slots clamp), a detected discrete feature moved only between
    its observed values, per-entry envelopes, a movable mask and the binning-robust rows
    (the default): bit for bit the single-process fast path, the same robust-row metrics."""
    X, model = toy
    rng = np.random.default_rng(11)
    X = X.copy()
    X[:, 2] = rng.integers(0, 5, size=len(X)).astype(float)  # 5 values: discrete support
    w = rng.choice([-1.0, 1.0, 2.0], p=[0.2, 0.5, 0.3], size=len(X))
    names = ["a", "b", "c", "d"]
    mov = rng.random(X.shape) < 0.8
    cfg = {**CFG, "max_jsd": 0.05, "max_dfn": 0.05, "num_bins": 10,
           "envelope": {"a": {"relative": 0.2}, "*": {"absolute": 0.15}}}  # fmt: skip
    kw = {"weights": w, "feature_names": names, "movable": mov}
    res = sharded_attack(client, X, model, config=cfg, **kw)
    loc = ConservAttack(cfg).run(X, model, **kw)
    assert res.provenance["sharded"]["n_shards"] == 2
    assert res.history[0]["entries_moved"] > 0
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)
    _same_history(res.history, loc.history)
    assert res.metrics["discrete_features"] == loc.metrics["discrete_features"] == [2]
    assert set(np.unique(res.X_adv[:, 2])) <= set(np.unique(X[:, 2]))
    env = np.where(np.arange(4) == 0, 0.2 * np.abs(X), 0.15)
    assert (np.abs(res.X_adv - X) <= env + 1e-12).all()
    assert res.X_adv[:, 0].tolist() != X[:, 0].tolist()  # the per-entry bound is exercised
    assert not (res.X_adv != X)[~mov].any() and (res.X_adv != X)[mov].any()
    rb, lb = res.metrics["robust"], loc.metrics["robust"]
    assert len(rb["binnings"]) > 1 and rb["binnings"] == lb["binnings"]
    np.testing.assert_array_equal(rb["limits"], lb["limits"])
    np.testing.assert_allclose(rb["jsd"], lb["jsd"], rtol=1e-12, atol=1e-15)
    assert rb["max_limit_ratio"] <= 1.0 + 1e-9
    assert res.metrics["envelope"] == loc.metrics["envelope"]
    assert res.metrics["negative_slots"] == loc.metrics["negative_slots"]


def test_cumulative_budget_holds_on_the_union(client):
    """Tight budgets that the sharded run hits: brute-force recomputation on the union."""
    X, model = _toy(n=800, seed=7)
    cfg = {**CFG, "max_jsd": 0.01, "max_dfn": 0.004, "n_iterations": 4}
    res = sharded_attack(client, X, model, config=cfg, n_shards=3)
    assert res.provenance["sharded"]["n_shards"] == 3
    jsd = jsd_per_feature(X, res.X_adv, num_bins=20)
    dfn = delta_fn(X, res.X_adv)
    assert jsd.max() <= 0.01 + 1e-12
    assert dfn <= 0.004 + 1e-12
    assert max(jsd.max() / 0.01, dfn / 0.004) > 0.8  # the budget was actually used
    assert res.metrics["dfn"] == pytest.approx(dfn, rel=1e-9)
    # three shards (uneven) are still the fast path with the same blocks
    loc = ConservAttack(cfg).run(X, model)
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)


def test_file_shards_are_the_concatenation_in_interleaved_order(toy, client, tmp_path):
    """Shards read from .npz files: rows concatenated, events ordered by local row x S +
    shard, i.e. the single-process run on the interleaved rows."""
    X, model = toy
    parts = [X[:260], X[260:]]
    paths = []
    for k, p in enumerate(parts):
        paths.append(tmp_path / f"shard{k}.npz")
        np.savez(paths[-1], X=p)
    res = sharded_attack(client, [str(paths[0]), ShardSource(path=str(paths[1]))], model,
                         config=CFG)  # fmt: skip
    # the interleaved permutation: local row k of shard s has key 2k + s
    keys = np.concatenate([np.arange(260) * 2, np.arange(240) * 2 + 1])
    perm = np.argsort(keys, kind="stable")
    loc = ConservAttack(CFG).run(np.concatenate(parts)[perm], model)
    np.testing.assert_array_equal(res.X_adv[perm], loc.X_adv)
    assert res.provenance["sharded"]["layout"] == "concat"


class _Abort(Exception):
    pass


def test_resume_after_abort_is_bit_for_bit(toy, client, tmp_path):
    X, model = toy
    full = sharded_attack(client, X, model, config=CFG)
    ck = tmp_path / "ck"

    def abort(ev):
        if ev["iteration"] == 2 and ev["round"] == 2:
            raise _Abort

    with pytest.raises(_Abort):
        sharded_attack(client, X, model, config=CFG, checkpoint_dir=ck, callback=abort)
    assert (ck / "state.npz").exists() and len(list((ck / "log").glob("seg_*.npz"))) > 0
    seen = []
    res = sharded_attack(client, X, model, config=CFG, checkpoint_dir=ck, resume=True,
                         callback=seen.append)  # fmt: skip
    assert res.provenance["sharded"]["resumed"]
    assert (seen[0]["iteration"], seen[0]["round"]) == (2, 3)  # continued, not restarted
    np.testing.assert_array_equal(res.X_adv, full.X_adv)
    np.testing.assert_array_equal(res.fooled, full.fooled)
    assert [h["entries_moved"] for h in res.history] == [h["entries_moved"] for h in full.history]
    assert res.best_iteration == full.best_iteration


def test_resume_refuses_other_config_or_data(toy, client, tmp_path):
    X, model = toy
    ck = tmp_path / "ck"
    cfg1 = {**CFG, "n_iterations": 1}
    sharded_attack(client, X, model, config=cfg1, checkpoint_dir=ck)
    with pytest.raises(InputError, match="already holds a run"):
        sharded_attack(client, X, model, config=cfg1, checkpoint_dir=ck)
    with pytest.raises(CheckpointMismatch, match=r"max_jsd_single_change: 0\.03 .*, 0\.02 now"):
        sharded_attack(client, X, model, config={**cfg1, "max_jsd": 0.02}, checkpoint_dir=ck,
                       resume=True)  # fmt: skip
    X2 = X.copy()
    X2[7, 0] += 1e-9  # row 7 lives in shard 1
    with pytest.raises(CheckpointMismatch, match="data of shard 1") as ei:
        sharded_attack(client, X2, model, config=cfg1, checkpoint_dir=ck, resume=True)
    assert "shard 0" not in str(ei.value)
    with pytest.raises(InputError, match="no checkpoint"):
        sharded_attack(client, X, model, config=cfg1, checkpoint_dir=tmp_path / "x", resume=True)


def test_bad_input_and_unsupported_config(toy, client):
    X, model = toy
    with pytest.raises(UnsupportedBySharding, match="use method='fast' with the same budget"):
        sharded_attack(client, X, model, config={**CFG, "method": "exact"})
    with pytest.raises(ConfigError, match="unknown CONSERVAttack config key"):
        sharded_attack(client, X, model, config={**CFG, "nonsense": 1})
    Xb = X.copy()
    Xb[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN/inf"):
        sharded_attack(client, Xb, model, config=CFG)
    with pytest.raises(InputError, match="weights has 3 entries"):
        sharded_attack(client, X, model, weights=np.ones(3), config=CFG)
    with pytest.raises(InputError, match="constraint set has 0 events"):
        sharded_attack(client, X, model, constraint_mask=np.zeros(len(X), bool), config=CFG)
    with pytest.raises(InputError, match="total event weight of the constraint set"):
        sharded_attack(client, X, model, weights=-np.ones(len(X)), config=CFG)
    with pytest.raises(InputError, match=r"movable must have shape \(500, 4\)"):
        sharded_attack(client, X, model, movable=np.ones((len(X), 2), bool), config=CFG)
    with pytest.raises(UnsupportedBySharding, match="use_disco"):
        sharded_attack(client, X, model, config={**CFG, "use_disco": True})


def test_lost_worker_in_process_is_rebuilt(toy):
    """A worker closed mid-attack (in-process cluster; the killed-process version is in
    test_sharded_processes.py): its shard is rebuilt on the other worker from the log."""
    X, model = toy
    with inproc_cluster() as (cluster, c):
        close_worker = worker_closer(cluster)
        closed = close_worker.closed

        res = sharded_attack(c, X, model, config=CFG, callback=close_worker)
    assert closed
    rb = res.provenance["sharded"]["rebuilds"]
    assert [(r["shard"], r["lost_worker"]) for r in rb] == [(1, closed[0])]
    assert res.provenance["sharded"]["workers"][0] == res.provenance["sharded"]["workers"][1]
    loc = ConservAttack(CFG).run(X, model)
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)


def test_gpu_resource_workers_hold_the_shards(toy):
    """Workers advertising GPU=1 get the shards (and CUDA when they have it: not here)."""
    X, model = toy
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
            resources={"GPU": 1},
        ) as cluster,
        distributed.Client(cluster) as c,
    ):  # fmt: skip
        res = sharded_attack(c, X, model, config=CFG)
        gpu = set(distributed_gpu_workers(c))
    sh = res.provenance["sharded"]
    assert sh["n_shards"] == 2 and set(sh["workers"]) == gpu and len(gpu) == 2
    assert sh["devices"] == ["cpu", "cpu"]  # "auto" on a worker without CUDA
    np.testing.assert_array_equal(res.X_adv, ConservAttack(CFG).run(X, model).X_adv)


@pytest.mark.parametrize(
    "noise,unit", [(0.5, False), (None, False), (0.5, True)],
    ids=["resolution-limits", "jsd-limits", "unit-weights"],
)  # fmt: skip
def test_setup_from_shard_reductions_equals_engine_setup(noise, unit):
    """The setup built from per-shard reductions (no events on the coordinator) against the
    engine's own setup on the union, recomputed from the events: signed integer weights
    (histograms exact), a discrete feature, a constant-in-the-constraint-set feature, an
    attack mask and a constraint mask, three uneven shards."""
    from advsyst.attacks.conservattack import _State
    from advsyst.distributed import _engine_glue as G
    from advsyst.stats import FeatureBinning

    rng = np.random.default_rng(3)
    n = 700
    X = rng.normal(size=(n, 5))
    X[:, 2] = rng.integers(0, 6, size=n)  # discrete support
    cm = rng.random(n) < 0.8
    X[cm, 4] = 1.5  # constant on the constraint set, not elsewhere
    w = rng.choice([-1.0, 1.0, 2.0, 3.0], p=[0.15, 0.45, 0.2, 0.2], size=n)
    if unit:
        w = np.ones(n)
    am = rng.random(n) < 0.6
    cfg = G.ConservAttackConfig.from_dict({**CFG, "robust_noise_fraction": noise,
                                           "robust_bootstrap": 50})  # fmt: skip
    names = list("abcde")
    parts = [np.arange(n) < 100, (np.arange(n) >= 100) & (np.arange(n) < 450), np.arange(n) >= 450]
    shards = [(X[p], w[p], am[p], cm[p] & (w[p] != 0)) for p in parts]
    asked = []

    def clean_stats(mean, layout, want_w2):
        asked.append(want_w2)
        out = [G.shard_clean_stats(Xs, ws, cs, mean, layout, want_w2) for Xs, ws, _, cs in shards]
        # unit weights: the Σw² histograms are the Σw ones and are not sent
        assert all((o.get("H2") is None) == (unit or not want_w2) for o in out)
        return out

    summaries = [G.shard_summary(*sh, cfg.max_discrete_values) for sh in shards]
    setup, state = G.setup_from_summaries(cfg, 5, summaries, names, clean_stats)
    assert asked == [noise is not None]

    eng = G.ConservAttack(cfg)
    X0, _, w0, am0, cm0, names0 = eng._prepare(X, None, w, am, cm, names)
    ref = eng._feature_setup(X0, w0, cm0, names0)
    for k, r in zip(("frozen", "kind", "sup", "discrete", "valid", "lo", "hi", "mc", "st"), ref):
        np.testing.assert_array_equal(getattr(setup, k), r, err_msg=k)
    assert setup.discrete.tolist() == [False, False, True, False, False]
    assert setup.frozen[4] and not setup.valid[4]
    binning = FeatureBinning.from_data(X0[cm0], cfg.num_bins)
    np.testing.assert_array_equal(setup.binning.edges, binning.edges)
    spec, extra, limits = eng._robust_rows(X0[cm0], w0[cm0], binning)
    assert setup.spec == spec and len(setup.extra) == len(extra) > 0
    for a, b in zip(setup.extra, extra):
        np.testing.assert_array_equal(a.edges, b.edges)
    np.testing.assert_array_equal(setup.limits, limits)
    if noise is not None:
        assert np.isfinite(limits).all()
    ref_state = _State(X0, w0, cm0, binning, ref[4], extra, limits)
    for k in ("H0", "H", "hs", "edges"):
        np.testing.assert_array_equal(getattr(state, k), getattr(ref_state, k), err_msg=k)
    assert state.H is not state.H0
    for k in ("mean", "cov", "C0", "Ccur", "Ssum", "F2"):
        np.testing.assert_allclose(getattr(state, k), getattr(ref_state, k), rtol=1e-12,
                                   atol=1e-14, err_msg=k)  # fmt: skip
    assert state.W == pytest.approx(ref_state.W, rel=1e-15)
    assert state.norm0 == pytest.approx(ref_state.norm0, rel=1e-12)


def test_setup_never_gathers_the_events(client):
    """What the shards send to the coordinator during the setup does not grow with the
    number of events (the old setup gathered X, y, w and the masks: 8·(d + 1) bytes per
    event and more), and stays far below the events' size."""
    cfg = {**CFG, "n_iterations": 1, "robust_binnings": None}
    sent = {}
    for n in (400, 4000):
        X, model = _toy(n=n, seed=4)
        res = sharded_attack(client, X, model, config=cfg)
        sent[n] = res.provenance["sharded"]["timing"]["setup_bytes_from_workers"]
        assert res.history[0]["events_moved"] > 0
    assert sent[400] == sent[4000] > 0
    assert sent[4000] < 0.25 * 4000 * 4 * 8
