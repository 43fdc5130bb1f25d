"""The sharded attack on a LocalCluster of 2 worker *processes*: a worker killed in the middle
of the attack is replaced (its shard rebuilt from its source and the move log) and the result
is still the single-process one; a shard whose source changed cannot be rebuilt."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from advsyst.attacks import ConservAttack

distributed = pytest.importorskip("distributed")

# fresh worker processes load the numba kernels and torch (about 30-50 s on 2 busy cores)
pytestmark = pytest.mark.slow

from advsyst.distributed import ShardLostError, sharded_attack  # noqa: E402
from test_sharded import CFG, _toy  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _killer(at_iteration, at_round, shard=0, before=None):
    done = []

    def cb(ev):
        if not done and ev["iteration"] == at_iteration and ev["round"] == at_round:
            done.append(ev["shards"][shard])
            if before is not None:
                before()
            os.kill(ev["shards"][shard]["pid"], signal.SIGKILL)

    return cb, done


def test_killed_worker_is_replaced_and_result_unchanged(client):
    X, model = _toy()
    cb, killed = _killer(2, 1)
    res = sharded_attack(client, X, model, config=CFG, callback=cb)
    assert killed, "the callback never fired"
    rb = res.provenance["sharded"]["rebuilds"]
    assert len(rb) == 1 and rb[0]["shard"] == 0 and rb[0]["lost_worker"] == killed[0]["worker"]
    assert len(set(res.provenance["sharded"]["devices"])) == 1
    loc = ConservAttack(CFG).run(X, model)
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)
    np.testing.assert_array_equal(res.fooled, loc.fooled)
    assert [h["entries_moved"] for h in res.history] == [h["entries_moved"] for h in loc.history]


def test_killed_worker_mid_iteration_keeps_order_bit_for_bit(client):
    """keep_order with a worker process killed mid-iteration: the rebuilt shard recovers
    the bounds of the iteration's start; the result is the single-process one."""
    from test_keep_order import MID_CFG, NAMES, _sharded_toy

    X, model, w = _sharded_toy()
    kw = {"weights": w, "feature_names": NAMES}
    cb, killed = _killer(2, 2, shard=1)
    res = sharded_attack(client, X, model, config=MID_CFG, callback=cb, **kw)
    assert killed, "the callback never fired"
    assert [r["shard"] for r in res.provenance["sharded"]["rebuilds"]] == [1]
    loc = ConservAttack(MID_CFG).run(X, model, **kw)
    np.testing.assert_array_equal(res.X_adv, loc.X_adv)
    assert res.metrics["keep_order"] == loc.metrics["keep_order"]
    assert res.metrics["keep_order"]["events_out_of_order"] == 0
    assert [h["entries_moved"] for h in res.history] == [h["entries_moved"] for h in loc.history]


def test_shard_that_cannot_be_rebuilt_is_a_clear_error(client, tmp_path):
    X, model = _toy()
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    np.savez(paths[0], X=X[:250])
    np.savez(paths[1], X=X[250:])

    def change_source():
        np.savez(paths[0], X=X[:250] + 1e-6)

    cb, _ = _killer(1, 1, before=change_source)
    with pytest.raises(ShardLostError, match=r"shard 0 cannot be rebuilt: .*a\.npz.* different"):
        sharded_attack(client, [str(p) for p in paths], model, config=CFG, callback=cb)

    cb, _ = _killer(1, 1, before=lambda: paths[0].unlink())
    with pytest.raises(ShardLostError, match=r"a\.npz' does not exist"):
        sharded_attack(client, [str(p) for p in paths], model, config=CFG, callback=cb)


_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
import distributed
from test_sharded import CFG, _toy
from advsyst.distributed import sharded_attack
X, model = _toy()
with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                              dashboard_address=None) as c, distributed.Client(c) as cl:
    sharded_attack(cl, X, model, config=CFG, checkpoint_dir={ck!r},
                   callback=lambda ev: time.sleep(0.3))
"""


def test_resume_after_the_whole_run_is_killed(tmp_path):
    """SIGKILL the process running the attack mid-way, resume from its checkpoint: the
    same X_adv, bit for bit, as an uninterrupted run."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    ck = tmp_path / "ck"
    code = _CHILD.format(tests=str(Path(__file__).parent), ck=str(ck))
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        t0 = time.time()
        while time.time() - t0 < 240:
            if (ck / "state.npz").exists():
                with np.load(ck / "state.npz") as z:
                    meta = json.loads(str(z["meta"]))
                if meta["it"] >= 2 and meta["next_round"] >= 2:
                    break
            assert child.poll() is None, "the attack finished before it could be killed"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    X, model = _toy()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        res = sharded_attack(c, X, model, config=CFG, checkpoint_dir=ck, resume=True)
        full = sharded_attack(c, X, model, config=CFG)
    assert res.provenance["sharded"]["resumed"]
    # continued where it was killed: only the remaining rounds were run
    assert 0 < res.provenance["sharded"]["timing"]["rounds"]
    assert res.provenance["sharded"]["timing"]["rounds"] <= full.provenance["sharded"]["timing"][
        "rounds"
    ] - (meta["next_round"] + 1)
    assert res.history[0]["iteration"] == 1 and len(res.history) == CFG["n_iterations"]
    np.testing.assert_array_equal(res.X_adv, ConservAttack(CFG).run(X, model).X_adv)
