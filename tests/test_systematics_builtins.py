"""Built-in variations wired to the attack engines (skipped only if an engine is missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import advsyst.systematics as S
from advsyst.errors import ConfigError

try:
    import advsyst.attacks as attacks
    from advsyst.attacks import ConservAttack, ConservAttackConfig  # noqa: F401

    _ENGINE_ERR = None
except ImportError as exc:  # pragma: no cover - only before the engine lands
    _ENGINE_ERR = str(exc)
try:
    from advsyst.attacks import first_order

    _FO_ERR = None
except ImportError as exc:  # pragma: no cover
    _FO_ERR = str(exc)

needs_engine = pytest.mark.skipif(
    _ENGINE_ERR is not None, reason=f"advsyst.attacks.ConservAttack missing: {_ENGINE_ERR}"
)
needs_first_order = pytest.mark.skipif(
    _FO_ERR is not None, reason=f"advsyst.attacks.first_order missing: {_FO_ERR}"
)

ATTACK = {"n_iterations": 2, "progress": False, "max_jsd": 0.05, "max_dfn": 0.05}


def tagger() -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.tensor([[2.0, 1.0, 0.0, -0.5]])
        m[0].bias[:] = 0.0
    return m


def scores(X):
    return 1 / (1 + np.exp(-(X @ np.array([2.0, 1.0, 0.0, -0.5]))))


@pytest.fixture
def sample():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    masks = {"control": X[:, 3] < 0, "signal": X[:, 3] >= 0}
    return X, y, masks


def detector(Z):
    """A toy detector: flags events with a large first feature."""
    return (np.abs(Z[:, 0]) > 1.0).astype(float)


@needs_engine
def test_conservattack_and_detected(sample, monkeypatch):
    X, y, masks = sample
    calls = []
    real_run = attacks.ConservAttack.run

    def counting_run(self, *args, **kwargs):
        calls.append(kwargs.get("constraint_mask"))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(attacks.ConservAttack, "run", counting_run)
    ctx = S.VariationContext(y=y, seed=3, detector=detector, detector_threshold=0.5)
    opts = {"conservattack": ATTACK, "conservattack_detected": ATTACK}
    h, out = S.evaluate_variations(
        X,
        tagger(),
        ["conservattack", "conservattack_detected"],
        ctx,
        opts,
        process="p",
        region_masks=masks,
    )
    assert len(calls) == 1  # the detected variant reused the cached result
    res = ctx.extra["conservattack_result"]
    ca, cd = out["conservattack"], out["conservattack_detected"]
    np.testing.assert_array_equal(ca.result.up, res.X_adv)
    np.testing.assert_array_equal(ca.result.flags["fooled"], res.fooled)
    np.testing.assert_allclose(ca.up_score, scores(res.X_adv), atol=1e-6)
    assert ca.result.info["seed"] == 3 and ca.result.info["config"]["seed"] == 3
    assert ca.result.info["metrics"]["jsd_max"] <= 0.05 + 1e-12
    # the fooling ratio over both (disjoint) regions is the engine's fooling ratio
    frs = S.fooling_ratios(ca)
    total = sum(f.fooling_ratio.sum_w_pass for f in frs.values()) / len(X)
    assert total == pytest.approx(res.metrics["fooling_ratio"], abs=1e-12)
    assert total > 0
    # detected events are reverted to nominal, the others keep their adversarial features
    det = detector(res.X_adv) >= 0.5
    np.testing.assert_array_equal(cd.result.flags["detected"], det)
    np.testing.assert_array_equal(cd.result.up[det], X[det])
    np.testing.assert_array_equal(cd.result.up[~det], res.X_adv[~det])
    # corrected FR of the attack == FR of the detector-filtered variation
    for region in masks:
        corr = S.fooling_ratios(ca)[region].corrected
        assert corr.value == pytest.approx(S.fooling_ratios(cd)[region].fooling_ratio.value)
    assert {"conservattackUp", "conservattack_detectedDown"} <= set(h.axes["systematic"])


@needs_engine
def test_conservattack_restrict_to_control_and_errors(sample):
    X, y, masks = sample
    ctx = S.VariationContext(control_mask=masks["control"], seed=1)
    res = S.run_variation(
        "conservattack", X, tagger(), context=ctx, restrict_to_control=True, **ATTACK
    )
    engine = ctx.extra["conservattack_result"]
    np.testing.assert_array_equal(engine.constraint_mask, masks["control"])
    np.testing.assert_array_equal(res.up, engine.X_adv)
    with pytest.raises(ConfigError, match="unknown CONSERVAttack config key 'bogus'"):
        S.run_variation("conservattack", X, tagger(), bogus=1)
    with pytest.raises(ConfigError, match="control_mask"):
        S.run_variation("conservattack", X, tagger(), restrict_to_control=True, **ATTACK)
    with pytest.raises(ConfigError, match="needs context.detector"):
        S.run_variation("conservattack_detected", X, tagger(), **ATTACK)


@needs_engine
def test_cache_not_reused_with_other_options(sample):
    X, _, _ = sample
    ctx = S.VariationContext(seed=0)
    S.run_variation("conservattack", X, tagger(), context=ctx, **ATTACK)
    first = ctx.extra["conservattack_result"]
    S.run_variation("conservattack", X, tagger(), context=ctx, **{**ATTACK, "n_iterations": 1})
    second = ctx.extra["conservattack_result"]
    assert second is not first
    S.run_variation("conservattack", X, tagger(), context=ctx, **{**ATTACK, "n_iterations": 1})
    assert ctx.extra["conservattack_result"] is second


@needs_first_order
def test_first_order_variations(sample):
    X, y, masks = sample
    m = tagger()
    ctx = S.VariationContext(y=y, seed=5)
    opts = {
        "fgsm": {"epsilon": 0.2},
        "ngm": {"epsilon": 0.3, "use_labels": True},
        "noise": {"sigma": 0.1},
        "shift": {"epsilon": 0.05},
    }
    h, out = S.evaluate_variations(X, m, list(opts), ctx, opts, process="p", region_masks=masks)
    np.testing.assert_array_equal(out["fgsm"].result.up, first_order.fgsm(X, m, epsilon=0.2))
    np.testing.assert_array_equal(out["ngm"].result.up, first_order.ngm(X, m, y, epsilon=0.3))
    np.testing.assert_array_equal(
        out["noise"].result.up, first_order.gaussian_noise(X, sigma=0.1, seed=5)
    )
    np.testing.assert_array_equal(
        out["shift"].result.up, first_order.systematic_shift(X, epsilon=0.05, direction=1)
    )
    np.testing.assert_array_equal(
        out["shift"].result.down, first_order.systematic_shift(X, epsilon=0.05, direction=-1)
    )
    assert out["shift"].down_pred is not None and out["fgsm"].down_mirrored
    # FGSM away from the prediction flips some events; its scores are the model's
    np.testing.assert_allclose(out["fgsm"].up_score, scores(out["fgsm"].result.up), atol=1e-6)
    assert out["fgsm"].flipped.any()
    with pytest.raises(ConfigError, match="use_labels"):
        S.run_variation("fgsm", X, m, use_labels=True)


@needs_engine
@needs_first_order
@pytest.mark.parametrize("name", ["conservattack", "fgsm", "ngm", "noise", "shift"])
def test_context_movable_mask_is_respected(sample, name):
    """``context.movable`` (e.g. padded particle slots) reaches every built-in engine:
    masked entries keep their exact value, the others still move."""
    from advsyst.errors import InputError

    X, y, _ = sample
    movable = np.random.default_rng(3).uniform(size=X.shape) < 0.6
    movable[:, 0] = True  # the feature the tagger leans on most stays free
    opts = {
        "conservattack": ATTACK,
        "fgsm": {"epsilon": 0.2},
        "ngm": {"epsilon": 0.3},
        "noise": {"sigma": 0.1},
        "shift": {"epsilon": 0.05},
    }[name]
    ctx = S.VariationContext(y=y, seed=2, movable=movable)
    res = S.run_variation(name, X, tagger(), context=ctx, **opts)
    for arr in (res.up, res.down):
        if arr is None:
            continue
        np.testing.assert_array_equal(arr[~movable], X[~movable])
        assert np.any(arr[movable] != X[movable])
    free = S.run_variation(name, X, tagger(), context=S.VariationContext(y=y, seed=2), **opts)
    assert np.any(free.up[~movable] != X[~movable])  # without the mask they would move
    bad = S.VariationContext(movable=movable[:, :3])
    with pytest.raises(InputError, match="movable"):
        S.run_variation(name, X, tagger(), context=bad, **opts)
