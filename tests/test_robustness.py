"""Robustness workflows: repeated misclassification, grey-box matrix, adversarial training."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advsyst.attacks.metrics import auroc
from advsyst.errors import ConfigError, InputError
from advsyst.models import train_classifier
from advsyst.workflows import robustness as rb


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny MLPs and a few thousand events gain nothing from threads.  One thread each for
    torch and numba also keeps their OpenMP pools from busy-waiting against each other:
    under pytest, torch starts its pool before ``advsyst`` sets ``OMP_WAIT_POLICY=PASSIVE``
    (tens of seconds lost on two cores otherwise)."""
    import numba

    n_torch, n_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(n_torch)
    numba.set_num_threads(n_numba)


TRAIN = {"hidden": (16, 8), "epochs": 6, "batch_size": 128}
ATTACK = {
    "min_change": 0.02,
    "step": 0.05,
    "n_iterations": 3,
    "num_bins": 20,
    "max_jsd": 0.05,
    "max_dfn": 0.05,
}


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes in 5 correlated features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 5)) + y[:, None] * np.array([1.2, 0.8, 0.0, 0.5, 0.0])
    X[:, 2] += 0.6 * X[:, 0]
    X[:, 4] -= 0.4 * X[:, 1]
    return X, y


def _predict(model: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    """Binary decisions straight from the network's logit (P >= 0.5 <=> logit >= 0)."""
    with torch.no_grad():
        z = model.logits(torch.as_tensor(X, dtype=torch.float32))[:, 0]
    return (z >= 0).numpy().astype(np.int64)


def _flip_ratio(model: torch.nn.Module, X: np.ndarray, X_adv: np.ndarray, mask=None) -> float:
    flips = _predict(model, X) != _predict(model, X_adv)
    return float(flips.mean() if mask is None else flips[mask].mean())


# ====================================================================== repeated misclassification
def _poisson_tail(observed: int, lam: float) -> float:
    """P(X >= observed) for X ~ Poisson(lam), summed term by term."""
    if lam == 0.0:
        return 1.0 if observed == 0 else 0.0
    stop = observed + int(lam + 40 * math.sqrt(lam) + 200)
    return math.fsum(
        math.exp(x * math.log(lam) - lam - math.lgamma(x + 1)) for x in range(observed, stop)
    )


@settings(max_examples=60, deadline=None)
@given(
    R=st.integers(2, 7),
    N=st.integers(1, 40),
    rate=st.floats(0.0, 1.0),
    masked=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_repeated_misclassification_matches_brute_force(R, N, rate, masked, seed):
    rng = np.random.default_rng(seed)
    flags = rng.random((R, N)) < rate
    correct = rng.random(N) < 0.7 if masked else None
    if masked and not correct.any():
        correct[0] = True
    out = rb.repeated_misclassification(flags, correct, alpha=0.05)

    cols = [i for i in range(N) if correct is None or correct[i]]
    n = len(cols)
    acc = [(n - sum(bool(flags[r, i]) for i in cols)) / n for r in range(R)]
    p = 1.0 - sum(acc) / R
    assert out.n_runs == R and out.n_events == n
    np.testing.assert_allclose(out.per_run_accuracy, acc, rtol=0, atol=1e-12)
    assert out.p == pytest.approx(p, abs=1e-12)
    expected = [n * math.comb(R, k) * p**k * (1 - p) ** (R - k) for k in range(R + 1)]
    np.testing.assert_allclose(out.expected, expected, rtol=1e-9, atol=1e-12)
    assert out.expected.sum() == pytest.approx(n, rel=1e-9)
    times = [sum(bool(flags[r, i]) for r in range(R)) for i in cols]
    observed = [times.count(k) for k in range(R + 1)]
    assert out.observed.tolist() == observed
    assert out.counts.tolist() == times and out.event_index.tolist() == cols
    tails = [_poisson_tail(o, e) for o, e in zip(observed, expected, strict=True)]
    np.testing.assert_allclose(out.p_values, tails, rtol=1e-8, atol=1e-12)
    assert out.significant.tolist() == [t < 0.05 for t in out.p_values]
    json.dumps(out.to_dict())


def test_planted_systematic_events_are_significant():
    rng = np.random.default_rng(3)
    R, N = 10, 3000
    flags = rng.random((R, N)) < 0.1
    planted = rng.choice(N, 30, replace=False)
    flags[:, planted] = True
    out = rb.repeated_misclassification(flags)
    assert out.significant[R] and R in out.significant_bins
    assert out.expected[R] < 1e-6 and out.observed[R] >= 30
    assert set(planted.tolist()) <= set(out.events_in_bins().tolist())
    # the bulk of the Binomial(10, ~0.13) distribution shows no excess
    assert not out.significant[1:4].any()


def test_pure_bernoulli_noise_is_mostly_not_significant():
    R, N, n_trials = 10, 2000, 30
    n_sig = n_bins = 0
    for seed in range(n_trials):
        flags = np.random.default_rng(seed).random((R, N)) < 0.1
        out = rb.repeated_misclassification(flags, alpha=0.05)
        n_sig += int(out.significant.sum())
        n_bins += R + 1
    assert n_sig / n_bins < 0.05


def test_repeated_misclassification_bad_inputs():
    with pytest.raises(InputError, match="R >= 2"):
        rb.repeated_misclassification(np.zeros((1, 10), bool))
    with pytest.raises(InputError, match="2-D"):
        rb.repeated_misclassification(np.zeros(10, bool))
    with pytest.raises(InputError, match="boolean"):
        rb.repeated_misclassification(np.full((3, 4), 2))
    with pytest.raises(InputError, match=r"correct must have shape \(4,\)"):
        rb.repeated_misclassification(np.zeros((3, 4), bool), np.ones(5, bool))
    with pytest.raises(InputError, match="selects none"):
        rb.repeated_misclassification(np.zeros((3, 4), bool), np.zeros(4, bool))
    with pytest.raises(ConfigError, match="alpha"):
        rb.repeated_misclassification(np.zeros((3, 4), bool), alpha=1.5)


# ====================================================================== detector runs
@pytest.fixture(scope="module")
def attacked_toy():
    X, y = _toy(1600, seed=11)
    tagger, _ = train_classifier(X[:800], y[:800], seed=1, progress=False, **TRAIN)
    from advsyst.attacks import ConservAttack

    res = ConservAttack({**ATTACK, "max_jsd": 0.2, "max_dfn": 0.2}, progress=False).run(
        X[:800], tagger
    )
    return X, res


def test_detector_runs_flags_and_working_points(attacked_toy):
    X, res = attacked_toy
    X_eval = X[800:]
    kw = {"hidden": (16, 8), "epochs": 4}
    flags, dets = rb.detector_runs(
        X[:800], res.X_adv, res.moved, X_eval, n_runs=3, seed=4, threshold=0.6, **kw
    )
    assert flags.shape == (3, len(X_eval)) and flags.dtype == bool
    assert len({d.info["seed"] for d in dets}) == 3
    for r, det in enumerate(dets):
        assert det.threshold == 0.6
        np.testing.assert_array_equal(flags[r], det.p_adversarial(X_eval) >= 0.6)
    # same seed -> same flags; a clean-efficiency working point keeps that fraction unflagged
    flags2, dets2 = rb.detector_runs(
        X[:800], res.X_adv, res.moved, X_eval, n_runs=2, seed=4, clean_efficiency=0.8, **kw
    )
    for det in dets2:
        p_clean = det.p_adversarial(X[:800][det.test_events])
        assert (p_clean < det.threshold).mean() == pytest.approx(0.8, abs=0.05)
    sig = rb.repeated_misclassification(flags)
    assert sig.n_runs == 3 and sig.n_events == len(X_eval)

    with pytest.raises(ConfigError, match="n_runs"):
        rb.detector_runs(X[:800], res.X_adv, res.moved, X_eval, n_runs=1, **kw)
    with pytest.raises(ConfigError, match="'epoch'"):
        rb.detector_runs(X[:800], res.X_adv, res.moved, X_eval, n_runs=2, epoch=3)
    with pytest.raises(InputError, match="X_eval has 4 features"):
        rb.detector_runs(X[:800], res.X_adv, res.moved, X_eval[:, :4], n_runs=2, **kw)


# ====================================================================== grey-box matrix
@pytest.fixture(scope="module")
def grey():
    X, y = _toy(2400, seed=7)
    return (
        X,
        y,
        rb.grey_box_matrix(X, y, n_models=3, attack_config=ATTACK, train_kwargs=TRAIN, seed=2),
    )


def test_grey_box_matrix_entries_are_direct_recomputations(grey):
    X, y, g = grey
    assert g.matrix.shape == (3, 3) == g.errors.shape
    Xte = X[g.test_index]
    assert len(g.test_index) == 1200 and len(set(g.seeds)) == 3
    for a, res in enumerate(g.attacks):
        assert g.matrix[a, a] == pytest.approx(res.fooling_ratio, abs=1e-12)
        for t, model in enumerate(g.models):
            fr = _flip_ratio(model, Xte, res.X_adv)
            assert g.matrix[a, t] == pytest.approx(fr, abs=1e-12)
            assert g.errors[a, t] == pytest.approx(math.sqrt(fr * (1 - fr) / len(Xte)))
    for t, model in enumerate(g.models):
        with torch.no_grad():
            z = model.logits(torch.as_tensor(Xte, dtype=torch.float32))[:, 0].numpy()
        assert g.clean_auroc[t] == pytest.approx(auroc(y[g.test_index], z), abs=1e-9)
    np.testing.assert_array_equal(g.white_box, np.diag(g.matrix))
    assert len(g.grey_box) == 6
    # white box (own gradients) fools more than adversaries borrowed from sibling models
    assert g.white_box_mean >= g.grey_box_mean
    assert g.white_box_mean > 0.1


def test_grey_box_result_serialises(grey, tmp_path):
    _, _, g = grey
    d = json.loads(g.write_json(tmp_path / "grey.json").read_text())
    assert np.allclose(d["matrix"], g.matrix)
    assert d["seeds"] == g.seeds and d["seed"] == 2
    assert d["attack_config"]["max_jsd_single_change"] == 0.05
    assert d["provenance"]["workflow"] == "grey_box_matrix"
    assert d["provenance"]["model_seeds"] == g.seeds


def test_grey_box_attack_mask_counts_attacked_events_only():
    X, y = _toy(800, seed=9)
    bkg = y == 0
    g = rb.grey_box_matrix(
        X,
        y,
        n_models=2,
        attack_config=ATTACK,
        train_kwargs={**TRAIN, "epochs": 3},
        attack_mask=bkg,
        seed=5,
    )
    am = bkg[g.test_index]
    np.testing.assert_array_equal(g.attack_mask, am)
    Xte = X[g.test_index]
    for a, res in enumerate(g.attacks):
        assert not res.moved[~am].any()
        for t, model in enumerate(g.models):
            assert g.matrix[a, t] == pytest.approx(_flip_ratio(model, Xte, res.X_adv, am))


def test_grey_box_bad_inputs():
    X, y = _toy(200, seed=1)
    with pytest.raises(ConfigError, match="n_models must be an integer >= 2"):
        rb.grey_box_matrix(X, y, n_models=1, attack_config=ATTACK, train_kwargs=TRAIN)
    with pytest.raises(InputError, match=r"y must have shape \(200,\)"):
        rb.grey_box_matrix(X, y[:-1], n_models=2, attack_config=ATTACK, train_kwargs=TRAIN)
    with pytest.raises(ConfigError, match="'max_jsdd'"):
        rb.grey_box_matrix(X, y, n_models=2, attack_config={"max_jsdd": 0.1})
    with pytest.raises(ConfigError, match="'epoch'"):
        rb.grey_box_matrix(X, y, n_models=2, attack_config=ATTACK, train_kwargs={"epoch": 2})
    with pytest.raises(ConfigError, match="must not set 'seed'"):
        rb.grey_box_matrix(X, y, n_models=2, train_kwargs={"seed": 2})
    with pytest.raises(InputError, match="weights must have shape"):
        rb.grey_box_matrix(X, y, n_models=2, weights=np.ones(5))


# ====================================================================== adversarial training
RANGES = {
    "min_change": (0.005, 0.03),
    "step": (0.03, 0.08),
    "n_iterations": (2, 4),
    "num_bins": 20,
    "alpha": (3.0, 10.0),
    "beta": (0.5, 2.5),
    "max_jsd": (0.03, 0.08),
    "max_dfn": (0.03, 0.08),
}


@pytest.fixture(scope="module")
def advtrain():
    X, y = _toy(2000, seed=21)
    res = rb.adversarial_training(
        X[:1000],
        y[:1000],
        X[1000:],
        y[1000:],
        rounds=3,
        attack_ranges=RANGES,
        test_attack=ATTACK,
        train_kwargs=TRAIN,
        seed=8,
    )
    return X, y, res


def test_adversarial_training_set_grows_by_added_adversaries(advtrain):
    X, y, res = advtrain
    Xtr, ytr = X[:1000], y[:1000]
    assert [r.round for r in res.rounds] == [0, 1, 2, 3]
    assert res.rounds[0].train_size == 1000 and res.rounds[0].n_added == 0
    for r in range(1, 4):
        rec, att = res.rounds[r], res.train_attacks[r - 1]
        assert rec.n_added == int(att.fooled.sum()) > 0
        assert rec.train_size == res.rounds[r - 1].train_size + rec.n_added
        rows = res.origin == r
        assert rows.sum() == rec.n_added
        # the adversaries enter with the true labels of the clean events they came from
        np.testing.assert_array_equal(res.X_train[rows], att.X_adv[att.fooled])
        np.testing.assert_array_equal(res.y_train[rows], ytr[att.fooled])
    assert len(res.X_train) == res.rounds[-1].train_size
    np.testing.assert_array_equal(res.X_train[res.origin == 0], Xtr)
    np.testing.assert_array_equal(res.train_sizes, [r.train_size for r in res.rounds])


def test_adversarial_training_draws_parameters_in_range_reproducibly(advtrain):
    _, _, res = advtrain
    drawn = [r.params for r in res.rounds[1:]]
    for p in drawn:
        assert 0.005 <= p["min_change"] <= 0.03 and 0.03 <= p["step"] <= 0.08
        assert 3.0 <= p["alpha"] <= 10.0 and 0.5 <= p["beta"] <= 2.5
        assert 0.03 <= p["max_jsd_single_change"] <= 0.08
        assert 0.03 <= p["max_frob_single_change"] <= 0.08
        assert isinstance(p["n_iterations"], int) and 2 <= p["n_iterations"] <= 4
        assert p["num_bins"] == 20
    assert len({p["alpha"] for p in drawn}) == 3  # fresh draws every round
    for r, p in enumerate(drawn, start=1):
        assert rb.draw_attack_parameters(RANGES, 8, r) == p
        assert res.train_attacks[r - 1].config["alpha"] == p["alpha"]
        assert res.train_attacks[r - 1].config["n_iterations"] == p["n_iterations"]
    assert rb.draw_attack_parameters(RANGES, 9, 1) != drawn[0]
    # the draws depend on the settings, not on the order the keys were written in
    assert rb.draw_attack_parameters(dict(reversed(list(RANGES.items()))), 8, 1) == drawn[0]


def test_adversarial_training_metrics_recompute_from_models(advtrain):
    X, y, res = advtrain
    Xtr, Xte, yte = X[:1000], X[1000:], y[1000:]
    assert len(res.models) == len(res.test_attacks) == 4 and len(res.train_attacks) == 3
    for r, (rec, model) in enumerate(zip(res.rounds, res.models, strict=True)):
        with torch.no_grad():
            z = model.logits(torch.as_tensor(Xte, dtype=torch.float32))[:, 0].numpy()
        assert rec.clean_auroc == pytest.approx(auroc(yte, z), abs=1e-9)
        fr = _flip_ratio(model, Xte, res.test_attacks[r].X_adv)
        assert rec.test_fooling_ratio == pytest.approx(fr, abs=1e-12)
        assert rec.test_fooling_ratio == pytest.approx(res.test_attacks[r].fooling_ratio)
        assert rec.test_fooling_ratio_error == pytest.approx(math.sqrt(fr * (1 - fr) / len(Xte)))
        xfr = _flip_ratio(model, Xte, res.test_attacks[0].X_adv)
        assert rec.transfer_fooling_ratio == pytest.approx(xfr, abs=1e-12)
        if r > 0:  # the training-set attack was run against the previous round's model
            tfr = _flip_ratio(res.models[r - 1], Xtr, res.train_attacks[r - 1].X_adv)
            assert rec.train_attack_fooling_ratio == pytest.approx(tfr, abs=1e-12)
    assert res.rounds[0].transfer_fooling_ratio == res.rounds[0].test_fooling_ratio
    # the toy tagger is a real classifier and the fixed test attack does fool it
    assert res.rounds[0].clean_auroc > 0.75 and res.rounds[0].test_fooling_ratio > 0.05
    d = json.loads(json.dumps(res.to_dict()))
    assert d["rounds"][1]["params"] == res.rounds[1].params
    assert d["provenance"]["seed"] == 8 and d["train_kwargs"]["epochs"] == TRAIN["epochs"]


def test_augment_appends_selected_adversaries():
    X, y = _toy(600, seed=4)
    w = np.linspace(0.5, 1.5, 600)
    model, _ = train_classifier(X, y, w, seed=0, progress=False, **TRAIN)
    Xa, ya, wa, att = rb.augment(X, y, model, ATTACK, w, return_attack=True)
    k = int(att.fooled.sum())
    assert k > 0 and len(Xa) == len(ya) == len(wa) == 600 + k
    np.testing.assert_array_equal(Xa[:600], X)
    np.testing.assert_array_equal(Xa[600:], att.X_adv[att.fooled])
    np.testing.assert_array_equal(wa[600:], w[att.fooled])
    Xm, ym, wm = rb.augment(X, y, model, ATTACK, select="moved", into=(X[:10], y[:10], None))
    assert len(Xm) == 10 + int(att.moved.sum())
    np.testing.assert_array_equal(ym[10:], y[att.moved])
    assert (wm == 1.0).all()
    with pytest.raises(ConfigError, match="select"):
        rb.augment(X, y, model, ATTACK, select="all")
    with pytest.raises(ConfigError, match="'stepp'"):
        rb.augment(X, y, model, {"stepp": 0.1})


def test_adversarial_training_bad_inputs():
    X, y = _toy(300, seed=2)
    args = (X[:150], y[:150], X[150:], y[150:])
    with pytest.raises(ConfigError, match="unknown CONSERVAttack config key 'alpah'"):
        rb.adversarial_training(*args, attack_ranges={"alpah": (1.0, 2.0)})
    with pytest.raises(ConfigError, match="low <= high"):
        rb.adversarial_training(*args, attack_ranges={"alpha": (3.0, 1.0)})
    with pytest.raises(ConfigError, match="integer setting"):
        rb.adversarial_training(*args, attack_ranges={"n_iterations": (1.5, 3)})
    with pytest.raises(ConfigError, match="number or a"):
        rb.adversarial_training(*args, attack_ranges={"alpha": (1.0, 2.0, 3.0)})
    with pytest.raises(ConfigError, match="test_attack"):
        rb.adversarial_training(*args, test_attack={"max_jsdd": 0.1})
    with pytest.raises(ConfigError, match="step must be > 0"):
        rb.adversarial_training(*args, attack_ranges={"step": (0.0, 0.0)})
    with pytest.raises(ConfigError, match="rounds"):
        rb.adversarial_training(*args, rounds=0)
    with pytest.raises(InputError, match="X_test has 4 features"):
        rb.adversarial_training(X[:150], y[:150], X[150:, :4], y[150:])
    with pytest.raises(InputError, match=r"y_train must have shape \(150,\)"):
        rb.adversarial_training(X[:150], y[:149], X[150:], y[150:])
    with pytest.raises(InputError, match="NaN"):
        bad = X[:150].copy()
        bad[3, 1] = np.nan
        rb.adversarial_training(bad, y[:150], X[150:], y[150:])


def test_adversarial_training_is_reproducible_for_a_seed(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="advsyst.workflows.robustness")
    X, y = _toy(800, seed=5)
    kw = {
        "rounds": 1,
        "attack_ranges": RANGES,
        "test_attack": ATTACK,
        "train_kwargs": {**TRAIN, "epochs": 3},
        "attack_model": "initial",
    }
    a = rb.adversarial_training(X[:400], y[:400], X[400:], y[400:], seed=3, **kw)
    b = rb.adversarial_training(X[:400], y[:400], X[400:], y[400:], seed=3, **kw)
    for ra, rb_ in zip(a.rounds, b.rounds, strict=True):
        da, db = ra.to_dict(), rb_.to_dict()
        da.pop("seconds"), db.pop("seconds")
        assert da == db
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert a.attack_model == "initial"
    # with attack_model="initial" the training attack targets the round-0 model
    fr = _flip_ratio(a.models[0], X[:400], a.train_attacks[0].X_adv)
    assert a.rounds[1].train_attack_fooling_ratio == pytest.approx(fr, abs=1e-12)
    # one progress line per round and run
    lines = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("adversarial training round 1/1") for m in lines) == 2
    d = json.loads(a.write_json(tmp_path / "advtrain.json").read_text())
    assert d["final_train_size"] == len(a.X_train) and d["attack_model"] == "initial"
