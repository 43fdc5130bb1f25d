"""The sharded attack from the command line: same files as ``advsyst attack``, same X_adv."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advsyst.cli import main as advsyst_main

distributed = pytest.importorskip("distributed")

from advsyst.distributed.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("shcli")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 4))
    X[:, 1] += 0.5 * X[:, 0]
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        net[0].weight[:] = torch.tensor([[1.5, 0.0, 0.0, -1.5]])
        net[0].bias.zero_()
    torch.jit.script(net.eval()).save(str(d / "model.pt"))
    np.savez(d / "data.npz", X=X, y=y)
    (d / "cfg.yaml").write_text(
        "min_change: 0.01\nstep: 0.02\nnum_bins: 20\nn_iterations: 2\nmax_jsd: 0.03\n"
        "max_frob_single_change: 0.03\nblock_size: 100\nprogress: false\n"
    )
    return d


def _args(d, out):
    return ["--model", str(d / "model.pt"), "--data", str(d / "data.npz"),
            "--config", str(d / "cfg.yaml"), "--out", str(out)]  # fmt: skip


def test_cli_on_existing_scheduler_matches_advsyst_attack(files, tmp_path):
    d = files
    assert advsyst_main(["attack", *_args(d, tmp_path / "single")]) == 0
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        addr = cluster.scheduler_address
        # `advsyst attack` itself dispatches to the sharded attack
        rc = advsyst_main(["attack", *_args(d, tmp_path / "sh"), "--scheduler", addr,
                           "--checkpoint", str(tmp_path / "ck")])  # fmt: skip
        assert rc == 0
        # resuming a finished run redoes nothing and writes the same result
        rc = main([*_args(d, tmp_path / "sh2"), "--scheduler", addr,
                   "--resume", str(tmp_path / "ck")])  # fmt: skip
        assert rc == 0
    with np.load(tmp_path / "single" / "adversarial.npz") as a:
        ref = a["X_adv"]
    for out in ("sh", "sh2"):
        with np.load(tmp_path / out / "adversarial.npz") as b:
            np.testing.assert_array_equal(b["X_adv"], ref)
        rep = json.loads((tmp_path / out / "report.json").read_text())
        assert rep["sharded"]["n_shards"] == 2
        assert rep["jsd_max"] <= 0.03 + 1e-12 and rep["dfn"] <= 0.03 + 1e-12
        assert (tmp_path / out / "attack_result.npz").exists()
        # the same validation scan over unseen binnings and signed-slot counts as advsyst attack
        single = json.loads((tmp_path / "single" / "report.json").read_text())
        assert rep["binning_scan"] is not None
        assert rep["binning_scan"] == single["binning_scan"]
        assert rep["negative_slots"] == single["negative_slots"]
    assert json.loads((tmp_path / "sh2" / "report.json").read_text())["sharded"]["resumed"]


def test_cli_errors_are_clear(files, tmp_path, capsys):
    d = files
    rc = main([*_args(d, tmp_path / "o"), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert rc == 2 and "either --scheduler" in capsys.readouterr().err
    rc = main([*_args(d, tmp_path / "o"), "--resume", str(tmp_path / "a"),
               "--checkpoint", str(tmp_path / "b")])  # fmt: skip
    assert rc == 2 and "different directories" in capsys.readouterr().err
    (tmp_path / "rs.yaml").write_text("method: exact\n")
    rc = main(["--model", str(d / "model.pt"), "--data", str(d / "data.npz"), "--config",
               str(tmp_path / "rs.yaml"), "--out", str(tmp_path / "o"), "--workers", "1"])  # fmt: skip
    assert rc == 2 and "use method='fast' with the same budget" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_local_cluster_of_worker_processes(files, tmp_path):
    d = files
    assert main([*_args(d, tmp_path / "w"), "--workers", "2"]) == 0
    assert advsyst_main(["attack", *_args(d, tmp_path / "single")]) == 0
    with (
        np.load(tmp_path / "w" / "adversarial.npz") as a,
        np.load(tmp_path / "single" / "adversarial.npz") as b,
    ):
        np.testing.assert_array_equal(a["X_adv"], b["X_adv"])
