"""CONSERVAttack: moves the tagger, keeps every budget, matches brute force."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import _bruteforce as bf
from advsyst.attacks import AttackResult, ConservAttack, ConservAttackConfig
from advsyst.attacks.config import _FLOAT_FIELDS
from advsyst.errors import BudgetViolation, ConfigError, InputError, ModelOutputError
from advsyst.stats import FeatureBinning, delta_fn, jsd, jsd_per_feature, pearson_correlation

# the module (advsyst.attacks.conservattack is also the name of the functional API)
ca = importlib.import_module("advsyst.attacks.conservattack")
N, D = 1500, 5


def _train(X, y, out=1, epochs=150):
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, out)
    )
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    Xt = torch.tensor(X, dtype=torch.float32)
    for _ in range(epochs):
        opt.zero_grad()
        z = m(Xt)
        if out == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                z[:, 0], torch.tensor(y, dtype=torch.float32)
            )
        else:
            loss = torch.nn.functional.cross_entropy(z, torch.tensor(y))
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    X[:, 1] += 0.6 * X[:, 0]
    X[:, 3] = 0.5 * X[:, 2] + rng.normal(size=N)
    y = (X[:, 0] + X[:, 2] + 0.7 * rng.normal(size=N) > 0).astype(int)
    w = rng.uniform(0.5, 2.0, N)
    return X, y, w, _train(X, y)


BASE = dict(min_change=0.01, step=0.02, num_bins=25, n_iterations=4, progress=False)


def _check_budget(X, res, jsd_lim, dfn_lim, w=None, mask=None, bins=25):
    """The budget and the reported metrics against a plain-numpy recomputation
    (np.histogram, np.cov), independent of advsyst.stats and the kernels."""
    cm = res.constraint_mask if mask is None else mask
    ww = None if w is None else w[cm]
    j = bf.jsd_per_feature(X[cm], res.X_adv[cm], ww, num_bins=bins)
    f = bf.dfn(X[cm], res.X_adv[cm], ww)
    assert j.max() <= jsd_lim + 1e-9
    assert f <= dfn_lim + 1e-9
    np.testing.assert_allclose(res.metrics["jsd"], j, atol=1e-9)
    assert res.metrics["dfn"] == pytest.approx(f, abs=1e-9)
    assert res.metrics["jsd_max"] == pytest.approx(j.max(), abs=1e-9)
    return j, f


@pytest.mark.parametrize("method", ["fast", "exact"])
def test_cumulative_budget_holds_and_tagger_moves(toy, method):
    X, y, w, m = toy
    res = ConservAttack(BASE, max_jsd=0.02, max_dfn=0.02, method=method).run(X, m, y=y)
    _check_budget(X, res, 0.02, 0.02)
    pred_adv = (torch.sigmoid(m(torch.tensor(res.X_adv, dtype=torch.float32)))[:, 0] >= 0.5).numpy()
    flips = pred_adv != res.pred_clean
    assert res.fooling_ratio == pytest.approx(flips.mean())
    assert res.fooling_ratio > 0.2, res.metrics
    assert res.metrics["auroc_adv"] < res.metrics["auroc_clean"]
    # every budget is reported per iteration and never exceeded
    for h in res.history:
        assert h["jsd_max"] <= 0.02 + 1e-9 and h["dfn"] <= 0.02 + 1e-9


def test_fast_and_exact_keep_the_budget_and_fast_is_exact_for_one_feature(toy):
    X, y, w, m = toy
    r_fast = ConservAttack(BASE, max_jsd=0.015, max_dfn=0.01, method="fast", block_size=256).run(
        X, m, weights=w
    )
    r_exact = ConservAttack(BASE, max_jsd=0.015, max_dfn=0.01, method="exact").run(X, m, weights=w)
    for r in (r_fast, r_exact):
        _check_budget(X, r, 0.015, 0.01, w=w)
        assert r.fooling_ratio > 0.2
    # with one movable feature and blocks of one event, the fast path scores every move
    # against the current state, exactly as the exact path: identical results
    one = dict(BASE, max_jsd=0.015, max_dfn=0.01, immutable=[1, 2, 3, 4], block_size=1)
    a = ConservAttack(one, method="fast").run(X, m, weights=w)
    b = ConservAttack(one, method="exact").run(X, m, weights=w)
    assert a.moved.sum() > 10
    np.testing.assert_array_equal(a.X_adv, b.X_adv)


def test_exact_choice_is_the_brute_force_argmin(toy):
    """One event, first feature: the chosen move minimises alpha*JSD + beta*dFN among
    admissible grid candidates, all computed by brute force."""
    X, y, w, m = toy
    i = 7
    mask = np.zeros(N, bool)
    mask[i] = True
    cfg = dict(
        BASE,
        n_iterations=1,
        immutable=[1, 2, 3, 4],
        max_jsd=0.05,
        max_dfn=0.002,
        alpha=6.5,
        beta=1.0,
        method="exact",
        track_best=False,
    )
    res = ConservAttack(cfg).run(X, m, attack_mask=mask)
    x = torch.tensor(X[i : i + 1], dtype=torch.float32, requires_grad=True)
    p = torch.sigmoid(m(x))[0, 0]
    tgt = float(res.pred_clean[i])
    loss = -(tgt * torch.log(p) + (1 - tgt) * torch.log(1 - p))
    loss.backward()
    s = np.sign(x.grad[0, 0].item())
    lo, hi = X[:, 0].min(), X[:, 0].max()
    binning = FeatureBinning.from_data(X, 25)
    H0 = binning.histogram(X)
    C0 = pearson_correlation(X)
    best, best_sc = 0.0, np.inf
    k = 0
    while True:
        mag = 0.01 + k * 0.02
        k += 1
        xn = X[i, 0] + s * mag
        if xn > hi or xn < lo:
            break
        Xc = X.copy()
        Xc[i, 0] = xn
        jd = jsd(H0[0], binning.histogram(Xc)[0])
        dfn = np.linalg.norm(pearson_correlation(Xc) - C0) / np.linalg.norm(C0)
        sc = 6.5 * jd + dfn
        if jd <= 0.05 and dfn <= 0.002 and sc < best_sc:
            best, best_sc = s * mag, sc
    assert res.X_adv[i, 0] - X[i, 0] == pytest.approx(best, abs=1e-12)
    assert best != 0.0
    others = np.delete(np.arange(N), i)
    np.testing.assert_array_equal(res.X_adv[others], X[others])


@pytest.mark.parametrize("method", ["fast", "exact"])
def test_per_change_limits_every_move_against_the_state_just_before_it(toy, method):
    """per_change, one definition for both methods: every applied move keeps its feature's
    JSD (to the clean histogram) within the limit and changes the correlation matrix by at
    most the Frobenius limit, both judged against the data set just before that move (all
    earlier moves applied, events and features in order).  Weighted, brute force."""
    X, y, w, m = toy
    # large smallest moves put many candidates near the Frobenius limit: scoring all
    # features of an event against the state before the event (the old exact path) broke
    # it by up to 2.5x here
    lim_j, lim_f = 0.01, 0.001
    mask = np.zeros(N, bool)
    mask[:300] = True
    res = ConservAttack(
        BASE,
        min_change=0.3,
        step=0.05,
        n_iterations=1,
        budget="per_change",
        max_jsd=lim_j,
        max_dfn=lim_f,
        method=method,
        block_size=64,
        track_best=False,
    ).run(X, m, weights=w, attack_mask=mask)
    e = [bf.edges(X[:, j], 25) for j in range(D)]
    H0 = [bf.hist(X[:, j], w, e[j]) for j in range(D)]
    Xb = X.copy()
    C = bf.corr(Xb, w)
    n_checked = 0
    worst_f = 0.0
    for i in np.nonzero((res.X_adv != X).any(axis=1))[0]:
        for j in np.nonzero(res.X_adv[i] != X[i])[0]:
            Xb[i, j] = res.X_adv[i, j]
            Cn = bf.corr(Xb, w)
            assert bf.jsd(H0[j], bf.hist(Xb[:, j], w, e[j])) <= lim_j + 1e-9
            f = np.linalg.norm(Cn - C)
            assert f <= lim_f + 1e-9
            worst_f = max(worst_f, f)
            C = Cn
            n_checked += 1
    np.testing.assert_array_equal(Xb, res.X_adv)
    assert n_checked > 20
    assert worst_f > 0.5 * lim_f  # the per-move Frobenius limit binds


def test_constraint_mask_restricts_the_budget_to_the_control_region(toy):
    X, y, w, m = toy
    control = X[:, 4] < 0
    res = ConservAttack(BASE, max_jsd=0.01, max_dfn=0.005).run(X, m, constraint_mask=control)
    _check_budget(X, res, 0.01, 0.005, mask=control)
    # events outside the control region move freely (entries: with the binning-robust
    # default nearly every event moves some feature a little, in or out of the region)
    changed = res.X_adv != X
    assert changed[~control].mean() > changed[control].mean()


def test_feature_controls_are_respected(toy):
    X, y, w, m = toy
    Xi = X.copy()
    Xi[:, 3] = np.round(Xi[:, 3] * 3)  # an integer-valued feature
    Xi[::5, 2] = -9.0  # default-valued entries
    lo = Xi.min(0) + 0.1
    hi = Xi.max(0) - 0.1
    lo[2] = -9.0
    res = ConservAttack(
        BASE,
        max_jsd=0.2,
        max_dfn=0.2,
        immutable=[0],
        integer_features=[3],
        default_value=-9.0,
        bounds=[lo.tolist(), hi.tolist()],
    ).run(Xi, m)
    Xa = res.X_adv
    np.testing.assert_array_equal(Xa[:, 0], Xi[:, 0])
    np.testing.assert_array_equal(Xa[::5, 2], Xi[::5, 2])
    assert np.all(Xa[:, 3] == np.round(Xa[:, 3]))
    changed = Xa != Xi
    assert changed[:, 3].any() and changed[:, 1].any()
    inside = (Xi >= lo) & (Xi <= hi)
    assert np.all(((Xa >= lo) & (Xa <= hi))[changed & inside])


def test_random_candidates_are_seeded(toy):
    X, y, w, m = toy
    cfg = dict(BASE, num_candidates=20, max_jsd=0.02, max_dfn=0.02)
    a = ConservAttack(cfg, seed=3).run(X, m)
    b = ConservAttack(cfg, seed=3).run(X, m)
    c = ConservAttack(cfg, seed=4).run(X, m)
    np.testing.assert_array_equal(a.X_adv, b.X_adv)
    assert not np.array_equal(a.X_adv, c.X_adv)
    _check_budget(X, a, 0.02, 0.02)


def test_randomize_step_and_optimize_already_fooled_keep_the_budget(toy):
    X, y, w, m = toy
    res = ConservAttack(
        BASE, randomize_step=True, optimize_already_fooled=True, max_jsd=0.02, max_dfn=0.02
    ).run(X, m)
    _check_budget(X, res, 0.02, 0.02)
    assert res.fooling_ratio > 0.1


def test_multiclass_logit_model(toy):
    X, y, w, _ = toy
    y3 = np.digitize(X[:, 0] + X[:, 2], [-0.7, 0.7])
    m3 = _train(X, y3, out=3, epochs=100)
    res = ConservAttack(BASE, max_jsd=0.02, max_dfn=0.02).run(X, m3)
    _check_budget(X, res, 0.02, 0.02)
    assert res.fooling_ratio > 0.1
    assert set(np.unique(res.pred_clean)) <= {0, 1, 2}


def test_zero_variance_feature_is_frozen_and_excluded(toy):
    X, y, w, m = toy
    Xz = X.copy()
    Xz[:, 4] = 1.0
    res = ConservAttack(BASE, max_jsd=0.02, max_dfn=0.02).run(Xz, m)
    np.testing.assert_array_equal(res.X_adv[:, 4], 1.0)
    valid = np.array([True, True, True, True, False])
    assert delta_fn(Xz, res.X_adv, valid=valid) <= 0.02 + 1e-9


def test_bad_inputs_raise_named_errors(toy):
    X, y, w, m = toy
    Xn = X.copy()
    Xn[5, 2] = np.nan
    with pytest.raises(InputError, match="NaN/inf"):
        ConservAttack(BASE).run(Xn, m)
    with pytest.raises(InputError, match="at least 10"):
        ConservAttack(BASE).run(X[:5], m)
    with pytest.raises(ConfigError, match="unknown CONSERVAttack config key 'max_jds'"):
        ConservAttack(max_jds=0.1)
    with pytest.raises(ConfigError, match="budget"):
        ConservAttack(budget="total")

    class Bad(torch.nn.Module):
        def forward(self, x):
            return x[:, :4].reshape(-1, 2, 2)

    with pytest.raises(ModelOutputError, match="shape"):
        ConservAttack(BASE).run(X, Bad())

    class Wrong(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x) + 1)

    with pytest.raises(ModelOutputError, match="outputs for"):
        ConservAttack(BASE).run(X, Wrong())


def test_mismatched_feature_count_for_the_model(toy):
    X, y, w, m = toy
    with pytest.raises(InputError, match="model failed on input of shape|features"):
        ConservAttack(BASE).run(np.c_[X, X[:, :1]], m)


def test_result_round_trip(tmp_path, toy):
    X, y, w, m = toy
    res = ConservAttack(BASE, max_jsd=0.02, max_dfn=0.02, n_iterations=2).run(X, m, y=y)
    path = res.save(tmp_path / "r.npz")
    back = AttackResult.load(path)
    np.testing.assert_array_equal(back.X_adv, res.X_adv)
    np.testing.assert_array_equal(back.fooled, res.fooled)
    np.testing.assert_array_equal(back.metrics["jsd"], res.metrics["jsd"])
    assert back.history == res.history
    assert back.config == res.config and back.seed == res.seed
    assert back.provenance["versions"]["torch"] == torch.__version__
    assert ConservAttackConfig.from_dict(back.config) == ConservAttackConfig.from_dict(res.config)


@pytest.mark.parametrize("method", ["fast", "exact"])
def test_per_change_keeps_every_feature_jsd_within_the_single_change_limit(toy, method):
    """Under per_change a move is admissible only if its feature's JSD *after* the move is
    within the limit, so no feature's JSD can end above it - in both paths."""
    X, y, w, m = toy
    res = ConservAttack(
        BASE, budget="per_change", max_jsd=0.01, max_dfn=0.003, method=method, block_size=256
    ).run(X, m)
    j = jsd_per_feature(X, res.X_adv, num_bins=25)
    assert j.max() <= 0.01 + 1e-9
    assert res.fooling_ratio > 0.05


