"""evaluate_dataset: a dataset-level variation runs once on all processes together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import advsyst.systematics as S
from advsyst.attacks import ConservAttack
from advsyst.errors import InputError


def _tagger():
    m = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.tensor([[2.0, -1.0, 0.5]])
        m[0].bias.zero_()
    return m


def test_attack_runs_once_on_the_merged_set_and_fills_each_process(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 3))
    procs = np.where(rng.uniform(size=600) < 0.4, "ttbar", "ww")
    w = rng.uniform(0.5, 1.5, 600)
    masks = {"control": X[:, 2] < 0, "signal": X[:, 2] >= 0}
    calls = []
    real_run = ConservAttack.run

    def counting_run(self, X_, *a, **k):
        calls.append(len(X_))
        return real_run(self, X_, *a, **k)

    monkeypatch.setattr(ConservAttack, "run", counting_run)
    opts = {
        "conservattack": {"n_iterations": 2, "progress": False, "max_jsd": 0.05, "max_dfn": 0.05}
    }
    model = _tagger()
    h, out = S.evaluate_dataset(
        X, model, ["conservattack"], options=opts, processes=procs, region_masks=masks, weights=w
    )
    assert calls == [600]  # one attack over all processes
    res = out["ttbar"]["conservattack"].result
    X_adv = np.empty_like(X)
    for p in ("ttbar", "ww"):
        X_adv[procs == p] = out[p]["conservattack"].result.up
    assert res.info["metrics"]["jsd_max"] <= 0.05 + 1e-9
    wts = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64).numpy()
    for p in ("ttbar", "ww"):
        sel = procs == p
        for region, m in masks.items():
            for syst, Z in (("nominal", X), ("conservattackUp", X_adv)):
                score = 1 / (1 + np.exp(-(Z @ wts)))
                expect, _ = np.histogram(score[sel & m], bins=20, range=(0, 1), weights=w[sel & m])
                got = h[{"process": p, "region": region, "systematic": syst}].values()
                np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_too_few_events_in_a_process_region_is_named():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, 3))
    procs = np.array(["a"] * 95 + ["b"] * 5)
    with pytest.raises(InputError, match="process 'b'"):
        S.evaluate_dataset(
            X,
            _tagger(),
            ["noise"],
            options={"noise": {"sigma": 0.1}},
            processes=procs,
            region_masks={"control": X[:, 0] < 0, "signal": X[:, 0] >= 0},
        )
