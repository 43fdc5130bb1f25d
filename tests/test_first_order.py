"""Tests of advsyst.attacks.first_order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from advsyst.attacks.first_order import (
    fgsm,
    gaussian_noise,
    loss_surface_scan,
    ngm,
    per_event_loss,
    pgd,
    systematic_shift,
)
from advsyst.attacks.metrics import fooling_ratio
from advsyst.attacks.model import ModelAdapter
from advsyst.errors import ConfigError, InputError
from advsyst.models import Classifier, load_model, save_model, train_classifier

W = [1.0, -2.0, 0.5, 3.0]


def linear_model(weights=W, bias: float = 0.1) -> nn.Module:
    """Logistic regression returning its logit: the loss is convex along any line, so any
    ascent step strictly increases every event's loss, and the gradient sign is
    sign(w) * sign(p - y)."""
    lin = nn.Linear(len(weights), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([weights]))
        lin.bias.fill_(bias)
    lin.advsyst_output = "logit"
    return lin


def data(n: int = 200, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) * [1.0, 2.0, 0.5, 1.0][:d] + 0.8 * y[:, None] * [1, -1, 0, 1][:d]
    return X, y


@pytest.fixture(scope="module")
def trained():
    X, y = data(800, seed=1)
    model, _ = train_classifier(X, y, hidden=(16, 8), epochs=8, lr=1e-2, seed=0, progress=False)
    return X, y, model


GRADIENT_ATTACKS = [fgsm, ngm, pgd]


# ---------------------------------------------------------------------- loss increase
@pytest.mark.parametrize("attack", GRADIENT_ATTACKS)
def test_attacks_increase_every_loss_of_a_convex_model(attack):
    X, y = data()
    model = linear_model()
    clean_pred = ModelAdapter(model).predict(X)
    for target in (None, y):
        t = clean_pred if target is None else target
        before = per_event_loss(X, model, t)
        after = per_event_loss(attack(X, model, target, epsilon=0.1), model, t)
        assert (after > before).all()


def test_multiclass_logit_model():
    X, _ = data()
    torch.manual_seed(0)
    model = nn.Linear(4, 3)  # k-class logits: cross-entropy still convex in x
    before = per_event_loss(X, model)
    for attack in GRADIENT_ATTACKS:
        Xa = attack(X, model, epsilon=0.05)
        assert (per_event_loss(Xa, model, ModelAdapter(model).predict(X)) > before).all()
    Xa = fgsm(X, model, epsilon=3.0)
    assert fooling_ratio(ModelAdapter(model).predict(X), ModelAdapter(model).predict(Xa)) > 0.5


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS)
def test_attacks_on_trained_model_raise_loss_and_flip(trained, attack):
    X, y, model = trained
    adapter = ModelAdapter(model)
    clean_pred = adapter.predict(X)
    before = per_event_loss(X, model)
    small = per_event_loss(attack(X, model, epsilon=0.01, units="range"), model, clean_pred)
    assert (small > before).mean() > 0.95
    big = attack(X, model, epsilon=0.15, units="range")
    assert per_event_loss(big, model, clean_pred).mean() > 2 * before.mean()
    assert fooling_ratio(clean_pred, adapter.predict(big)) > 0.3
    # with the true labels as target the accuracy drops
    adv = attack(X, model, y, epsilon=0.15, units="range")
    assert (adapter.predict(adv) == y).mean() < (clean_pred == y).mean() - 0.2


def test_attacks_accept_adapters_and_loaded_torchscript(tmp_path, trained):
    X, _, model = trained
    ref = fgsm(X, model, epsilon=0.05)
    assert np.array_equal(fgsm(X, ModelAdapter(model), epsilon=0.05), ref)
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert np.array_equal(fgsm(X, loaded, epsilon=0.05), ref)
    assert np.allclose(ngm(X, loaded, epsilon=0.05), ngm(X, model, epsilon=0.05))


# ---------------------------------------------------------------------- FGSM / NGM geometry
def test_fgsm_moves_every_entry_by_epsilon():
    X, _ = data()
    model = linear_model()
    p = ModelAdapter(model).scores(X)
    target = (p >= 0.5).astype(int)
    expected_sign = np.sign(np.array(W))[None, :] * np.sign(p - target)[:, None]
    Xa = fgsm(X, model, epsilon=0.03)
    assert Xa.dtype == np.float64 and Xa.shape == X.shape
    assert np.allclose(Xa - X, 0.03 * expected_sign, rtol=0, atol=1e-12)
    rng_ = X.max(axis=0) - X.min(axis=0)
    Xr = fgsm(X, model, epsilon=0.03, units="range")
    assert np.allclose(Xr - X, 0.03 * rng_ * expected_sign, rtol=0, atol=1e-12)
    Xs = fgsm(X, model, epsilon=0.03, units="std")
    assert np.allclose(np.abs(Xs - X), 0.03 * X.std(axis=0), rtol=0, atol=1e-12)


def test_confident_events_of_a_classifier_are_still_attacked():
    # |logit| > 17: the float32 sigmoid output rounds to 0 or 1, but the attack
    # differentiates through Classifier.logits (kept by TorchScript too)
    model = Classifier(2, hidden=(), batchnorm=False).eval()
    with torch.no_grad():
        model.net[0].weight.copy_(torch.tensor([[20.0, 0.0]]))
        model.net[0].bias.zero_()
    X = np.column_stack([np.r_[np.linspace(-3, -1, 5), np.linspace(1, 3, 5)], np.ones(10)])
    p = ModelAdapter(model).scores(X)
    assert ((p < 1e-6) | (p > 1 - 1e-6)).all()
    Xa = fgsm(X, model, epsilon=0.1)
    assert np.allclose(np.abs(Xa[:, 0] - X[:, 0]), 0.1) and np.array_equal(Xa[:, 1], X[:, 1])
    assert (np.sign(Xa[:, 0] - X[:, 0]) == -np.sign(X[:, 0])).all()  # towards the boundary
    assert np.allclose(ngm(X, model, epsilon=0.1), Xa)


def test_zero_gradient_means_no_move():
    X, _ = data(20)
    flat = linear_model([0.0, 0.0, 0.0, 0.0])
    for attack in GRADIENT_ATTACKS:
        assert np.array_equal(attack(X, flat, epsilon=0.5), X)


def test_ngm_per_event_l2_norm_is_epsilon():
    X, _ = data()
    model = linear_model()
    d = ngm(X, model, epsilon=0.2) - X
    assert np.allclose(np.linalg.norm(d, axis=1), 0.2, rtol=1e-9)
    # direction: parallel to the weight vector (the gradient of a linear model)
    cos = np.abs(d @ np.array(W)) / (np.linalg.norm(d, axis=1) * np.linalg.norm(W))
    assert np.allclose(cos, 1.0)
    # range units: the norm is measured in range-scaled coordinates
    scale = X.max(axis=0) - X.min(axis=0)
    dr = (ngm(X, model, epsilon=0.2, units="range") - X) / scale
    assert np.allclose(np.linalg.norm(dr, axis=1), 0.2, rtol=1e-9)
    # with an immutable feature the remaining ones still carry the full norm
    di = ngm(X, model, epsilon=0.2, immutable=[3]) - X
    assert (di[:, 3] == 0).all()
    assert np.allclose(np.linalg.norm(di, axis=1), 0.2, rtol=1e-9)


# ---------------------------------------------------------------------- masks and limits
@settings(max_examples=25, deadline=None)
@given(
    X=arrays(np.float64, (12, 4), elements=st.floats(-5, 5, allow_nan=False, width=32)),
    immutable=st.lists(st.integers(0, 3), max_size=2, unique=True),
    integer=st.lists(st.integers(0, 3), max_size=1, unique=True),
    eps=st.floats(0.001, 1.0),
    attack=st.sampled_from(GRADIENT_ATTACKS),
)
def test_masked_entries_never_move(X, immutable, integer, eps, attack):
    X = X.copy()
    X[::3, 0] = -9.0  # padding value
    X[1, 2] = -9.0
    before = X.copy()
    Xa = attack(
        X, linear_model(), epsilon=eps, immutable=immutable, integer_features=integer,
        default_value=-9.0,
    )  # fmt: skip
    assert np.array_equal(X, before)  # input untouched
    fixed = np.zeros(X.shape, bool)
    fixed[:, immutable + integer] = True
    fixed |= X == -9.0
    assert np.array_equal(Xa[fixed], X[fixed])
    if attack is fgsm:  # every other entry moves by exactly eps (linear model: no zero grads)
        assert np.allclose(np.abs(Xa - X)[~fixed], eps, rtol=0, atol=1e-9)


def test_integer_features_auto_detection():
    X, _ = data(50)
    X[:, 2] = np.round(X[:, 2] * 3)  # integer-valued column
    Xa = fgsm(X, linear_model(), epsilon=0.1, integer_features="auto")
    assert np.array_equal(Xa[:, 2], X[:, 2])
    assert (Xa[:, [0, 1, 3]] != X[:, [0, 1, 3]]).all()
    with pytest.raises(ConfigError):
        fgsm(X, linear_model(), integer_features="guess")


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS)
def test_max_relative_caps_each_entry(attack):
    X, _ = data()
    X[0, 1] = 0.0
    Xa = attack(X, linear_model(), epsilon=1.0, max_relative=0.05)
    assert (np.abs(Xa - X) <= 0.05 * np.abs(X) + 1e-12).all()
    assert Xa[0, 1] == 0.0
    if attack is fgsm:  # cap binds where eps is larger, eps applies elsewhere
        assert np.allclose(np.abs(Xa - X), np.minimum(1.0, 0.05 * np.abs(X)))


@pytest.mark.parametrize("attack", GRADIENT_ATTACKS)
def test_bounds_clip_without_pushing_outliers_further(attack):
    X, _ = data()
    lo, hi = np.full(4, -1.0), np.array([1.0, 1.0, np.inf, 1.0])
    Xa = attack(X, linear_model(), epsilon=0.5, bounds=(lo, hi))
    inside = (X >= lo) & (X <= hi)
    assert ((Xa >= lo) & (Xa <= hi))[inside].all()
    # entries that started outside never move further out
    assert (np.abs(np.clip(Xa, lo, hi) - Xa) <= np.abs(np.clip(X, lo, hi) - X) + 1e-12).all()
    Xd = attack(X, linear_model(), epsilon=5.0, bounds="data")
    assert (Xd >= X.min(axis=0)).all() and (Xd <= X.max(axis=0)).all()
    Xo = attack(X, linear_model(), epsilon=5.0, bounds=(0.0, None))
    assert (Xo[X >= 0] >= 0).all()


# ---------------------------------------------------------------------- PGD
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_stays_in_ball(trained, norm, random_start):
    X, _, model = trained
    X = X[:200]
    scale = X.max(axis=0) - X.min(axis=0)
    eps = 0.1
    Xa = pgd(
        X, model, epsilon=eps, norm=norm, n_steps=8, step_size=0.06, units="range",
        random_start=random_start, seed=4,
    )  # fmt: skip
    u = (Xa - X) / scale
    if norm == "linf":
        assert np.abs(u).max() <= eps * (1 + 1e-9)
        assert np.isclose(np.abs(u).max(), eps)  # the boundary is reached
    else:
        norms = np.linalg.norm(u, axis=1)
        assert norms.max() <= eps * (1 + 1e-9)
        assert np.isclose(norms.max(), eps)
    before = per_event_loss(X, model)
    assert per_event_loss(Xa, model, ModelAdapter(model).predict(X)).mean() > before.mean()


def test_pgd_single_full_step_equals_fgsm_and_ngm(trained):
    X, _, model = trained
    for norm, ref in (("linf", fgsm), ("l2", ngm)):
        one = pgd(X, model, epsilon=0.2, step_size=0.2, n_steps=1, norm=norm)
        assert np.allclose(one, ref(X, model, epsilon=0.2), rtol=0, atol=1e-12)


def test_pgd_is_at_least_as_strong_as_fgsm(trained):
    X, _, model = trained
    target = ModelAdapter(model).predict(X)
    l_fgsm = per_event_loss(fgsm(X, model, epsilon=0.05, units="range"), model, target)
    l_pgd = per_event_loss(pgd(X, model, epsilon=0.05, units="range", n_steps=10), model, target)
    assert l_pgd.mean() >= l_fgsm.mean()


def test_pgd_random_start_is_seeded(trained):
    X, _, model = trained
    kw = dict(epsilon=0.1, n_steps=2, random_start=True)
    a = pgd(X, model, seed=1, **kw)
    assert np.array_equal(a, pgd(X, model, seed=1, **kw))
    assert not np.array_equal(a, pgd(X, model, seed=2, **kw))
    assert np.array_equal(pgd(X, model, epsilon=0.1, n_steps=0), X)
    with pytest.raises(ConfigError):
        pgd(X, model, norm="l1")


# ---------------------------------------------------------------------- model-free
def test_gaussian_noise_is_seeded_and_scaled():
    X, _ = data(4000)
    a = gaussian_noise(X, sigma=0.1, seed=5)
    assert np.array_equal(a, gaussian_noise(X, sigma=0.1, seed=5))
    assert not np.array_equal(a, gaussian_noise(X, sigma=0.1, seed=6))
    assert np.allclose((a - X).std(axis=0), 0.1, rtol=0.05)
    r = gaussian_noise(X, sigma=0.1, seed=5, units="std", immutable=[1])
    assert (r[:, 1] == X[:, 1]).all()
    assert np.allclose((r - X).std(axis=0)[[0, 2, 3]], 0.1 * X.std(axis=0)[[0, 2, 3]], rtol=0.05)
    assert np.array_equal(gaussian_noise(X, sigma=0.0), X)


@settings(max_examples=30, deadline=None)
@given(
    X=arrays(np.float64, (6, 3), elements=st.floats(-1e3, 1e3, allow_nan=False)),
    eps=st.floats(0, 0.5),
)
def test_systematic_shift_up_down_exact(X, eps):
    up = systematic_shift(X, epsilon=eps, direction=+1)
    down = systematic_shift(X, epsilon=eps, direction=-1)
    assert np.array_equal(up, X * (1 + eps)) and np.array_equal(down, X * (1 - eps))
    add = systematic_shift(X, epsilon=eps, direction=-1, relative=False)
    assert np.array_equal(add, X - eps)


def test_systematic_shift_options():
    X, _ = data(30)
    eps = np.array([0.1, 0.0, 0.2, 0.3])
    out = systematic_shift(X, epsilon=eps, features=[0, 1, 2], default_value=X[0, 0])
    assert np.array_equal(out[1:, :3], X[1:, :3] * (1 + eps[:3]))
    assert out[0, 0] == X[0, 0] and np.array_equal(out[:, 3], X[:, 3])
    rng_ = X.max(axis=0) - X.min(axis=0)
    absr = systematic_shift(X, epsilon=0.1, relative=False, units="range")
    assert np.allclose(absr - X, 0.1 * rng_)
    with pytest.raises(InputError, match="direction"):
        systematic_shift(X, epsilon=0.1, direction=2)
    with pytest.raises(InputError):
        systematic_shift(X, epsilon=np.ones(3))
    with pytest.raises(InputError):
        systematic_shift(X, epsilon=np.array([0.1, -0.1, 0, 0]))


# ---------------------------------------------------------------------- validation
def test_input_validation():
    X, _ = data(10)
    model = linear_model()
    bad = X.copy()
    bad[3, 2] = np.nan
    for call in (
        lambda A: fgsm(A, model),
        lambda A: ngm(A, model),
        lambda A: pgd(A, model),
        lambda A: gaussian_noise(A),
        lambda A: systematic_shift(A, epsilon=0.1),
    ):
        with pytest.raises(InputError, match=r"column\(s\) \[2\]"):
            call(bad)
    with pytest.raises(InputError, match=r"shape \(10, 3\)"):
        fgsm(X[:, :3], model)
    with pytest.raises(InputError, match="4 features"):  # models that declare n_features
        fgsm(X[:, :3], Classifier(4, hidden=(3,)))
    with pytest.raises(InputError, match="epsilon"):
        fgsm(X, model, epsilon=-0.1)
    with pytest.raises(InputError, match="epsilon"):
        pgd(X, model, epsilon=float("nan"))
    with pytest.raises(InputError, match="sigma"):
        gaussian_noise(X, sigma=-1)
    with pytest.raises(ConfigError, match="units"):
        ngm(X, model, units="percent")
    with pytest.raises(InputError, match="immutable"):
        fgsm(X, model, immutable=[7])
    with pytest.raises(InputError, match="y has shape"):
        fgsm(X, model, np.zeros(3))
    with pytest.raises(InputError, match="bounds"):
        fgsm(X, model, bounds=(1.0, 0.0))
    with pytest.raises(InputError, match="2-D"):
        fgsm(X[0], model)


def test_returns_new_arrays_and_handles_empty_input():
    X, _ = data(10)
    model = linear_model()
    for out in (fgsm(X, model, epsilon=0.0), gaussian_noise(X, sigma=0.0)):
        assert out is not X and np.array_equal(out, X)
        out[0, 0] = 123.0
        assert X[0, 0] != 123.0
    empty = np.zeros((0, 4))
    for attack in GRADIENT_ATTACKS:
        assert attack(empty, model).shape == (0, 4)
    assert gaussian_noise(empty).shape == (0, 4)


# ---------------------------------------------------------------------- loss surface
def test_loss_surface_scan_gradient_directions():
    X, _ = data(100)
    model = linear_model()
    res = loss_surface_scan(X, model, n_points=7, radius=0.5)
    loss = res["loss"]
    assert loss.shape == (7, 7) and res["alpha"].shape == (7,)
    mid = 3
    assert res["alpha"][mid] == 0 and res["alpha"][-1] == pytest.approx(0.5)
    assert loss[mid, mid] == pytest.approx(res["clean_loss"])
    assert loss[mid, mid] == pytest.approx(per_event_loss(X, model).mean())
    # along the gradient-sign direction the loss rises, against it it falls
    assert np.all(np.diff(loss[:, mid]) > 0)
    assert res["agreement"][mid, mid] == 1.0 and res["agreement"][-1, mid] < 1.0
    assert res["directions"] == "gradient" and res["direction_vectors"] is None


def test_loss_surface_scan_custom_and_random_directions():
    X, y = data(50)
    model = linear_model()
    dirs = np.array([[2.0, 0, 0, 0], [0, 0, 0, 1.0]])
    res = loss_surface_scan(X, model, y, directions=dirs, radius=1.0, n_points=3, units="absolute")
    assert np.allclose(res["direction_vectors"], [[1, 0, 0, 0], [0, 0, 0, 1]])
    shifted = X + np.array([-1.0, 0, 0, 1.0])  # alpha = -1, beta = +1
    assert res["loss"][0, 2] == pytest.approx(per_event_loss(shifted, model, y).mean())
    w = np.arange(1.0, 51.0)
    resw = loss_surface_scan(X, model, y, directions=dirs, radius=1.0, n_points=3, weights=w,
                             units="absolute")  # fmt: skip
    expected = np.average(per_event_loss(shifted, model, y), weights=w)
    assert resw["loss"][0, 2] == pytest.approx(expected)
    rnd = loss_surface_scan(X, model, directions="random", n_points=3, seed=2)
    v = rnd["direction_vectors"]
    assert np.allclose(v @ v.T, np.eye(2), atol=1e-12)
    again = loss_surface_scan(X, model, directions="random", n_points=3, seed=2)
    assert np.array_equal(rnd["loss"], again["loss"])
    with pytest.raises(InputError):
        loss_surface_scan(X, model, directions=np.ones((3, 4)))
    with pytest.raises(ConfigError):
        loss_surface_scan(X, model, directions="diagonal")
