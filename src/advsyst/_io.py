"""Atomic output writing and provenance records.

Every file advsyst writes goes through :func:`atomic_path`: the content is written to a
temporary file in the same directory and renamed into place only once complete, so a
crash never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_savez",
    "versions",
    "provenance",
    "to_jsonable",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Convert NumPy scalars/arrays, paths and dataclass-like objects to JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_savez(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """``np.savez_compressed`` written atomically (``path`` should end in ``.npz``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


def versions() -> dict[str, str]:
    """Versions of Python, advsyst and the scientific stack actually imported."""
    from advsyst import __version__

    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "advsyst": __version__,
    }
    for mod in ("numpy", "torch", "awkward", "uproot", "coffea", "hist", "dask", "pyhf", "numba"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except Exception:  # pragma: no cover - optional at runtime
                continue
        out[mod] = str(getattr(m, "__version__", "unknown"))
    return out


def provenance(config: Any = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A provenance record: configuration, seed, versions and a UTC timestamp."""
    rec: dict[str, Any] = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "config": to_jsonable(config) if config is not None else None,
        "versions": versions(),
        "argv": list(sys.argv),
    }
    rec.update(to_jsonable(extra))
    return rec
