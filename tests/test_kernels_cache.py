"""The kernels' compiled-code cache: outside the sources, where ADVSYST_NUMBA_CACHE says,
locked while a process compiles; several processes compiling at once leave a cache every
later process can use (it used to crash the exact path with a segmentation fault)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from advsyst.attacks import _jit

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[_jit.CACHE_ENV] = str(cache)
    env.pop("NUMBA_CACHE_DIR", None)
    return env


def test_the_cache_lives_where_the_environment_says(tmp_path):
    code = (
        "from advsyst.attacks import _kernels as K, _disco, _jit\n"
        "print(_jit.cache_dir())\n"
        "print(K.exact_pass._cache._cache_path)\n"
        "print(_disco._pass_kernel._cache._cache_path)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    where, k_path, d_path = r.stdout.split()
    assert Path(where).parent == tmp_path
    assert "advsyst-" in Path(where).name and "numba-" in Path(where).name  # per version
    for p in (k_path, d_path):
        assert Path(p).is_relative_to(where)
        assert not Path(p).is_relative_to(ROOT / "src")


def test_a_first_call_holds_the_lock_and_later_calls_do_not():
    where = _jit.cache_dir()
    assert where is not None

    def probe(expect_locked):
        other = FileLock(str(where / "compile.lock"))
        if expect_locked:
            with pytest.raises(Timeout):
                other.acquire(timeout=0)
        else:
            other.acquire(timeout=0)
            other.release()
        return 1

    assert _jit.call(probe, True) == 1  # new argument types: locked
    assert _jit.call(probe, False) == 1  # same types again: no lock


_RUN = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from advsyst.attacks import ConservAttack

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    for spec in sys.argv[1:]:
        method, budget, disco = spec.split(",")
        r = ConservAttack(min_change=0.01, step=0.05, num_bins=10, n_iterations=1,
                          max_jsd=0.02, max_dfn=0.02, method=method, budget=budget,
                          use_disco=disco == "1", disco_subsample=40, progress=False).run(X, m)
        print(spec, r.fooling_ratio)
    """
)

_PATHS = [f"{m},{b},{d}" for m in ("fast", "exact") for b in ("cumulative", "per_change")
          for d in ("0", "1")]  # fmt: skip


@pytest.mark.slow
def test_concurrent_first_compilation_leaves_a_usable_cache(tmp_path):
    """Four processes compile on an empty cache at once (every path between them), then a
    new process runs every kernel path from that cache: all exit 0."""
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    cache = tmp_path / "cache"
    env = _env(cache)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *_PATHS[k::4]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=1800)
        assert p.returncode == 0, err[-3000:]
    r = subprocess.run(
        [sys.executable, str(script), *_PATHS], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    assert len(r.stdout.splitlines()) == len(_PATHS)
    assert list(cache.rglob("*.nbi"))  # the cache was written where it was told
