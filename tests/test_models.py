"""Tests of advsyst.models: architecture, training, TorchScript save/load."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch
from torch import nn

from advsyst.attacks.metrics import auroc
from advsyst.attacks.model import ModelAdapter
from advsyst.errors import InputError
from advsyst.models import (
    Classifier,
    Standardize,
    TrainHistory,
    build_mlp,
    load_metadata,
    load_model,
    predict_proba,
    save_model,
    train_classifier,
)

SMALL = (16, 8)


def toy(n: int = 1200, d: int = 4, seed: int = 0, shift: float = 2.0):
    """Two Gaussian blobs separated along the first two features (raw scales differ)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += shift * y
    X[:, 1] -= shift * y
    X *= np.arange(1, d + 1) * 10.0  # raw units: standardisation must cope
    X += 100.0
    return X, y


@pytest.fixture(scope="module")
def trained():
    X, y = toy()
    model, hist = train_classifier(
        X, y, hidden=SMALL, epochs=8, lr=1e-2, seed=3, progress=False,
        feature_names=["a", "b", "c", "d"],
    )  # fmt: skip
    return X, y, model, hist


# ---------------------------------------------------------------------- architecture
def test_build_mlp_matches_paper_table():
    net = build_mlp(30)
    kinds = [type(m) for m in net]
    block = [nn.Linear, nn.ReLU, nn.BatchNorm1d]
    assert kinds == block * 4 + [nn.Linear]
    widths = [m.out_features for m in net if isinstance(m, nn.Linear)]
    assert widths == [300, 102, 12, 6, 1]
    assert net[0].in_features == 30
    bn_sizes = [m.num_features for m in net if isinstance(m, nn.BatchNorm1d)]
    assert bn_sizes == [300, 102, 12, 6]


def test_build_mlp_options():
    net = build_mlp(5, hidden=(7,), batchnorm=False, dropout=0.3, n_outputs=3)
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert net[-1].out_features == 3
    assert [type(m) for m in build_mlp(5, hidden=())] == [nn.Linear]
    with pytest.raises(InputError):
        build_mlp(0)
    with pytest.raises(InputError):
        build_mlp(3, dropout=1.0)


def test_standardize_zero_variance_warns_and_uses_unit_scale(caplog):
    X = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    with caplog.at_level(logging.WARNING, logger="advsyst.models.mlp"):
        st = Standardize.from_data(X, feature_names=["pt", "const"])
    assert "const" in caplog.text and "pt" not in caplog.text
    assert st.std.tolist() == pytest.approx([np.std([1, 3, 5]), 1.0])
    z = st(torch.tensor(X, dtype=torch.float32)).numpy()
    assert np.allclose(z[:, 0].mean(), 0, atol=1e-6) and np.allclose(z[:, 0].std(), 1, atol=1e-6)
    assert np.allclose(z[:, 1], 0)


def test_classifier_outputs_probabilities_and_logits():
    x = torch.randn(7, 4)
    binary = Classifier(4, hidden=SMALL).eval()
    out = binary(x)
    assert out.shape == (7, 1) and bool(((out >= 0) & (out <= 1)).all())
    assert binary.advsyst_output == "probability" and Classifier.advsyst_output == "probability"
    multi = Classifier(4, hidden=SMALL, n_classes=3).eval()
    assert multi(x).shape == (7, 3) and multi.advsyst_output == "logit"
    with pytest.raises(InputError):
        Classifier(4, feature_names=["a", "b"])


def test_classifier_rejects_wrong_width():
    model = Classifier(4, hidden=SMALL).eval()
    with pytest.raises(RuntimeError, match=r"\(n, 4\)"):
        model(torch.zeros(3, 5))
    with pytest.raises(InputError, match="4 features"):
        predict_proba(model, np.zeros((3, 5)))
    with pytest.raises(InputError):  # width 1 would broadcast silently without the check
        predict_proba(model, np.zeros((3, 1)))


# ---------------------------------------------------------------------- training
def test_training_reaches_high_auroc_quickly(trained):
    X, y, model, hist = trained
    assert isinstance(hist, TrainHistory)
    assert hist.seconds < 10
    assert hist.val_auroc[hist.best_epoch] > 0.9
    Xt, yt = toy(n=600, seed=99)
    assert auroc(yt, predict_proba(model, Xt)) > 0.9
    assert not model.training
    assert model.feature_names == ["a", "b", "c", "d"]
    # standardisation comes from the training data, so raw features go in
    assert np.allclose(model.standardize.mean.numpy(), X.mean(axis=0), rtol=0.05)


