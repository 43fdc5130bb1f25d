"""Loading tabular feature files (CSV, parquet, npz) with labels, weights and missing values.

Missing entries are NaN cells or cells equal to a sentinel (e.g. ``-999.0`` in the public
ATLAS Higgs challenge CSV).  ``sentinel_fill`` decides what happens to them:

* ``"median"`` / ``"mean"``: replace by the column statistic over the present entries;
* ``"zero"``: replace by 0;
* ``"nan"``: replace by NaN (for models that handle NaN);
* ``"keep"``: leave the values as they are (the sentinel stays in the data);
* ``"drop"``: drop every row with a missing entry.

``TabularData.missing`` records where entries were missing (before filling), so an attack
can keep default-valued features fixed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advsyst.errors import InputError, MissingBranchError, UnreadableFileError

__all__ = ["TabularData", "load_table", "SENTINEL_FILLS", "LABEL_CANDIDATES", "DEFAULT_EXCLUDE"]

SENTINEL_FILLS = ("median", "mean", "zero", "nan", "keep", "drop")
#: Column names tried, in order, when ``label`` is not given (CSV / parquet).
LABEL_CANDIDATES = ("label", "Label", "y", "target", "is_signal")
#: Columns never used as features unless asked for explicitly.
DEFAULT_EXCLUDE = ("EventId", "KaggleSet", "KaggleWeight", "Weight", "weight", "w")
_STRING_LABELS = {"s": 1, "b": 0, "signal": 1, "background": 0, "sig": 1, "bkg": 0}


@dataclass
class TabularData:
    """Features, labels and weights read from a table.

    Attributes
    ----------
    X : np.ndarray, shape (n, d), float64
    y : np.ndarray, shape (n,), int64, or None
    w : np.ndarray, shape (n,), float64, or None
    feature_names : list of str
    missing : np.ndarray, shape (n, d), bool, or None
        Where entries were missing (NaN or sentinel) before filling; None if none were.
    source : str
        The file read.
    """

    X: np.ndarray
    y: np.ndarray | None
    w: np.ndarray | None
    feature_names: list[str]
    missing: np.ndarray | None = None
    source: str = ""
    label_column: str | None = None
    weight_column: str | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.X.shape[0])


def _labels(values: np.ndarray, name: str, source: str) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise InputError(f"{source}: label column {name!r} has non-integer values")
        return values.astype(np.int64)
    strings = np.asarray(values).astype(str)
    uniq = set(np.unique(strings).tolist())
    if uniq <= set(_STRING_LABELS):
        return np.array([_STRING_LABELS[s] for s in strings], dtype=np.int64)
    raise InputError(
        f"{source}: cannot interpret label column {name!r} with values {sorted(uniq)[:5]}; "
        "use integers or s/b, signal/background"
    )


def _read_columns(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt") or path.name.lower().endswith(".csv.gz"):
            import pandas as pd

            df = pd.read_csv(path)
            return {c: df[c].to_numpy() for c in df.columns}, [str(c) for c in df.columns]
        if suffix in (".parquet", ".pq"):
            import pandas as pd

            df = pd.read_parquet(path)
            return {c: df[c].to_numpy() for c in df.columns}, [str(c) for c in df.columns]
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise UnreadableFileError(f"{path}: cannot read table ({exc})") from exc
    raise InputError(f"{path}: unsupported table format {suffix!r} (use .csv, .parquet, .npz)")


def _read_npz(
    path: Path,
) -> tuple[np.ndarray, list[str], np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise UnreadableFileError(f"{path}: cannot read npz ({exc})") from exc
    if "X" not in data:
        raise MissingBranchError(f"{path}: npz file has no 'X' array (keys: {sorted(data)})")
    X = np.asarray(data["X"])
    if X.ndim != 2:
        raise InputError(f"{path}: 'X' must be 2-D, got shape {X.shape}")
    names = (
        [str(s) for s in data["feature_names"]]
        if "feature_names" in data
        else [f"x{i}" for i in range(X.shape[1])]
    )
    if len(names) != X.shape[1]:
        raise InputError(f"{path}: {len(names)} feature_names for {X.shape[1]} columns")
    extra = {k: v for k, v in data.items() if k not in ("X", "y", "w", "feature_names")}
    return X, names, data.get("y"), data.get("w"), extra


def load_table(
    path: str | os.PathLike[str],
    *,
    features: Sequence[str] | None = None,
    label: str | None = None,
    weight: str | None = None,
    sentinel: float | None = None,
    sentinel_fill: str = "median",
    exclude: Sequence[str] = (),
) -> TabularData:
    """Read features, labels and weights from a CSV, parquet or npz file.

    Parameters
    ----------
    path : path-like
        ``.csv`` (also ``.csv.gz``), ``.parquet`` or ``.npz``.  An npz file holds ``X``
        (n, d), optional ``y``, ``w`` and ``feature_names``.
    features : sequence of str, optional
        Columns to use, in this order.  Default: every numeric column except the label,
        the weight, ``exclude`` and :data:`DEFAULT_EXCLUDE`.
    label : str, optional
        Label column (CSV/parquet).  Default: the first of :data:`LABEL_CANDIDATES`
        present, else no labels.  String labels ``s``/``b`` (ATLAS Higgs challenge) and
        ``signal``/``background`` map to 1/0.
    weight : str, optional
        Per-event weight column (CSV/parquet).  npz files use their ``w`` array.
    sentinel : float, optional
        Value that marks a missing entry (NaN cells are always missing).
    sentinel_fill : str
        One of :data:`SENTINEL_FILLS` (see the module docstring).
    exclude : sequence of str
        Further columns never used as features by default.

    Returns
    -------
    TabularData
    """
    path = Path(path)
    if sentinel_fill not in SENTINEL_FILLS:
        raise InputError(f"sentinel_fill must be one of {SENTINEL_FILLS}, got {sentinel_fill!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    source = str(path)
    extra: dict[str, np.ndarray] = {}
    label_col: str | None = None
    weight_col: str | None = None
    if path.suffix.lower() == ".npz":
        X_all, names, y, w, extra = _read_npz(path)
        if features is not None:
            missing = [f for f in features if f not in names]
            if missing:
                raise MissingBranchError(f"{path}: features {missing} not in {names}")
            idx = [names.index(f) for f in features]
            X_all, names = X_all[:, idx], list(features)
        try:
            X = np.asarray(X_all, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: 'X' is not numeric ({exc})") from exc
        y = None if y is None else _labels(np.asarray(y), "y", source)
        w = None if w is None else np.asarray(w, dtype=np.float64)
        label_col = "y" if y is not None else None
        weight_col = "w" if w is not None else None
    else:
        cols, order = _read_columns(path)
        if label is None:
            label_col = next((c for c in LABEL_CANDIDATES if c in cols), None)
        else:
            label_col = label
        weight_col = weight
        for what, col in (("label", label_col), ("weight", weight_col)):
            if col is not None and col not in cols:
                raise MissingBranchError(f"{path}: {what} column {col!r} not found in {order}")
        if features is None:
            skip = {label_col, weight_col, *exclude, *DEFAULT_EXCLUDE}
            names = [c for c in order if c not in skip and np.asarray(cols[c]).dtype.kind in "iufb"]
            if not names:
                raise InputError(f"{path}: no numeric feature columns")
        else:
            missing = [f for f in features if f not in cols]
            if missing:
                raise MissingBranchError(f"{path}: feature columns {missing} not found in {order}")
            names = list(features)
        try:
            X = np.column_stack([np.asarray(cols[c], dtype=np.float64) for c in names])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: feature columns must be numeric ({exc})") from exc
        y = None if label_col is None else _labels(np.asarray(cols[label_col]), label_col, source)
        w = None if weight_col is None else np.asarray(cols[weight_col], dtype=np.float64)

    if np.isinf(X).any():
        bad = [names[j] for j in np.nonzero(np.isinf(X).any(axis=0))[0]]
        raise InputError(f"{path}: infinite values in columns {bad}")
    if w is not None and (w.shape != (X.shape[0],) or not np.all(np.isfinite(w))):
        raise InputError(f"{path}: weights must be finite with one value per row")
    if y is not None and y.shape != (X.shape[0],):
        raise InputError(f"{path}: {y.shape[0]} labels for {X.shape[0]} rows")

    miss = np.isnan(X)
    if sentinel is not None:
        miss |= X == sentinel
    missing_mask = miss if miss.any() else None
    if missing_mask is not None and sentinel_fill != "keep":
        X = X.copy()
        if sentinel_fill == "drop":
            keep = ~miss.any(axis=1)
            X, missing_mask = X[keep], None
            y = None if y is None else y[keep]
            w = None if w is None else w[keep]
            extra = {
                k: v[keep] if v.ndim >= 1 and v.shape[0] == keep.size else v
                for k, v in extra.items()
            }
        else:
            for j in np.nonzero(miss.any(axis=0))[0]:
                present = X[~miss[:, j], j]
                if sentinel_fill in ("median", "mean") and present.size == 0:
                    raise InputError(
                        f"{path}: column {names[j]!r} has no present values to take a "
                        f"{sentinel_fill} from"
                    )
                fill = {
                    "median": lambda p=present: float(np.median(p)),
                    "mean": lambda p=present: float(np.mean(p)),
                    "zero": lambda: 0.0,
                    "nan": lambda: float("nan"),
                }[sentinel_fill]()
                X[miss[:, j], j] = fill
    return TabularData(
        X=X,
        y=y,
        w=w,
        feature_names=list(names),
        missing=missing_mask,
        source=source,
        label_column=label_col,
        weight_column=weight_col,
        extra=extra,
    )