@pytest.mark.parametrize("method", ["fast", "exact"])
def test_undone_moves_restore_values_on_bin_edges_exactly(method):
    """Regression: many values sit exactly on the outer bin edges (clipped features) and
    the budget forces many undos; an undo must restore value and histogram slot exactly,
    else the tracked JSD drifts from the truth and the final check fails."""
    rng = np.random.default_rng(8)
    X = np.clip(rng.normal(size=(2000, 4)) * 0.8, -1.0, 1.0)
    X[:, 1] += 0.5 * X[:, 0]
    X = np.round(X, 3)
    y = (X[:, 0] + X[:, 2] > 0).astype(int)
    m = _train(X, y, epochs=60)
    for it in (2, 4):
        res = ConservAttack(
            min_change=0.01,
            step=0.01,
            units="range",
            num_bins=20,
            n_iterations=it,
            max_jsd=0.03,
            max_dfn=0.03,
            method=method,
            track_best=False,
            progress=False,
        ).run(X, m)
        _check_budget(X, res, 0.03, 0.03, bins=20)
        if method == "fast":  # the exact path scores on the current state: no undo needed
            assert sum(h["undone"] for h in res.history) > 0


@pytest.mark.parametrize("key", [*_FLOAT_FIELDS, "max_jsd", "max_dfn"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_config_values_are_rejected_naming_the_key(key, bad):
    name = {"max_jsd": "max_jsd_single_change", "max_dfn": "max_frob_single_change"}.get(key, key)
    with pytest.raises(ConfigError, match=name):
        ConservAttackConfig.from_dict({key: bad})


def test_non_finite_bounds_and_non_numbers_are_rejected():
    with pytest.raises(ConfigError, match="bounds"):
        ConservAttackConfig(bounds=[[0.0, float("nan")], [1.0, 1.0]])
    with pytest.raises(ConfigError, match="alpha"):
        ConservAttackConfig(alpha="6.5")
    assert isinstance(ConservAttackConfig(alpha=6, beta=1).alpha, float)


def test_zero_min_change_moves_like_a_grid_starting_at_one_step(toy):
    """min_change = 0 skips the zero move: same candidates as min_change = step."""
    X, y, w, m = toy
    cfg = dict(BASE, max_jsd=0.02, max_dfn=0.02, n_iterations=2)
    a = ConservAttack(cfg, min_change=0.0, step=0.02).run(X, m)
    b = ConservAttack(cfg, min_change=0.02, step=0.02).run(X, m)
    assert a.fooling_ratio > 0.1
    np.testing.assert_allclose(a.X_adv, b.X_adv, atol=1e-12)


def test_budget_violation_fires_on_a_corrupted_state(toy, monkeypatch):
    """Inject drift: the tracked JSD sums are zeroed after every resync, so the kernels
    believe the histograms are clean and overspend; the final recomputation catches it."""
    X, y, w, m = toy
    orig = ca._State.resync

    def corrupted(self, Xc):
        orig(self, Xc)
        self.Ssum[:] = 0.0

    monkeypatch.setattr(ca._State, "resync", corrupted)
    with pytest.raises(BudgetViolation, match="exceeds the budget"):
        ConservAttack(BASE, max_jsd=0.005, max_dfn=0.5, n_iterations=4).run(X, m)


@pytest.mark.parametrize("budget", ["cumulative", "per_change"])
def test_nan_metrics_fail_the_final_check(toy, monkeypatch, budget):
    X, y, w, m = toy
    monkeypatch.setattr(ca, "histogram_jsd", lambda *a, **k: np.full(D, np.nan))
    with pytest.raises(BudgetViolation):
        ConservAttack(BASE, max_jsd=0.02, max_dfn=0.02, n_iterations=1, budget=budget).run(X, m)


def test_labels_must_be_integers(toy):
    X, y, w, m = toy
    cfg = dict(BASE, max_jsd=0.02, max_dfn=0.02, n_iterations=1, target="label")
    yf = y.astype(float)
    res = ConservAttack(cfg).run(X, m, y=yf)  # integral floats are fine
    assert res.pred_clean.shape == (N,)
    yf[3] = 0.5
    with pytest.raises(InputError, match=r"integer class indices.*y\[3\] = 0.5"):
        ConservAttack(cfg).run(X, m, y=yf)
    with pytest.raises(InputError, match="integer class indices"):
        ConservAttack(cfg).run(X, m, y=np.array(["a"] * N))


def test_history_and_final_metrics_count_fooled_events_alike(toy):
    """n_fooled: attacked events whose prediction differs from the clean one, in the
    history and the final metrics (here with target='label', where the two once differed)."""
    X, y, w, m = toy
    res = ConservAttack(
        BASE, max_jsd=0.02, max_dfn=0.02, target="label", track_best=False, n_iterations=2
    ).run(X, m, y=y)
    flipped = int((res.pred_adv != res.pred_clean).sum())
    assert flipped > 0
    assert res.metrics["n_fooled"] == flipped
    assert res.history[-1]["n_fooled"] == flipped
    assert res.fooled.sum() != flipped  # fooled is against the labels
