"""CONSERVAttack: moves the tagger, keeps every budget, matches brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advsyst.attacks import AttackResult, ConservAttack, ConservAttackConfig
from advsyst.errors import ConfigError, InputError, ModelOutputError
from advsyst.stats import FeatureBinning, delta_fn, jsd, jsd_per_feature, pearson_correlation

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
    cm = res.constraint_mask if mask is None else mask
    ww = None if w is None else w[cm]
    j = jsd_per_feature(X[cm], res.X_adv[cm], num_bins=bins, weights=ww)
    f = delta_fn(X[cm], res.X_adv[cm], ww)
    assert j.max() <= jsd_lim + 1e-9
    assert f <= dfn_lim + 1e-9
    np.testing.assert_allclose(res.metrics["jsd"], j, atol=1e-12)
    assert res.metrics["dfn"] == pytest.approx(f, abs=1e-12)
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


def test_fast_and_exact_agree_on_budgets_and_are_comparably_strong(toy):
    X, y, w, m = toy
    r_fast = ConservAttack(BASE, max_jsd=0.015, max_dfn=0.01, method="fast", block_size=256).run(
        X, m, weights=w
    )
    r_exact = ConservAttack(BASE, max_jsd=0.015, max_dfn=0.01, method="exact").run(X, m, weights=w)
    for r in (r_fast, r_exact):
        _check_budget(X, r, 0.015, 0.01, w=w)
    assert r_fast.fooling_ratio > 0.5 * r_exact.fooling_ratio


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


def test_per_change_mode_follows_reference_semantics(toy):
    """Each applied move of an event: JSD of that feature after the move <= limit, and the
    Frobenius norm of the change it makes to the correlation matrix <= limit, both
    against the statistics before the event moved."""
    X, y, w, m = toy
    i = 11
    mask = np.zeros(N, bool)
    mask[i] = True
    lim_j, lim_f = 0.02, 0.003
    res = ConservAttack(
        BASE,
        n_iterations=1,
        budget="per_change",
        max_jsd=lim_j,
        max_dfn=lim_f,
        method="exact",
        track_best=False,
    ).run(X, m, attack_mask=mask)
    binning = FeatureBinning.from_data(X, 25)
    H0 = binning.histogram(X)
    C = pearson_correlation(X)
    moved = np.nonzero(res.X_adv[i] != X[i])[0]
    assert len(moved) >= 1
    for j in moved:
        Xc = X.copy()
        Xc[i, j] = res.X_adv[i, j]
        assert jsd(H0[j], binning.histogram(Xc)[j]) <= lim_j + 1e-12
        assert np.linalg.norm(pearson_correlation(Xc) - C) <= lim_f + 1e-12


def test_constraint_mask_restricts_the_budget_to_the_control_region(toy):
    X, y, w, m = toy
    control = X[:, 4] < 0
    res = ConservAttack(BASE, max_jsd=0.01, max_dfn=0.005).run(X, m, constraint_mask=control)
    _check_budget(X, res, 0.01, 0.005, mask=control)
    # events outside the control region move freely
    assert res.moved[~control].mean() > res.moved[control].mean()


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
        assert sum(h["undone"] for h in res.history) > 0 or method == "exact"