def test_history_records_and_serialises(trained):
    _, _, _, hist = trained
    n = hist.n_epochs
    assert n >= 1
    for key in ("train_loss", "train_penalty", "val_loss", "val_auroc", "epoch_seconds"):
        assert len(getattr(hist, key)) == n
    assert hist.best_epoch == int(np.nanargmin(hist.val_loss))
    assert hist.seed == 3 and hist.config["hidden"] == list(SMALL)
    d = json.loads(json.dumps(hist.to_dict()))
    assert d["best_epoch"] == hist.best_epoch and len(d["val_loss"]) == n


def test_training_logs_one_line_per_epoch(caplog):
    X, y = toy(n=300)
    with caplog.at_level(logging.INFO, logger="advsyst.models.train"):
        _, hist = train_classifier(X, y, hidden=SMALL, epochs=3, patience=10, seed=0)
    lines = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert len(lines) == hist.n_epochs == 3
    assert all("val loss" in s and "val AUROC" in s and "train loss" in s for s in lines)


def test_training_is_deterministic_and_leaves_global_rng_alone():
    X, y = toy(n=400)
    kw = dict(hidden=SMALL, epochs=3, seed=7, progress=False, dropout=0.1)
    torch.manual_seed(123)
    m1, h1 = train_classifier(X, y, **kw)
    after = torch.rand(3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    assert torch.equal(after, expected)
    m2, h2 = train_classifier(X, y, **kw)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    assert np.array_equal(predict_proba(m1, X), predict_proba(m2, X))
    m3, _ = train_classifier(X, y, **{**kw, "seed": 8})
    assert not np.array_equal(predict_proba(m1, X), predict_proba(m3, X))


def test_early_stopping_restores_best_weights():
    X, y = toy(n=300, shift=0.3)  # weak separation: overfits quickly
    rng = np.random.default_rng(1)
    y = np.where(rng.random(len(y)) < 0.3, 1 - y, y)  # label noise
    model, hist = train_classifier(
        X, y, hidden=(64, 64), batchnorm=False, epochs=60, lr=2e-2, patience=2, seed=0,
        progress=False,
    )  # fmt: skip
    assert hist.stopped_early and hist.n_epochs < 60
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert hist.n_epochs == hist.best_epoch + 1 + 2
    # recompute the validation loss of the returned model on the same split
    from advsyst.models.train import _split

    _, va = _split(y, 0.2, np.random.default_rng(0))
    p = np.clip(predict_proba(model, X[va]), 1e-7, 1 - 1e-7)
    bce = -np.mean(y[va] * np.log(p) + (1 - y[va]) * np.log(1 - p))
    assert bce == pytest.approx(hist.val_loss[hist.best_epoch], rel=1e-4)


def test_event_weights_change_the_fit():
    X, y = toy(n=600, shift=0.5)
    kw = dict(hidden=SMALL, epochs=10, batch_size=64, lr=1e-2, seed=0, progress=False)
    m_eq, _ = train_classifier(X, y, **kw)
    m_w, _ = train_classifier(X, y, np.where(y == 1, 10.0, 1.0), **kw)
    assert predict_proba(m_w, X).mean() > predict_proba(m_eq, X).mean() + 0.1


def test_negative_weights_are_tolerated():
    X, y = toy(n=600)
    w = np.where(np.random.default_rng(2).random(600) < 0.15, -0.5, 1.0)  # NLO-like weights
    model, hist = train_classifier(X, y, w, hidden=SMALL, epochs=6, lr=1e-2, progress=False)
    assert np.isfinite(hist.train_loss).all() and np.isfinite(hist.val_loss).all()
    assert auroc(y, predict_proba(model, X)) > 0.9


def test_multiclass_training():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    X = rng.normal(size=(600, 3)) + 3.0 * np.eye(3)[y]
    model, hist = train_classifier(X, y, hidden=SMALL, epochs=5, lr=1e-2, progress=False)
    assert model.n_classes == 3 and model.advsyst_output == "logit"
    p = predict_proba(model, X)
    assert p.shape == (600, 3) and np.allclose(p.sum(axis=1), 1)
    assert (p.argmax(axis=1) == y).mean() > 0.85


def test_flatness_regulariser_reduces_input_gradients():
    X, y = toy(n=800)
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # unit scales: raw and standardised agree
    kw = dict(hidden=SMALL, epochs=6, lr=1e-2, seed=0, progress=False)
    norms = {}
    for lam in (0.0, 1.0):
        model, hist = train_classifier(X, y, flatness_lambda=lam, **kw)
        g = ModelAdapter(model).loss_gradient(X, y)
        norms[lam] = float(np.mean(np.sum(g**2, axis=1)))
        if lam > 0:
            assert all(p > 0 for p in hist.train_penalty)
            assert hist.val_auroc[hist.best_epoch] > 0.85  # still a useful tagger
    assert norms[1.0] < 0.7 * norms[0.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"X": np.array([[0.0, np.nan], [1.0, 2.0]])}, "'pt_b'"),
        ({"y": np.array([0, 1, 1])}, "events"),
        ({"y": np.array([1, 1, 1, 1])}, "single class"),
        ({"w": np.ones(3)}, "w has 3"),
        ({"w": np.array([1.0, np.inf, 1.0, 1.0])}, "NaN/inf"),
        ({"y": np.array([0, 1, 0.5, 1])}, "integer"),
    ],
)
def test_training_input_validation(kwargs, match):
    args = {"X": np.arange(8.0).reshape(4, 2), "y": np.array([0, 1, 0, 1]), "w": None}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        train_classifier(
            args["X"], args["y"], args["w"], feature_names=["pt_a", "pt_b"], hidden=SMALL
        )


