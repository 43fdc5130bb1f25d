"""The attack on a dask.distributed LocalCluster, with and without a GPU resource."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advsyst.attacks import ConservAttack
from advsyst.distributed import gpu_workers, submit_attack
from advsyst.errors import ConfigError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 3))
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.tensor([[2.0, -1.0, 0.5]])
        m[0].bias.zero_()
    return X, torch.jit.script(m.eval())


CFG = {
    "min_change": 0.01,
    "step": 0.02,
    "num_bins": 20,
    "n_iterations": 3,
    "max_jsd": 0.03,
    "max_dfn": 0.03,
}


@pytest.mark.parametrize("resources", [None, {"GPU": 1}])
def test_submit_attack_matches_local_run(toy, resources):
    X, model = toy
    kw = {"resources": resources} if resources else {}
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None, **kw
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert bool(gpu_workers(client)) == bool(resources)
        res = submit_attack(client, X, model, CFG).result(timeout=300)
    local = ConservAttack(CFG, progress=False).run(X, model)
    np.testing.assert_array_equal(res.X_adv, local.X_adv)
    assert res.metrics["jsd_max"] <= 0.03 + 1e-9 and res.metrics["dfn"] <= 0.03 + 1e-9
    assert res.fooling_ratio > 0
    assert res.provenance["worker_device"] == "cpu"  # no CUDA here: falls back to the CPU


def test_bad_config_is_rejected_before_submission(toy):
    X, model = toy

    class NoClient:
        def scheduler_info(self):
            raise AssertionError("must not be reached")

    with pytest.raises(ConfigError, match="unknown"):
        submit_attack(NoClient(), X, model, {"nonsense": 1})
