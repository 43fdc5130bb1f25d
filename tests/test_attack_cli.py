"""The `advsyst attack` command contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from _toys import fit_mlp
from advsyst.cli import main
from advsyst.stats import delta_fn, jsd_per_feature


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(800, 4))
    X[:, 1] += 0.5 * X[:, 0]
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Sigmoid()
    )
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy(net(Xt)[:, 0], yt).backward()
        opt.step()
    torch.jit.script(net.eval()).save(str(d / "model.pt"))
    np.savez(d / "data.npz", X=X, y=y, w=np.ones(len(X)))
    (d / "cfg.yaml").write_text(
        "min_change: 0.01\nstep: 0.02\nnum_bins: 20\nn_iterations: 3\nmax_jsd: 0.03\n"
        "max_frob_single_change: 0.03\nprogress: false\n"
    )
    return d, X


def _args(d, out, **over):
    a = {
        "--model": d / "model.pt",
        "--data": d / "data.npz",
        "--config": d / "cfg.yaml",
        "--out": out,
    }
    a.update(over)
    return ["attack"] + [str(t) for kv in a.items() for t in kv]


def test_attack_writes_outputs_within_budget(files, tmp_path):
    d, X = files
    out = tmp_path / "out"
    assert main(_args(d, out)) == 0
    with np.load(out / "adversarial.npz") as z:
        Xa, fooled = z["X_adv"], z["fooled"]
    rep = json.loads((out / "report.json").read_text())
    for key in (
        "fooling_ratio",
        "jsd_mean",
        "jsd_max",
        "dfn",
        "n_events",
        "n_features",
        "seconds",
        "config",
        "versions",
    ):
        assert key in rep
    assert rep["n_events"] == 800 and rep["n_features"] == 4
    assert rep["config"]["max_jsd_single_change"] == 0.03
    j = jsd_per_feature(X, Xa, num_bins=20)
    assert rep["jsd_max"] == pytest.approx(j.max()) and j.max() <= 0.03 + 1e-9
    assert rep["dfn"] == pytest.approx(delta_fn(X, Xa)) and rep["dfn"] <= 0.03 + 1e-9
    assert rep["fooling_ratio"] > 0 and fooled.sum() > 0
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(
    "case, message",
    [
        ("nan", "NaN/inf"),
        ("badkey", "unknown CONSERVAttack config key 'bogus'"),
        ("badmodel", "model.pt"),
        ("width", "features"),
        ("missing", "does not exist"),
    ],
)
def test_bad_inputs_exit_nonzero_and_write_nothing(files, tmp_path, capsys, case, message):
    d, X = files
    over = {}
    if case == "nan":
        Xn = X.copy()
        Xn[3, 1] = np.inf
        np.savez(tmp_path / "nan.npz", X=Xn)
        over["--data"] = tmp_path / "nan.npz"
    elif case == "badkey":
        (tmp_path / "c.yaml").write_text("bogus: 1\n")
        over["--config"] = tmp_path / "c.yaml"
    elif case == "badmodel":
        (tmp_path / "model.pt").write_bytes(b"not a model")
        over["--model"] = tmp_path / "model.pt"
    elif case == "width":
        np.savez(tmp_path / "w.npz", X=X[:, :3])
        over["--data"] = tmp_path / "w.npz"
    elif case == "missing":
        over["--data"] = tmp_path / "nope.npz"
    out = tmp_path / "out"
    assert main(_args(d, out, **over)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_console_entry_point(files, tmp_path):
    d, _ = files
    r = subprocess.run(
        [sys.executable, "-m", "advsyst.cli", *_args(d, tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "report.json").exists()


def test_shipped_example_configs_are_valid_and_run_on_the_donut(tmp_path):
    """examples/configs replay the paper's tables; each loads and runs (2 iterations)."""
    from pathlib import Path

    from advsyst.attacks import ConservAttack
    from advsyst.attacks.cli import load_config
    from advsyst.data import make_donut

    X, y = make_donut(600, seed=1)
    net = fit_mlp(X, y, hidden=16, epochs=200)
    configs = sorted((Path(__file__).parents[1] / "examples" / "configs").glob("*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        cfg = load_config(str(path))
        # a config keeping "pt_*" sorted runs on the donut sorted per event, named pt_1, pt_2
        Xr = -np.sort(-X, axis=1) if cfg.get("keep_order") else X
        attack = ConservAttack(cfg, n_iterations=2, progress=False)
        res = attack.run(Xr, net, feature_names=["pt_1", "pt_2"])
        if cfg.get("keep_order"):
            assert res.metrics["keep_order"]["events_out_of_order"] == 0
        if res.config["budget"] == "cumulative":
            assert res.metrics["jsd_max"] <= res.config["max_jsd_single_change"] + 1e-9
        assert res.metrics["n_events"] == 600


def test_report_has_the_unseen_binning_scan_and_envelopes_by_npz_names(files, tmp_path):
    """report.json: the worst JSD over unseen binnings next to its resolution (checked
    against numpy at that binning), and envelope keys matched to the .npz feature_names."""
    d, X = files
    names = np.array(["pt_a", "pt_b", "eta", "m"])
    np.savez(tmp_path / "named.npz", X=X, feature_names=names)
    (tmp_path / "env.yaml").write_text(
        (d / "cfg.yaml").read_text() + "envelope:\n  'pt_*': {absolute: 0.05}\n"
    )
    out = tmp_path / "out"
    args = _args(d, out, **{"--data": tmp_path / "named.npz", "--config": tmp_path / "env.yaml"})
    assert main([*args, "--scan-bootstrap", "50"]) == 0
    rep = json.loads((out / "report.json").read_text())
    with np.load(out / "adversarial.npz") as z:
        Xa = z["X_adv"]
    assert (np.abs(Xa[:, :2] - X[:, :2]) <= 0.05 + 1e-12).all()
    assert rep["envelope"]["move_over_envelope_quantiles"]["1.0"] <= 1 + 1e-9
    scan = rep["binning_scan"]
    w = scan["worst"]
    assert scan["worst_jsd"] == w["jsd"] and scan["noise_floor_at_worst"] == w["floor"] > 0
    assert 50 <= w["bins"] <= 200 and w["feature_name"] == names[w["feature"]]
    # recompute the worst JSD with numpy at that binning
    j, K_, off = w["feature"], w["bins"], w["offset"]
    lo, hi = X[:, j].min(), X[:, j].max()
    width = (hi - lo) / K_
    edges = lo + (np.arange(K_ + 2) - off) * width if off > 0 else np.linspace(lo, hi, K_ + 1)
    p = np.histogram(X[:, j], edges)[0] / len(X)
    q = np.histogram(Xa[:, j], edges)[0] / len(X)
    m = (p + q) / 2
    kl = lambda a: np.sum(a[a > 0] * np.log2(a[a > 0] / m[a > 0]))  # noqa: E731
    assert w["jsd"] == pytest.approx(np.sqrt(0.5 * kl(p) + 0.5 * kl(q)), abs=1e-9)
