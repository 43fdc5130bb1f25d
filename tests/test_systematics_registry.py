"""Registry of variations: registration, lookup, validation, detector scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import advsyst.systematics as S
from advsyst.errors import ConfigError, InputError, ModelOutputError

BUILTINS = {"conservattack", "conservattack_detected", "fgsm", "ngm", "noise", "shift"}


@pytest.fixture
def temp_names():
    """Names registered during a test are removed afterwards."""
    names: list[str] = []
    yield names
    for n in names:
        if n in S.available():
            S.unregister(n)


def _shift0(X, model, *, context, amount=1.0):
    up = X.copy()
    up[:, 0] += amount
    return S.VariationResult(up=up, flags={"moved": np.ones(len(X), bool)})


def test_builtins_registered():
    assert BUILTINS <= set(S.available())
    assert S.available() == sorted(S.available())
    for name in BUILTINS:
        assert S.get(name).description


def test_register_decorator_and_function(temp_names):
    temp_names += ["t_dec", "t_fun"]

    @S.register("t_dec", description="decorated")
    def f(X, model, *, context):
        return S.VariationResult(up=X + 1)

    assert S.get("t_dec").func is f
    assert S.get("t_dec").description == "decorated"
    var = S.register_variation("t_fun", _shift0)
    assert var.name == "t_fun" and "t_fun" in S.available()
    X = np.arange(6.0).reshape(3, 2)
    res = var(X, None, amount=2.0)
    np.testing.assert_array_equal(res.up[:, 0], X[:, 0] + 2)
    np.testing.assert_array_equal(res.up[:, 1], X[:, 1])
    assert res.info["variation"] == "t_fun" and res.info["options"] == {"amount": 2.0}
    assert res.flags["moved"].dtype == bool


def test_duplicate_and_overwrite(temp_names):
    temp_names.append("t_dup")
    S.register_variation("t_dup", _shift0)
    with pytest.raises(ConfigError, match="already registered"):
        S.register_variation("t_dup", _shift0)
    S.register_variation("t_dup", lambda X, m, *, context: S.VariationResult(up=X), overwrite=True)
    X = np.ones((2, 2))
    np.testing.assert_array_equal(S.run_variation("t_dup", X, None).up, X)


@pytest.mark.parametrize("bad", ["", "1abc", "with space", "a-b", "nominal", None])
def test_invalid_names(bad):
    with pytest.raises(ConfigError):
        S.register_variation(bad, _shift0)


def test_unknown_name_lists_registered():
    with pytest.raises(ConfigError) as exc:
        S.get("does_not_exist")
    msg = str(exc.value)
    assert "does_not_exist" in msg
    for name in BUILTINS:
        assert name in msg
    with pytest.raises(ConfigError):
        S.unregister("does_not_exist")


def test_unregister(temp_names):
    S.register_variation("t_unreg", _shift0)
    S.unregister("t_unreg")
    assert "t_unreg" not in S.available()


def test_result_validation(temp_names):
    temp_names += ["t_shape", "t_nan", "t_flag", "t_type"]
    S.register_variation("t_shape", lambda X, m, *, context: S.VariationResult(up=X[:, :1]))
    S.register_variation(
        "t_nan", lambda X, m, *, context: S.VariationResult(up=np.full_like(X, np.nan))
    )
    S.register_variation(
        "t_flag",
        lambda X, m, *, context: S.VariationResult(up=X, flags={"f": np.ones(len(X) + 1)}),
    )
    S.register_variation("t_type", lambda X, m, *, context: X)
    X = np.ones((4, 3))
    with pytest.raises(ModelOutputError, match="shape"):
        S.run_variation("t_shape", X, None)
    with pytest.raises(ModelOutputError, match="NaN"):
        S.run_variation("t_nan", X, None)
    with pytest.raises(ModelOutputError, match="flag 'f'"):
        S.run_variation("t_flag", X, None)
    with pytest.raises(ModelOutputError, match="VariationResult"):
        S.run_variation("t_type", X, None)


def test_input_validation(temp_names):
    temp_names.append("t_in")
    S.register_variation("t_in", _shift0)
    with pytest.raises(InputError, match="2-D"):
        S.run_variation("t_in", np.ones(3), None)
    X = np.ones((3, 2))
    X[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        S.run_variation("t_in", X, None)
    ctx = S.VariationContext(weights=np.ones(5))
    with pytest.raises(InputError, match="context.weights has 5"):
        S.run_variation("t_in", np.ones((3, 2)), None, context=ctx)
    with pytest.raises(ConfigError, match="detector_threshold"):
        S.run_variation(
            "t_in", np.ones((3, 2)), None, context=S.VariationContext(detector_threshold=1.5)
        )


def test_detector_scores_torch_and_callable():
    X = np.random.default_rng(0).normal(size=(20, 3))
    det = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        det[0].weight[:] = torch.tensor([[1.0, -1.0, 0.5]])
        det[0].bias[:] = 0.1
    p = S.detector_scores(det, X)
    expect = 1 / (1 + np.exp(-(X @ np.array([1.0, -1.0, 0.5]) + 0.1)))
    np.testing.assert_allclose(p, expect, rtol=1e-5, atol=1e-6)
    p2 = S.detector_scores(lambda Z: Z[:, 0] * 0 + 0.25, X)
    np.testing.assert_array_equal(p2, 0.25)
    with pytest.raises(ModelOutputError, match="outside"):
        S.detector_scores(lambda Z: Z[:, 0] * 0 + 2.0, X)
    with pytest.raises(ModelOutputError, match="shape"):
        S.detector_scores(lambda Z: np.zeros(3), X)
    with pytest.raises(ConfigError):
        S.detector_scores(42, X)
