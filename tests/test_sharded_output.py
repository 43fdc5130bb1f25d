"""The sharded attack's end without the gather: the final recheck from per-shard reductions
against brute-force recomputations on the gathered arrays, shard files written on the
workers (``output_dir``), final-phase bytes independent of the number of events, budget
violations caught by the reduced recheck, and ``--shard-output`` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import _bruteforce as bf
from _cluster import inproc_cluster
from _toys import SHARDED_CFG, linear_toy
from advsyst.attacks import ConservAttack
from advsyst.attacks import _final as F
from advsyst.attacks.metrics import auroc
from advsyst.attacks.model import as_adapter
from advsyst.errors import BudgetViolation, InputError
from advsyst.stats import FeatureBinning

distributed = pytest.importorskip("distributed")

from advsyst.distributed import ShardedAttackResult, sharded_attack  # noqa: E402
from advsyst.distributed.shards import ShardActor  # noqa: E402

CFG = SHARDED_CFG
_toy = linear_toy


def _weighted_case(n=600, seed=11):
    """Signed weights (about 10 % negative), a constraint mask, an attack mask, labels."""
    X, model = _toy(n=n, seed=seed)
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, n) * np.where(rng.random(n) < 0.1, -1.0, 1.0)
    kw = {
        "weights": w,
        "attack_mask": rng.random(n) < 0.8,
        "constraint_mask": rng.random(n) < 0.85,
        "y": (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int),
    }
    return X, model, kw


def _bf_hist_jsd(X0, X, w, edges):
    """Brute-force JSD of one feature: recount (np.histogram), clip negative slots (the
    signed-weight convention), renormalise, distance."""
    h0 = np.clip(bf.hist(X0, w, edges), 0, None)
    h = np.clip(bf.hist(X, w, edges), 0, None)
    return bf.jsd(h0, h)


@pytest.mark.parametrize("n_shards", [2, 3])
def test_reduced_recheck_equals_bruteforce_on_gathered_arrays(client, n_shards):
    """Moved, weighted (negative weights), masked, with extra binnings and an envelope: every
    metric of the reduced recheck equals its brute-force recomputation on the result."""
    X0, model, kw = _weighted_case()
    cfg = {
        **CFG,
        "max_jsd": 0.05,
        "max_dfn": 0.05,
        "robust_binnings": [[13, 0.0], [20, 0.5]],
        "envelope": {"*": {"relative": 0.4}},
    }
    res = sharded_attack(client, X0, model, config=cfg, n_shards=n_shards, **kw)
    m = res.metrics
    Xa, w, am, cm = res.X_adv, kw["weights"], kw["attack_mask"], kw["constraint_mask"]
    cm = cm & (w != 0)
    assert res.moved.sum() > 20 and (w[cm] < 0).sum() > 10  # a moved, signed state
    # fooling ratio and counts
    flip = am & (res.pred_adv != res.pred_clean)
    assert m["fooling_ratio"] == pytest.approx(w[flip].sum() / w[am].sum(), rel=1e-12)
    assert m["fooling_ratio"] > 0
    assert m["n_fooled"] == int(flip.sum())
    assert m["n_attacked"] == int(am.sum()) and m["n_constraint"] == int(cm.sum())
    assert m["n_events"] == len(X0) and m["n_features"] == X0.shape[1]
    moved = (Xa != X0).any(axis=1)
    np.testing.assert_array_equal(res.moved, moved)
    assert m["moved_fraction"] == pytest.approx(moved[am].mean(), rel=1e-12)
    # JSD at the attack's binning and at every tracked binning (recount by np.histogram)
    Xc0, Xc, wc = X0[cm], Xa[cm], w[cm]
    lo, hi = Xc0.min(axis=0), Xc0.max(axis=0)
    rob = m["robust"]
    assert rob["binnings"] == [[20, 0.0], [13, 0.0], [20, 0.5]]
    for r, (k, off) in enumerate(rob["binnings"]):
        edges = FeatureBinning.equal_width(lo, hi, int(k), float(off)).edges
        ref = [_bf_hist_jsd(Xc0[:, j], Xc[:, j], wc, edges[j]) for j in range(X0.shape[1])]
        np.testing.assert_allclose(rob["jsd"][r], ref, rtol=1e-9, atol=1e-15)
        if r == 0:
            np.testing.assert_allclose(m["jsd"], ref, rtol=1e-9, atol=1e-15)
            assert m["jsd_max"] == pytest.approx(max(ref), rel=1e-9)
            assert m["jsd_mean"] == pytest.approx(np.mean(ref), rel=1e-9)
            neg0 = sum(int((bf.hist(Xc0[:, j], wc, edges[j]) < 0).sum()) for j in range(4))
            neg = sum(int((bf.hist(Xc[:, j], wc, edges[j]) < 0).sum()) for j in range(4))
            assert m["negative_slots"] == {"clean": neg0, "adversarial": neg}
    assert max(m["jsd"]) > 0.01  # the budget was used
    # ΔFN from raw moments (signed weights: np.cov refuses them)
    C0, C = bf.corr_raw(Xc0, wc), bf.corr_raw(Xc, wc)
    dfn = np.linalg.norm(C - C0) / np.linalg.norm(C0)
    assert m["dfn"] == pytest.approx(dfn, rel=1e-9) and m["dfn"] > 1e-4
    # envelope usage: quantiles of |dx| / envelope over the moved entries
    env = 0.4 * np.abs(X0)
    sel = (Xa != X0) & np.isfinite(env)
    ratio = np.abs(Xa - X0)[sel] / env[sel]
    e = m["envelope"]
    assert e["n_moved_entries"] == int(sel.sum()) > 10
    assert e["n_entries_with_envelope"] == X0.size
    for q in (0.5, 0.9, 0.99, 1.0):
        assert e["move_over_envelope_quantiles"][str(q)] == pytest.approx(
            np.quantile(ratio, q), rel=1e-12
        )
    # AUROC from the gathered scores
    ad = as_adapter(model, n_features=4)
    assert m["auroc_clean"] == pytest.approx(auroc(kw["y"], ad.scores(X0), w), rel=1e-9)
    assert m["auroc_adv"] == pytest.approx(auroc(kw["y"], ad.scores(Xa), w), rel=1e-9)
    assert m["auroc_adv"] != m["auroc_clean"]
    # the single-process run (its data as one part) gives the same metrics
    loc = ConservAttack(cfg).run(X0, model, **kw)
    np.testing.assert_array_equal(loc.X_adv, Xa)
    for k in ("fooling_ratio", "jsd_max", "dfn", "auroc_clean", "auroc_adv", "moved_fraction"):
        assert m[k] == pytest.approx(loc.metrics[k], rel=1e-9), k
    assert m["envelope"] == loc.metrics["envelope"]


def test_order_statistics_are_exact_over_parts():
    """The envelope quantiles' k-ary search on counts equals np.quantile on the union, with
    ties, zeros, +inf and empty parts."""
    rng = np.random.default_rng(3)
    parts = [
        np.sort(rng.exponential(size=300)),
        np.sort(np.r_[np.zeros(5), np.full(40, 0.25), rng.random(100)]),
        np.zeros(0),
        np.sort(np.r_[rng.random(7), np.inf]),
    ]
    allv = np.sort(np.concatenate(parts))

    def count(t):
        return sum(F.count_le(p, t) for p in parts)

    qs = (0.0, 0.01, 0.5, 0.9, 0.99, 1.0)
    with np.errstate(invalid="ignore"):  # numpy's own inf - inf at q = 1 (NaN, same here)
        got = F.quantiles(count, len(allv), qs)
        ref = [np.quantile(allv, q) for q in qs]
    np.testing.assert_equal(got, ref)  # bit for bit (NaN == NaN)
    ranks = [0, 17, 400, len(allv) - 1]
    assert F.order_statistics(count, ranks) == [allv[r] for r in ranks]
    assert F.quantiles(count, 0, qs) == [0.0] * len(qs)


def test_output_dir_files_equal_the_gathered_result(client, tmp_path):
    """Shard files, concatenated in the global row order, are the gathered result of the
    same run bit for bit; load() puts them back; every file is a complete npz."""
    X0, model, kw = _weighted_case(n=500, seed=5)
    cfg = {**CFG, "track_best": True}
    ref = sharded_attack(client, X0, model, config=cfg, n_shards=3, **kw)
    out = tmp_path / "rows"
    res = sharded_attack(client, X0, model, config=cfg, n_shards=3, output_dir=out, **kw)
    assert isinstance(res, ShardedAttackResult)
    assert not any(isinstance(v, np.ndarray) and v.size >= len(X0) for v in vars(res).values())
    assert [p.name for p in res.paths] == ["shard-0000.npz", "shard-0001.npz", "shard-0002.npz"]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in res.paths]  # no temp files
    keys = ("X_adv", "fooled", "moved", "pred_clean", "pred_adv", "attack_mask", "constraint_mask")
    parts = []
    for p in res.paths:
        with np.load(p, allow_pickle=False) as z:
            assert set(z.files) == {*keys, "rows"}
            parts.append({k: z[k] for k in z.files})
    rows = np.concatenate([p["rows"] for p in parts])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(X0)))
    order = np.argsort(rows)
    for k in keys:
        cat = np.concatenate([p[k] for p in parts])[order]
        np.testing.assert_array_equal(cat, getattr(ref, k), err_msg=k)
        assert cat.dtype == getattr(ref, k).dtype
    assert ref.moved.any() and ref.fooled.any()
    loaded = res.load()
    for k in keys:
        np.testing.assert_array_equal(getattr(loaded, k), getattr(ref, k), err_msg=k)
    assert loaded.metrics is res.metrics and loaded.best_iteration == ref.best_iteration
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in res.history] == [
        {k: v for k, v in h.items() if k not in drop} for h in ref.history
    ]
    for k in ("fooling_ratio", "jsd_max", "dfn", "n_fooled", "auroc_adv"):
        assert res.metrics[k] == ref.metrics[k], k
    assert res.summary()["fooling_ratio"] == res.fooling_ratio == ref.fooling_ratio
    timing = res.provenance["sharded"]["timing"]
    assert timing["written_bytes"] == sum(p.stat().st_size for p in res.paths)
    assert "gather_bytes_from_workers" not in timing
    assert ref.provenance["sharded"]["timing"]["gather_bytes_from_workers"] > X0.nbytes
    rep = json.loads(res.save_report(tmp_path / "report.json").read_text())
    assert rep["paths"] == [str(p) for p in res.paths] and rep["n_events"] == len(X0)
    assert rep["metrics"]["fooling_ratio"] == res.fooling_ratio
    # a second run into the same directory is refused (no stale shard files mixed in)
    with pytest.raises(InputError, match="already holds shard files"):
        sharded_attack(client, X0, model, config=cfg, n_shards=2, output_dir=out, **kw)
    # a missing file is an error naming it
    res.paths[1].unlink()
    with pytest.raises(InputError, match="shard-0001.npz"):
        res.load()


def test_final_phase_bytes_do_not_grow_with_n(client):
    """What the shards send for the final recheck does not depend on the number of events
    (the AUROC's per-event scores apart, recorded separately)."""
    cfg = {**CFG, "n_iterations": 1, "robust_binnings": None}
    sent, auroc_sent, trips = {}, {}, {}
    for n in (400, 4000):
        X, model = _toy(n=n, seed=4)
        y = (X[:, 0] > 0).astype(int)
        res = sharded_attack(client, X, model, y=y, config=cfg)
        t = res.provenance["sharded"]["timing"]
        sent[n], auroc_sent[n] = t["final_bytes_from_workers"], t["final_auroc_bytes_from_workers"]
        trips[n] = t["final_round_trips"]
        assert res.history[0]["events_moved"] > 0 and t["final"] > 0
    assert sent[400] == sent[4000] > 0
    assert sent[4000] < 0.25 * 4000 * 4 * 8
    assert trips[400] == trips[4000]
    assert auroc_sent[4000] > auroc_sent[400] > 0  # the one piece that grows, reported apart


def _corrupting_finish(shift_in_bounds: bool):
    orig = ShardActor.finish

    def finish(self, track_best):
        if self.shard_id == 0:
            X = (self.best if track_best else self.X).copy()
            if shift_in_bounds:  # a large, in-bounds shift of feature 0: JSD far over budget
                X[:, 0] = np.clip(X[:, 0] + 1.0, self.lo[0, 0], self.hi[0, 0])
            else:  # one entry out of its bounds
                X[0, 2] = self.hi[0, 2] + 5.0
            self.X = self.best = X
        return orig(self, track_best)

    return finish


def test_budget_violation_in_the_reduced_recheck(client, monkeypatch):
    """A shard whose rows break the budget makes the reduced recheck raise BudgetViolation;
    with the check disabled the run 'succeeds' with a JSD over the budget (so the check is
    what catches it); an entry out of its bounds raises too."""
    X, model = _toy(n=400, seed=6)
    cfg = {**CFG, "n_iterations": 1, "robust_binnings": None}
    monkeypatch.setattr(ShardActor, "finish", _corrupting_finish(True))
    with pytest.raises(BudgetViolation, match="exceeds the budget"):
        sharded_attack(client, X, model, config=cfg)
    with monkeypatch.context() as mp:
        mp.setattr(ConservAttack, "_check_budget", lambda *a, **k: None)
        res = sharded_attack(client, X, model, config=cfg)
        assert res.metrics["jsd_max"] > 0.1
    # one entry out of its bounds (its JSD alone breaks the budget too: checked after it)
    monkeypatch.setattr(ShardActor, "finish", _corrupting_finish(False))
    monkeypatch.setattr(ConservAttack, "_check_budget", lambda *a, **k: None)
    with pytest.raises(BudgetViolation, match="1 moved entries lie outside their bounds"):
        sharded_attack(client, X, model, config=cfg)


def test_cli_shard_output(tmp_path):
    from advsyst.cli import main as advsyst_main

    X, model = _toy(n=400, seed=8)
    y = (X[:, 0] > 0).astype(int)
    model.save(str(tmp_path / "model.pt"))
    np.savez(tmp_path / "data.npz", X=X, y=y)
    (tmp_path / "cfg.yaml").write_text(
        "min_change: 0.01\nstep: 0.02\nnum_bins: 20\nn_iterations: 2\nmax_jsd: 0.03\n"
        "max_frob_single_change: 0.03\nblock_size: 100\nprogress: false\n"
    )
    args = ["attack", "--model", str(tmp_path / "model.pt"), "--data",
            str(tmp_path / "data.npz"), "--config", str(tmp_path / "cfg.yaml")]  # fmt: skip
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        addr = cluster.scheduler_address
        rc = advsyst_main([*args, "--out", str(tmp_path / "o"), "--scheduler", addr,
                           "--shard-output", str(tmp_path / "rows")])  # fmt: skip
        assert rc == 0
        assert advsyst_main([*args, "--out", str(tmp_path / "g"), "--scheduler", addr]) == 0
    out = tmp_path / "o"
    assert not (out / "adversarial.npz").exists() and not (out / "attack_result.npz").exists()
    rep = json.loads((out / "report.json").read_text())
    ref = json.loads((tmp_path / "g" / "report.json").read_text())
    assert rep["shard_files"] == [str(tmp_path / "rows" / f"shard-{s:04d}.npz") for s in (0, 1)]
    for k in ("fooling_ratio", "jsd_max", "dfn", "negative_slots"):
        assert rep[k] == ref[k], k
    assert rep["binning_scan"] is None and "shard-output" in rep["binning_scan_note"]
    assert rep["sharded"]["timing"]["final_bytes_from_workers"] > 0
    res = ShardedAttackResult(paths=[tmp_path / "rows" / f"shard-{s:04d}.npz" for s in (0, 1)],
                              n_events=len(X))  # fmt: skip
    with np.load(tmp_path / "g" / "adversarial.npz") as z:
        np.testing.assert_array_equal(res.load().X_adv, z["X_adv"])


def test_worker_lost_during_the_final_recheck(monkeypatch):
    """A worker closed between the first and the second reduction of the final recheck:
    the shard is rebuilt (replay, then ``finish`` again) and the metrics and rows are those
    of the single-process run."""
    from advsyst.distributed import sharded as sh

    X, model = _toy(n=400, seed=9)
    cfg = {**CFG, "n_iterations": 2}
    with inproc_cluster() as (cluster, c):
        closed = []
        orig = sh._Coordinator.call

        def call(self, method, args=None):
            if method == "final_cov" and not closed:
                addr = self.where[1]
                w = next(w for w in cluster.workers.values() if w.address == addr)
                cluster.sync(w.close)
                closed.append(addr)
            return orig(self, method, args)

        monkeypatch.setattr(sh._Coordinator, "call", call)
        res = sharded_attack(c, X, model, config=cfg)
    assert closed
    assert [r["shard"] for r in res.provenance["sharded"]["rebuilds"]] == [1]
    loc = ConservAttack(cfg).run(X, model)
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)
    assert res.history[-1]["events_moved"] > 0
    for k in ("fooling_ratio", "jsd_max", "dfn", "n_fooled"):
        assert res.metrics[k] == pytest.approx(loc.metrics[k], rel=1e-9), k


def test_output_dir_with_file_shards_keeps_the_concatenated_order(client, tmp_path):
    """Shard sources read from .npz files: the result's rows are the files concatenated;
    the shard files written with output_dir carry those rows."""
    X, model = _toy(n=450, seed=12)
    paths = []
    for k, part in enumerate((X[:200], X[200:])):
        paths.append(tmp_path / f"in{k}.npz")
        np.savez(paths[-1], X=part, y=(part[:, 0] > 0).astype(int))
    ref = sharded_attack(client, paths, model, config=CFG)
    res = sharded_attack(client, paths, model, config=CFG, output_dir=tmp_path / "out")
    with np.load(res.paths[1]) as z:
        np.testing.assert_array_equal(z["rows"], np.arange(200, 450))
    loaded = res.load()
    assert ref.moved.any()
    for k in ("X_adv", "fooled", "moved", "pred_adv"):
        np.testing.assert_array_equal(getattr(loaded, k), getattr(ref, k), err_msg=k)
    assert res.metrics["auroc_adv"] == ref.metrics["auroc_adv"]