# ---------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path, trained):
    X, _, model, hist = trained
    path = save_model(model, tmp_path / "sub" / "tagger.pt", metadata={"history": hist})
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    loaded = load_model(path)
    assert isinstance(loaded, torch.jit.ScriptModule) and not loaded.training
    assert np.array_equal(predict_proba(loaded, X), predict_proba(model, X))
    # attribute semantics survive TorchScript
    assert loaded.advsyst_output == "probability"
    assert loaded.feature_names == ["a", "b", "c", "d"] and loaded.n_features == 4
    # the adapter evaluates advsyst models through their logits (no sigmoid saturation)
    adapter = ModelAdapter(loaded)
    xb = torch.tensor(X[:50], dtype=torch.float32)
    np.testing.assert_allclose(adapter.scores(X[:50]), loaded(xb)[:, 0].detach().numpy(), rtol=1e-5)
    assert adapter.output == "logit"
    meta = load_metadata(path)
    assert meta["feature_names"] == ["a", "b", "c", "d"]
    assert meta["advsyst_output"] == "probability" and meta["n_features"] == 4
    assert meta["user"]["history"]["best_epoch"] == hist.best_epoch
    assert meta["user"]["history"]["config"] == hist.config
    assert "versions" in meta["provenance"]
    with pytest.raises(InputError, match="4 features"):
        predict_proba(loaded, X[:, :3])
    # saving did not move or retrain the caller's model
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_save_load_multiclass_keeps_logit_semantics(tmp_path):
    model = Classifier(3, hidden=SMALL, n_classes=4).eval()
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert loaded.advsyst_output == "logit"
    x = torch.randn(5, 3)
    assert torch.equal(loaded(x), model(x))
    X = np.random.default_rng(0).normal(size=(5, 3))
    assert np.allclose(predict_proba(loaded, X), predict_proba(model, X))


@pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated:DeprecationWarning")
def test_load_user_torchscript_and_trace_fallback(tmp_path):
    user = nn.Sequential(nn.Linear(3, 1))
    path = tmp_path / "user.pt"
    torch.jit.save(torch.jit.script(user), str(path))
    loaded = load_model(path)
    assert load_metadata(path) == {}
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x), user(x))

    class Unscriptable(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def forward(self, x, *args):  # varargs cannot be scripted
            return torch.sigmoid(self.lin(x))

    model = Unscriptable()
    with pytest.raises(InputError, match="example_input"):
        save_model(model, tmp_path / "u.pt")
    p = save_model(model, tmp_path / "u.pt", example_input=np.zeros((2, 3)))
    assert torch.allclose(load_model(p)(x), model(x))


def test_load_model_errors_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a model" * 10)
    with pytest.raises(InputError, match="garbage.pt"):
        load_model(garbage)
    with pytest.raises(InputError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    state = tmp_path / "state.pt"
    torch.save(nn.Linear(2, 1).state_dict(), state)
    with pytest.raises(InputError, match="state.pt.*torch.load"):
        load_model(state)
    with pytest.raises(InputError, match="garbage.pt"):
        load_metadata(garbage)


def test_predict_proba_batches_consistently(trained):
    X, _, model, _ = trained
    full = predict_proba(model, X)
    assert full.shape == (len(X),)
    assert np.allclose(predict_proba(model, X, batch_size=97), full, atol=1e-7)
    t0 = time.perf_counter()
    predict_proba(model, np.repeat(X, 10, axis=0))
    assert time.perf_counter() - t0 < 5
