"""Compiled-code cache of the attack kernels: outside the sources, per user and version, and
locked while a process compiles.

numba's ``cache=True`` writes next to the module (``__pycache__``) by default.  Several
processes compiling the same kernels at once there (Dask workers on one node, a batch of
jobs sharing an installation) have left a cache behind that crashed every later run.  Here:

* :func:`njit` is ``numba.njit`` with the cache placed in :func:`cache_dir`, a directory
  per user and per (advsyst, numba, Python) version, outside the installed sources.  Only
  advsyst's kernels use it; numba's global setting (``NUMBA_CACHE_DIR``) is left as it was.
* :func:`call` runs a kernel; a call whose argument types this process has not run before
  (the call that compiles, or loads the compiled code from the cache) holds an exclusive
  file lock in that directory, so at most one process reads or writes the cache at a time.
  Later calls with the same types take no lock.

Where the cache lives: ``$ADVSYST_NUMBA_CACHE`` if set, else ``$NUMBA_CACHE_DIR`` if set,
else ``$XDG_CACHE_HOME/advsyst/numba`` (default ``~/.cache/advsyst/numba``); a versioned
subdirectory of it.  If none is writable, a per-user directory under the system temporary
directory; if that fails too, the kernels are compiled in every process without a cache.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numba
import numpy as np
from filelock import FileLock, Timeout
from numba.core import config as _nb_config

from advsyst import __version__

__all__ = ["CACHE_ENV", "cache_dir", "call", "njit"]

log = logging.getLogger(__name__)

#: environment variable that overrides the cache location (read at import of the kernels)
CACHE_ENV = "ADVSYST_NUMBA_CACHE"

_seen: set[tuple[int, tuple]] = set()
_dir: Path | None | bool = False  # False: not resolved yet; None: no writable directory


def _tag() -> str:
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    return f"advsyst-{__version__}_numba-{numba.__version__}_py{py}"


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def cache_dir() -> Path | None:
    """The directory holding the kernels' compiled code (created), or None if no writable
    location was found (then nothing is cached)."""
    global _dir
    if _dir is not False:
        return _dir  # type: ignore[return-value]
    bases = []
    for env in (CACHE_ENV, "NUMBA_CACHE_DIR"):
        if os.environ.get(env):
            bases.append(Path(os.environ[env]).expanduser())
            break
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        try:
            home_cache = Path(xdg) if xdg else Path.home() / ".cache"
            bases.append(home_cache / "advsyst" / "numba")
        except RuntimeError:  # no home directory
            pass
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    bases.append(Path(tempfile.gettempdir()) / f"advsyst-numba-{uid}")
    _dir = None
    for base in bases:
        path = base / _tag()
        if _writable(path):
            _dir = path
            break
    if _dir is None:
        log.warning(
            "no writable directory for the attack kernels' compiled code (tried %s); "
            "compiling in every process without a cache",
            ", ".join(str(b) for b in bases),
        )
    return _dir


def njit(**options: Any) -> Callable[[Callable], Any]:
    """``numba.njit(**options)`` whose ``cache=True`` writes to :func:`cache_dir`."""

    def deco(fn: Callable) -> Any:
        if not options.get("cache"):
            return numba.njit(**options)(fn)
        where = cache_dir()
        if where is None:
            return numba.njit(**{**options, "cache": False})(fn)
        # numba picks the cache location when the dispatcher is created: point it at our
        # directory for this decoration only
        old = _nb_config.CACHE_DIR
        _nb_config.CACHE_DIR = str(where)
        try:
            return numba.njit(**options)(fn)
        finally:
            _nb_config.CACHE_DIR = old

    return deco


@contextmanager
def _compile_lock():
    where = cache_dir()
    if where is None:
        yield
        return
    lock = FileLock(str(where / "compile.lock"))
    try:
        lock.acquire(timeout=2)
    except Timeout:
        log.info("waiting for another process compiling the attack kernels (lock %s)", lock)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _sig(a: Any) -> Any:
    """What numba dispatches on, cheaply (``numba.typeof`` costs ~1 ms on the kernels'
    argument tuples): dtype, dimensions, layout and writability of arrays, the type of
    scalars (and whether an int needs 64 unsigned bits), element-wise for tuples."""
    if isinstance(a, np.ndarray):
        f = a.flags
        return (a.dtype.str, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
    if isinstance(a, tuple):
        return tuple(_sig(x) for x in a)
    if isinstance(a, int) and not isinstance(a, bool):
        return int, a.bit_length() > 63
    return type(a)


def call(kernel: Any, *args: Any) -> Any:
    """``kernel(*args)``; the first call with these argument types in this process (the one
    that compiles or loads from the cache) holds the cache's file lock."""
    key = (id(kernel), _sig(args))
    if key in _seen:
        return kernel(*args)
    with _compile_lock():
        out = kernel(*args)
    _seen.add(key)
    return out
