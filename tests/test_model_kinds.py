"""Every model kind through one adapter: ONNX, coffea wrappers, predict_proba, Boosters."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from advsyst.attacks import ConservAttack, ConservAttackConfig, as_adapter
from advsyst.attacks.first_order import fgsm
from advsyst.attacks.model import BlackBoxAdapter, ModelAdapter
from advsyst.errors import InputError, ModelOutputError
from advsyst.models import Classifier, OnnxModel, load_model, model_kind, onnx_to_torch
from advsyst.models.onnx import UnsupportedOnnxGraph
from advsyst.stats import delta_fn, jsd_per_feature

ATTACK = {"min_change": 0.01, "step": 0.02, "num_bins": 20, "n_iterations": 3,
          "max_jsd_single_change": 0.03, "max_frob_single_change": 0.03,
          "progress": False}  # fmt: skip
if "robust_binnings" in ConservAttackConfig.__dataclass_fields__:
    # these tests are about the models: the paper's single binning keeps them fast
    ATTACK["robust_binnings"] = None


def _export(model: torch.nn.Module, d: int, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.zeros(3, d),), str(path), dynamo=False,
            input_names=["x"], output_names=["p"],
            dynamic_axes={"x": {0: "n"}, "p": {0: "n"}},
        )  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(600, 4))
    X[:, 1] += 0.5 * X[:, 0]
    y = (X[:, 0] + 0.7 * X[:, 2] ** 2 - X[:, 3] > 0.3).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def mlp(toy, tmp_path_factory):
    """A small trained Classifier (sigmoid output, batch norm) and its ONNX export."""
    X, y = toy
    torch.manual_seed(0)
    m = Classifier(4, hidden=(16, 8), mean=X.mean(0), std=X.std(0))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy(m(Xt)[:, 0], yt).backward()
        opt.step()
    m.eval()
    path = _export(m, 4, tmp_path_factory.mktemp("onnx") / "mlp.onnx")
    return m, path


@pytest.fixture(scope="module")
def gbdt(toy):
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = toy
    return GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0).fit(X, y)


# ---------------------------------------------------------------------- ONNX
def test_onnx_mlp_matches_torch_scores_and_autograd_gradients(toy, mlp):
    X, _ = toy
    m, path = mlp
    om = load_model(path)
    assert isinstance(om, OnnxModel) and om.n_features == 4
    a, ta = as_adapter(om, n_features=4), as_adapter(m, n_features=4)
    np.testing.assert_allclose(a.scores(X), ta.scores(X), atol=1e-6)
    t = ta.predict(X)
    np.testing.assert_array_equal(a.predict(X), t)
    g = a.loss_gradient(X, t)
    assert a.gradient_mode == "autograd"
    # the torch replay differentiates the logits (the final Sigmoid is skipped), exactly as
    # the torch adapter does for Classifier.logits
    np.testing.assert_allclose(g, ta.loss_gradient(X, t), rtol=1e-4, atol=1e-7)


class _OpsNet(torch.nn.Module):
    """A 3-class net whose ONNX export uses shape arithmetic, Gather/Slice, Clip, Elu..."""

    def __init__(self, softmax: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b, self.softmax = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3), softmax

    def forward(self, x):
        x = x.view(x.size(0), 2, 3)
        x = torch.tanh(x).transpose(1, 2).reshape(x.size(0), -1)
        h = self.a(x)
        h = torch.nn.functional.leaky_relu(h, 0.1) + torch.nn.functional.elu(h).clamp(-0.5, 2.0)
        h = torch.cat([h[:, :4], torch.exp(-(h[:, 4:] ** 2))], dim=1)
        z = self.b(h) / h.abs().mean(dim=1, keepdim=True).sqrt()
        return torch.softmax(z, dim=-1) if self.softmax else z


def test_onnx_multiclass_graph_replay_matches_torch(tmp_path, rng):
    X = rng.normal(size=(300, 6))
    net = _OpsNet(softmax=True).eval()
    _export(net, 6, tmp_path / "ops.onnx")
    om = OnnxModel(tmp_path / "ops.onnx")
    assert {"Gather", "Slice", "Shape", "Clip", "Elu", "Softmax"} <= om.op_types
    a = as_adapter(om)
    logits = _OpsNet(softmax=False).eval()  # same weights (same seed); torch sees logits
    ta = as_adapter(logits, n_features=6)
    np.testing.assert_allclose(a.probabilities(X), ta.probabilities(X), atol=1e-6)
    assert a.n_classes == 3
    t = ta.predict(X)
    g = a.loss_gradient(X, t)
    assert a.gradient_mode == "autograd"
    np.testing.assert_allclose(g, ta.loss_gradient(X, t), rtol=1e-4, atol=1e-6)


def test_multiclass_predict_proba(toy):
    from sklearn.linear_model import LogisticRegression

    X, _ = toy
    y3 = np.digitize(X[:, 0], [-0.5, 0.5])
    clf = LogisticRegression(max_iter=200).fit(X, y3)
    a = as_adapter(clf)
    # log-probabilities are floored at log(1e-12)
    np.testing.assert_allclose(a.probabilities(X), clf.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a.predict(X), clf.predict(X))
    # a linear softmax model: -log p_t has gradient sum_k p_k w_k - w_t
    t = clf.predict(X[:20])
    p = clf.predict_proba(X[:20])
    exact = p @ clf.coef_ - clf.coef_[t]
    a = as_adapter(clf, fd_step=1e-5, fd_retries=0)
    np.testing.assert_allclose(a.loss_gradient(X[:20], t), exact, rtol=1e-4, atol=1e-7)


def test_onnx_finite_differences_approximate_the_gradient(toy, mlp):
    X, _ = toy
    m, path = mlp
    ta = as_adapter(m, n_features=4)
    t = ta.predict(X[:200])
    exact = ta.loss_gradient(X[:200], t)
    fd = as_adapter(load_model(path), gradient="finite-difference")
    g = fd.loss_gradient(X[:200], t)
    assert fd.gradient_mode == "finite-difference"
    # 2 d rows per event, in one call here (batch_size is large)
    assert fd.rows == 200 * 2 * 4 and fd.calls == 1
    big = np.abs(exact) > 1e-2 * np.abs(exact).max()
    assert (np.sign(g[big]) == np.sign(exact[big])).mean() > 0.99
    # a ReLU kink inside [x - h, x + h] turns a few entries into secant slopes
    rel = np.abs(g[big] - exact[big]) / np.abs(exact[big])
    assert np.median(rel) < 1e-3 and (rel < 0.05).mean() > 0.85


def test_onnx_model_pickles_without_its_session(mlp, toy):
    X, _ = toy
    om = load_model(mlp[1])
    om.session  # noqa: B018  created
    clone = pickle.loads(pickle.dumps(om))
    assert clone._session is None
    np.testing.assert_array_equal(clone(X[:5].astype(np.float32)), om(X[:5].astype(np.float32)))


def test_conservattack_on_onnx_equals_the_torch_run(toy, mlp):
    X, y = toy
    m, path = mlp
    r_t = ConservAttack(ATTACK).run(X, m, y=y)
    r_o = ConservAttack(ATTACK).run(X, load_model(path), y=y)
    assert r_t.metrics["fooling_ratio"] > 0
    np.testing.assert_allclose(r_o.X_adv, r_t.X_adv, atol=1e-9)
    np.testing.assert_array_equal(r_o.pred_adv, r_t.pred_adv)


def test_attack_cli_accepts_onnx(toy, mlp, tmp_path):
    from advsyst.cli import main

    X, y = toy
    np.savez(tmp_path / "data.npz", X=X, y=y, w=np.ones(len(X)))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(ATTACK))
    out = tmp_path / "out"
    args = ["attack", "--model", mlp[1], "--data", str(tmp_path / "data.npz"),
            "--config", str(cfg), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    with np.load(out / "adversarial.npz") as z:
        Xa = z["X_adv"]
    p_adv = OnnxModel(mlp[1])(Xa.astype(np.float32))[:, 0]
    rep = json.loads((out / "report.json").read_text())
    # the reported fooling ratio is what onnxruntime says about the written features
    p_clean = OnnxModel(mlp[1])(X.astype(np.float32))[:, 0]
    assert rep["fooling_ratio"] == pytest.approx(((p_adv >= 0.5) != (p_clean >= 0.5)).mean())


# ---------------------------------------------------------------------- gradient-free
def test_finite_differences_match_the_analytic_logistic_gradient(rng):
    w, b = np.array([1.5, -2.0, 0.5]), 0.3

    def proba(X):
        return 1.0 / (1.0 + np.exp(-(X @ w + b)))

    X = rng.normal(size=(50, 3))
    a = BlackBoxAdapter(proba, output="probability", fd_scale="absolute", fd_step=1e-5)
    t = (rng.random(50) < 0.5).astype(np.int64)
    p = proba(X)
    exact = (p - t)[:, None] * w[None, :]  # d/dx of -log p_t for a logistic model
    np.testing.assert_allclose(a.loss_gradient(X, t), exact, rtol=1e-5, atol=1e-8)


def test_predict_proba_model_scores_and_gradient_signs(toy, gbdt):
    X, _ = toy
    a = as_adapter(gbdt, n_features=4)
    assert isinstance(a, BlackBoxAdapter) and a.fd_retries == 3 and a.fd_step == 1e-2
    np.testing.assert_allclose(a.scores(X), gbdt.predict_proba(X)[:, 1])
    t = a.predict(X[:60])
    g = a.loss_gradient(X[:60], t)
    assert (g != 0).any()
    # brute force: stepping each entry along the reported sign by the step that found it
    # raises the loss (the candidates of CONSERVAttack go this way)
    h0 = 1e-2 * (X.max(0) - X.min(0))
    for i, j in zip(*np.nonzero(g), strict=True):
        found = False
        for r in range(4):
            h = h0[j] * 2**r
            xp, xm = X[i].copy(), X[i].copy()
            xp[j] += h
            xm[j] -= h
            lp, lm = (-np.log(np.clip(gbdt.predict_proba(v[None])[0, t[i]], 1e-12, 1))
                      for v in (xp, xm))  # fmt: skip
            if lp != lm:
                assert np.sign(lp - lm) == np.sign(g[i, j])
                found = True
                break
        assert found


def test_conservattack_on_xgboost_moves_only_within_budget(toy):
    xgboost = pytest.importorskip("xgboost")
    X, y = toy
    clf = xgboost.XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(X, y)
    res = ConservAttack(ATTACK).run(X, clf, y=y)
    assert res.metrics["fooling_ratio"] > 0
    # the reported predictions are xgboost's own on the written features
    np.testing.assert_array_equal(res.pred_adv, (clf.predict_proba(res.X_adv)[:, 1] >= 0.5))
    assert (
        jsd_per_feature(X, res.X_adv, num_bins=20).max() <= ATTACK["max_jsd_single_change"] + 1e-9
    )
    assert delta_fn(X, res.X_adv) <= ATTACK["max_frob_single_change"] + 1e-9


def test_xgboost_booster_file_and_coffea_wrapper(toy, tmp_path):
    xgboost = pytest.importorskip("xgboost")
    X, y = toy
    clf = xgboost.XGBClassifier(n_estimators=10, max_depth=2, random_state=0).fit(X, y)
    clf.get_booster().save_model(str(tmp_path / "bdt.json"))
    ref = clf.predict_proba(X)[:, 1]
    a = as_adapter(load_model(tmp_path / "bdt.json"))
    assert a.n_features == 4
    np.testing.assert_allclose(a.scores(X), ref, rtol=1e-6)
    from coffea.ml_tools import xgboost_wrapper

    class Bdt(xgboost_wrapper):
        def prepare_awkward(self, jets):
            return (jets,), {}

    wrapped = as_adapter(Bdt(str(tmp_path / "bdt.json")))
    np.testing.assert_allclose(wrapped.scores(X), ref, rtol=1e-6)
    hard = xgboost.train({"objective": "multi:softmax", "num_class": 3},
                         xgboost.DMatrix(X, label=np.digitize(X[:, 0], [-0.5, 0.5])), 2)  # fmt: skip
    with pytest.raises(InputError, match="objective 'multi:softmax'"):
        as_adapter(hard)


@pytest.mark.parametrize("zipmap", [False, True])
def test_skl2onnx_bdt_is_gradient_free(toy, gbdt, tmp_path, zipmap):
    from skl2onnx import to_onnx

    X, _ = toy
    onx = to_onnx(gbdt, X[:1].astype(np.float32), options={"zipmap": zipmap})
    (tmp_path / "bdt.onnx").write_bytes(onx.SerializeToString())
    a = as_adapter(load_model(tmp_path / "bdt.onnx"))
    np.testing.assert_allclose(a.scores(X), gbdt.predict_proba(X)[:, 1], atol=1e-6)
    g = a.loss_gradient(X[:40], a.predict(X[:40]))
    assert a.gradient_mode == "finite-difference" and a.fd_step == 1e-2 and (g != 0).any()
    with pytest.raises(UnsupportedOnnxGraph, match="TreeEnsembleClassifier"):
        onnx_to_torch(tmp_path / "bdt.onnx")


# ---------------------------------------------------------------------- coffea torch_wrapper
def test_coffea_torch_wrapper_uses_its_torchscript_file(toy, mlp, tmp_path):
    from coffea.ml_tools import torch_wrapper

    X, _ = toy
    m = mlp[0]
    torch.jit.script(m).save(str(tmp_path / "tagger.pt"))

    class Tagger(torch_wrapper):
        def prepare_awkward(self, jets):
            return (jets,), {}

    wrapper = Tagger(str(tmp_path / "tagger.pt"))
    assert model_kind(wrapper) == "torch_wrapper"
    a = as_adapter(wrapper, n_features=4)
    assert type(a) is ModelAdapter
    ta = as_adapter(m, n_features=4)
    np.testing.assert_allclose(a.scores(X), ta.scores(X), atol=1e-7)
    t = ta.predict(X)
    np.testing.assert_allclose(a.loss_gradient(X, t), ta.loss_gradient(X, t), atol=1e-9)


# ---------------------------------------------------------------------- bad models
def test_bad_outputs_are_named(toy):
    X, _ = toy

    class NaNNet(torch.nn.Module):
        def forward(self, x):
            out = torch.sigmoid(x[:, 0])
            return torch.where(x[:, 1] > 1.5, torch.nan, out)

    with pytest.raises(ModelOutputError, match="NaN/inf for"):
        as_adapter(NaNNet(), n_features=4).scores(X)

    class Above(torch.nn.Module):
        advsyst_output = "probability"

        def forward(self, x):
            return 2 * torch.sigmoid(x[:, 0])

    with pytest.raises(ModelOutputError, match=r"outside \[0, 1\]"):
        as_adapter(Above(), n_features=4).scores(X)
    with pytest.raises(ModelOutputError, match="NaN/inf"):
        BlackBoxAdapter(lambda Z: np.full(len(Z), np.nan)).scores(X)
    with pytest.raises(ModelOutputError, match=r"outside \[0, 1\]"):
        BlackBoxAdapter(lambda Z: Z[:, 0] + 5, output="probability").scores(X)
    with pytest.raises(ModelOutputError, match="sum to 1"):
        BlackBoxAdapter(lambda Z: np.full((len(Z), 2), 0.3), output="probability").scores(X)
    with pytest.raises(ModelOutputError, match="shape"):
        BlackBoxAdapter(lambda Z: np.zeros((len(Z), 2, 2))).scores(X)
    with pytest.raises(ModelOutputError, match="outputs for"):
        BlackBoxAdapter(lambda Z: np.zeros(len(Z) + 1)).scores(X)

    class Proba:  # predict_proba out of range: named with the estimator
        n_features_in_ = 4

        def predict_proba(self, Z):
            return np.stack([1 - Z[:, 0], Z[:, 0]], axis=1)

    with pytest.raises(ModelOutputError, match=r"Proba.predict_proba outputs .* outside"):
        as_adapter(Proba()).scores(X)
    with pytest.raises(InputError, match="expects 4 features but the input has 3"):
        as_adapter(Proba()).scores(X[:, :3])


def test_unusable_objects_and_files_are_named(tmp_path):
    with pytest.raises(InputError, match="cannot use a builtins.int as a model"):
        as_adapter(3)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.onnx"):
        load_model(tmp_path / "junk.onnx")
    with pytest.raises(InputError, match="fd_step"):
        BlackBoxAdapter(lambda Z: Z[:, 0], fd_step=0.0)


def test_first_order_attacks_take_gradient_free_adapters(toy, gbdt):
    X, _ = toy
    a = as_adapter(gbdt, n_features=4)
    Xa = fgsm(X[:100], a, epsilon=0.2)
    moved = Xa != X[:100]
    assert moved.any()
    # FGSM moves exactly the entries whose finite-difference sign is nonzero (a fresh
    # adapter calibrates its steps on the same first array, X[:100])
    g = as_adapter(gbdt, n_features=4)
    np.testing.assert_array_equal(moved, g.loss_gradient(X[:100], a.predict(X[:100])) != 0)


@pytest.mark.slow
def test_gradient_free_benchmark_runs(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gradient_free.py"
    spec = importlib.util.spec_from_file_location("gradient_free_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gf.json"
    assert mod.main(["--n", "500", "--iterations", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    by = {(r["model"], r["gradient"]): r for r in rows}
    assert by[("MLP, torch", "autograd")]["rows_per_event_gradient"] == 1
    assert by[("MLP, ONNX", "finite-difference")]["rows_per_event_gradient"] == 60  # 2 d
    assert "| BDT, xgboost |" in capsys.readouterr().out


def test_fgsm_takes_a_gradient_free_model_directly(rng):
    """First-order attacks accept a raw predict_proba model (no hand-made adapter): the step
    follows the analytic gradient sign of a logistic model."""
    w, b = np.array([1.5, -2.0, 0.5]), 0.3

    class Logistic:
        def predict_proba(self, X):
            p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
            return np.stack([1.0 - p, p], axis=1)

    X = rng.normal(size=(40, 3))
    res = fgsm(X, Logistic(), epsilon=0.1)
    X_adv = res.X_adv if hasattr(res, "X_adv") else res
    t = (X @ w + b > 0).astype(np.int64)  # the clean prediction is the target
    p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
    expected = X + 0.1 * np.sign((p - t)[:, None] * w[None, :])
    np.testing.assert_allclose(X_adv, expected, atol=1e-12)
