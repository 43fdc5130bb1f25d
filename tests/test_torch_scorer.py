"""The torch candidate scorer (its CPU path; the same code runs on CUDA) against the numba
kernel it ports, choice by choice, in moved and weighted states (negative weights, the
binning-robust rows, a discrete feature, per-entry bounds, events outside the constraint
set, both budgets, the seeded draws), and a whole attack committed from torch-scored
blocks against the numba path."""

from __future__ import annotations

import copy
import json

import numba
import numpy as np
import pytest
import torch

from advsyst.attacks import _kernels as K
from advsyst.attacks._jit import call
from advsyst.attacks._torch_scorer import resolve_scorer, score_block_torch, uniform_torch
from advsyst.attacks.config import ConservAttackConfig
from advsyst.distributed import _engine_glue as G
from advsyst.errors import ConfigError, InputError

N, D = 500, 6
DISC = 2  # the discrete feature (5 observed values)


def _problem(budget="cumulative", extra=None, seed=0):
    """The engine's own setup (robust rows, discrete support, envelope bounds) on a weighted
    toy set with 25 % negative weights, then a moved state (200 random moves through
    ``apply_move``)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) @ rng.normal(size=(D, D)) * 0.5
    X[:, DISC] = rng.integers(0, 5, N).astype(float)
    w = rng.uniform(0.3, 2.0, N) * np.where(rng.uniform(size=N) < 0.25, -0.5, 1.0)
    cfg = {
        "num_bins": 20,
        "min_change": 0.01,
        "step": 0.05,
        "max_candidates": 60,
        "budget": budget,
        "max_jsd_single_change": 0.02,
        "max_frob_single_change": 0.02,
        "robust_bootstrap": 20,
        "use_no_change": budget != "per_change",  # per_change: status 2 (inadmissible) too
        "envelope": {"1": {"relative": 0.3}},  # per-entry bounds on feature 1
        "progress": False,
        **(extra or {}),
    }
    cfg = ConservAttackConfig.from_dict(cfg)
    cm = np.ones(N, bool)
    cm[: N // 10] = False  # events outside the constraint set
    names = [str(j) for j in range(D)]
    setup, state, w, cm = G.setup_in_memory(cfg, X, None, w, np.ones(N, bool), cm, names)
    assert len(setup.extra) == (0 if cfg.robust_binnings is None else 20)
    assert setup.discrete[DISC]
    lo, hi, _ = G.shard_bounds(cfg, setup, X)
    assert lo.shape == (N, D)
    cand, bud, allow = G.kernel_tuples(cfg, setup, 3, state.norm0, lo, hi)
    ka = state.kernel_args()
    Xm = X.copy()
    for _ in range(200):
        i, j = rng.integers(N), rng.integers(D)
        if j != DISC and cm[i]:
            K.apply_move(Xm[i], w[i], j, Xm[i, j] + rng.normal() * 0.1, ka)
    mov = G.movable_mask(X, np.ones(N, bool), setup.frozen, None, None)
    events = rng.permutation(N)[:300].astype(np.int64)
    sign = rng.choice([-1.0, 0.0, 1.0], size=(len(events), D), p=[0.45, 0.1, 0.45])
    return {"X": Xm, "w": w, "cm": cm, "mov": mov, "cand": cand, "state": state,
            "budget": bud, "allow": allow, "events": events, "sign": sign, "cfg": cfg,
            "setup": setup}  # fmt: skip


def _both(p, **kw):
    args = (p["X"], p["w"], p["cm"], p["events"], p["sign"], p["mov"], p["cand"],
            p["state"].kernel_args(), p["budget"], p["allow"])  # fmt: skip
    want = G.score(*args, scorer="numba")
    got = score_block_torch(*args, **kw)
    return want, got


TIGHT = {"robust_noise_fraction": 0.3}  # the extra histogram rows decide many choices
CASES = [
    ("cumulative", TIGHT),
    ("per_change", {}),
    ("cumulative", {"randomize_step": True}),
    ("per_change", {"num_candidates": 30, "min_change": 0.0, **TIGHT}),
]


@pytest.mark.parametrize("budget,extra", CASES)
def test_same_choice_as_numba_everywhere(budget, extra):
    p = _problem(budget, extra)
    ka = p["state"].kernel_args()
    # the state exercises what the port must get right
    assert (ka[4] < 0).any(), "no negative histogram slot: the O(slots) branch is not tested"
    (dn, sn), (dt, st) = _both(p, max_elements=2**15)  # several chunks
    np.testing.assert_array_equal(st, sn)
    np.testing.assert_array_equal(dt, dn)  # bitwise: the same candidate
    # the extra rows checked for the best candidate only (then for all where it fails)
    _, (d1, s1) = _both(p, top=1)
    np.testing.assert_array_equal(s1, sn)
    np.testing.assert_array_equal(d1, dn)
    assert dt.dtype == np.float64 and st.dtype == np.int8
    counts = np.bincount(sn.ravel(), minlength=3)
    assert counts[1] > 50
    if p["allow"]:
        assert counts[2] > 50  # inadmissible moves returned under use_no_change=False
    cons = p["cm"][p["events"]]
    cont = [j for j in range(D) if j != DISC]
    assert (sn[~cons] == 1).any()
    assert (sn[cons][:, cont] == 1).sum() > 100  # scored moves of constrained events
    assert (sn[:, DISC] == 1).any()  # discrete moves land on observed values
    if extra.get("robust_noise_fraction"):  # the extra rows bind: they change choices
        ka = list(ka)
        ka[5] = ka[5].copy()
        ka[5][2, D:] = np.inf
        args = (p["X"], p["w"], p["cm"], p["events"], p["sign"], p["mov"], p["cand"],
                tuple(ka), p["budget"], p["allow"])  # fmt: skip
        d_free, s_free = G.score(*args, scorer="numba")
        assert ((d_free != dn) | (s_free != sn)).sum() > 100
    sup = p["setup"].sup[DISC]
    moved = sn[:, DISC] == 1
    landed = p["X"][p["events"][moved], DISC] + dn[moved, DISC]
    assert np.isin(landed, sup).all()


@pytest.mark.parametrize("budget", ["cumulative", "per_change"])
def test_same_choice_with_the_own_binning_only(budget):
    p = _problem(budget, {"robust_binnings": None}, seed=4)
    assert p["state"].kernel_args()[0].shape[0] == D  # one histogram row per feature
    (dn, sn), (dt, st) = _both(p)
    np.testing.assert_array_equal(st, sn)
    np.testing.assert_array_equal(dt, dn)
    assert (sn[p["cm"][p["events"]]] == 1).sum() > 100


def test_ids_seed_the_draws_and_rows_index_the_bounds():
    """``ids[t]`` replaces the event index in the seeding only: the numba kernel on the same
    data placed at rows ``ids`` (where row = id) gives the same choices."""
    p = _problem("cumulative", {"randomize_step": True, "num_candidates": 20}, seed=3)
    rng = np.random.default_rng(9)
    perm = rng.permutation(N)  # row i of X goes to row perm[i]
    ids = perm[p["events"]].astype(np.int64)
    lo, hi = p["cand"][0], p["cand"][1]
    lo2, hi2 = np.empty_like(lo), np.empty_like(hi)
    lo2[perm], hi2[perm] = lo, hi
    cand2 = (lo2, hi2, *p["cand"][2:])
    X2, w2, c2, m2 = (np.empty_like(a) for a in (p["X"], p["w"], p["cm"], p["mov"]))
    X2[perm], w2[perm], c2[perm], m2[perm] = p["X"], p["w"], p["cm"], p["mov"]
    ka = p["state"].kernel_args()
    dn, sn = G.score(X2, w2, c2, ids, p["sign"], m2, cand2, ka, p["budget"], p["allow"],
                     scorer="numba")  # fmt: skip
    args = (p["X"], p["w"], p["cm"], p["events"], p["sign"], p["mov"], p["cand"], ka,
            p["budget"], p["allow"])  # fmt: skip
    dt, st = score_block_torch(*args, ids=ids)
    np.testing.assert_array_equal(st, sn)
    np.testing.assert_array_equal(dt, dn)
    # and the ids matter: the default (ids = events) draws other candidates
    d0, _ = score_block_torch(*args)
    assert (d0 != dt).any()


@numba.njit
def _uniform_many(seed, a, b, c, d):
    out = np.empty(b.shape[0])
    for k in range(b.shape[0]):
        out[k] = K._uniform(seed, a, b[k], c[k], d[k])
    return out


@pytest.mark.parametrize("seed,it", [(0, 1), (12345, 7), (2**40 + 3, 10)])
def test_uniform_is_the_kernels_hash_bit_for_bit(seed, it):
    rng = np.random.default_rng(seed % 1000)
    b, c, d = (rng.integers(0, hi, 20000) for hi in (2**40, 1000, 2**31))
    want = _uniform_many(seed, it, b, c, d)
    got = uniform_torch(seed, it, *(torch.from_numpy(v) for v in (b, c, d))).numpy()
    np.testing.assert_array_equal(got, want)
    assert 0.0 <= got.min() and got.max() < 1.0


def _attack(p, scorer, block):
    """The fast path by hand: blocks scored against the snapshot by ``scorer``, committed by
    the numba ``apply_block`` with the budget re-check."""
    X = p["X"].copy()
    state = copy.deepcopy(p["state"])
    ka = state.kernel_args()
    ev, sg = p["events"], p["sign"]
    undone = 0
    for s in range(0, len(ev), block):
        e, g = ev[s : s + block], sg[s : s + block]
        deltas, status = G.score(X, p["w"], p["cm"], e, g, p["mov"], p["cand"], ka,
                                 p["budget"], p["allow"], scorer=scorer)  # fmt: skip
        undone += call(K.apply_block, X, p["w"], p["cm"], e, np.arange(len(X)), g, deltas,
                       status, p["cand"], ka, p["budget"], True)  # fmt: skip
    return X, state, undone


@pytest.mark.parametrize("budget", ["cumulative", "per_change"])
def test_attack_committed_from_torch_scores_equals_numba_path(budget):
    p = _problem(budget, seed=1)
    Xn, sn, un = _attack(p, "numba", 64)
    Xt, stt, ut = _attack(p, "torch", 64)
    assert (Xn != p["X"]).sum() > 100  # the attack moved entries
    np.testing.assert_array_equal(Xt, Xn)
    assert ut == un
    for k in ("H", "Ssum", "mean", "cov", "Ccur", "F2"):
        np.testing.assert_array_equal(getattr(stt, k), getattr(sn, k))


def test_bad_input_is_named():
    p = _problem()
    ka = p["state"].kernel_args()
    base = [p["X"], p["w"], p["cm"], p["events"], p["sign"], p["mov"], p["cand"], ka,
            p["budget"], p["allow"]]  # fmt: skip
    with pytest.raises(InputError, match="sign must have shape"):
        score_block_torch(*base[:4], p["sign"][:, :3], *base[5:])
    with pytest.raises(InputError, match="events index rows outside"):
        score_block_torch(*base[:3], p["events"] + N, *base[4:])
    bad = list(p["cand"])
    bad[1] = bad[1].copy()
    bad[1][0, 0] = np.inf
    with pytest.raises(InputError, match="bounds hi contain NaN/inf"):
        score_block_torch(*base[:6], tuple(bad), *base[7:])
    with pytest.raises(InputError, match="ids must have shape"):
        score_block_torch(*base, ids=np.arange(3))
    with pytest.raises(ConfigError, match="scorer must be one of"):
        resolve_scorer("cupy")
    with pytest.raises(ConfigError, match="scorer implementation"):
        G.score(*base, scorer="cupy")


def test_auto_is_torch_on_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_scorer("auto") == ("numba", "cpu")
    assert resolve_scorer("torch") == ("torch", "cpu")
    assert resolve_scorer("numba") == ("numba", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_scorer("auto") == ("torch", "cuda")
    assert resolve_scorer("torch") == ("torch", "cuda")


def test_sharded_attack_with_torch_scorer_equals_single_process():
    distributed = pytest.importorskip("distributed")
    from advsyst.attacks import ConservAttack
    from advsyst.distributed import sharded_attack

    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 4))
    X[:, 1] += 0.5 * X[:, 0]
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.tensor([[2.0, -1.0, 0.5, 0.3]])
        m[0].bias.zero_()
    model = torch.jit.script(m.eval())
    cfg = {"min_change": 0.01, "step": 0.02, "num_bins": 20, "n_iterations": 2,
           "max_jsd": 0.03, "max_dfn": 0.03, "block_size": 64, "progress": False,
           "robust_bootstrap": 20}  # fmt: skip
    ref = ConservAttack(cfg).run(X, model)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        res = sharded_attack(client, X, model, config=cfg, scorer="torch")
        with pytest.raises(ConfigError, match="scorer must be one of"):
            sharded_attack(client, X, model, config=cfg, scorer="gpu")
    assert res.provenance["sharded"]["scorers"] == ["torch:cpu", "torch:cpu"]
    assert (ref.X_adv != X).any()
    np.testing.assert_array_equal(res.X_adv, ref.X_adv)


def test_cli_scorer_option(tmp_path, capsys):
    """``advsyst attack --scorer torch`` on a cluster: recorded in report.json, same X_adv as
    the single-process attack; without a cluster it is a clear error."""
    distributed = pytest.importorskip("distributed")
    from advsyst.cli import main as advsyst_main

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    X[:, 1] += 0.5 * X[:, 0]
    net = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        net[0].weight[:] = torch.tensor([[1.5, 0.0, 0.0, -1.5]])
        net[0].bias.zero_()
    torch.jit.script(net.eval()).save(str(tmp_path / "model.pt"))
    np.savez(tmp_path / "data.npz", X=X)
    (tmp_path / "cfg.yaml").write_text(
        "min_change: 0.01\nstep: 0.02\nnum_bins: 20\nn_iterations: 2\nblock_size: 100\n"
        "robust_bootstrap: 20\nprogress: false\n"
    )
    args = ["attack", "--model", str(tmp_path / "model.pt"), "--data",
            str(tmp_path / "data.npz"), "--config", str(tmp_path / "cfg.yaml"),
            "--scan-bootstrap", "0"]  # fmt: skip
    assert advsyst_main([*args, "--out", str(tmp_path / "one"), "--scorer", "torch"]) == 2
    assert "--scorer chooses the candidate scorer of the sharded attack" in capsys.readouterr().err
    assert advsyst_main([*args, "--out", str(tmp_path / "one")]) == 0
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        rc = advsyst_main([*args, "--out", str(tmp_path / "sh"), "--scheduler",
                           cluster.scheduler_address, "--scorer", "torch"])  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "sh" / "report.json").read_text())
    assert report["sharded"]["scorers"] == ["torch:cpu", "torch:cpu"]
    with (
        np.load(tmp_path / "one" / "adversarial.npz") as a,
        np.load(tmp_path / "sh" / "adversarial.npz") as b,
    ):
        assert (a["X_adv"] != X).any()
        np.testing.assert_array_equal(b["X_adv"], a["X_adv"])


def test_benchmark_runs_and_agrees(tmp_path, capsys):
    """benchmarks/gpu_scorer.py at a tiny size: its table, and the same choices."""
    import importlib.util
    import sys
    from pathlib import Path

    bdir = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bdir))
    try:
        spec = importlib.util.spec_from_file_location("gpu_scorer_bench", bdir / "gpu_scorer.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out = tmp_path / "b.json"
        res = mod.main(["--n", "800", "--d", "5", "--bins", "20", "--events", "64",
                        "--robust-bootstrap", "10", "--repeats", "1", "--json", str(out)])  # fmt: skip
    finally:
        sys.path.remove(str(bdir))
    text = capsys.readouterr().out
    assert "| torch CPU |" in text and "needs 1.50e+09 candidate evaluations/s" in text
    assert res["same_choices_torch_cpu"] and res["evals"] > 0 and res["proposals"] > 0
    assert json.loads(out.read_text())["pairs"] == res["pairs"]
