"""The analyst's own pass-1 feature builder: contract, checks and the coffea wrapper.

A *feature builder* is any callable ``builder(events) -> mapping`` that turns one chunk of
eager (coffea virtual-mode) events into per-jet arrays.  advsyst's two processors
(:class:`~advsyst.processors.JetConstituentProcessor`,
:class:`~advsyst.processors.JetVariablesProcessor`) are such builders; an analysis brings
its own the same way::

    def my_builder(events):
        jets = events.FatJet
        good = (jets.pt > 200) & (abs(jets.eta) < 2.4)
        idx = ak.local_index(jets, axis=1)[good]
        sel = jets[good]
        X = np.column_stack([ak.to_numpy(ak.flatten(sel[v])) for v in ("pt", "mass", "tau32")])
        n = ak.num(idx, axis=1)
        per_jet = lambda a: np.repeat(ak.to_numpy(a), ak.to_numpy(n))
        return {
            "X": X,
            "run": per_jet(events.run),
            "luminosityBlock": per_jet(events.luminosityBlock),
            "event": per_jet(events.event),
            "jet_index": ak.to_numpy(ak.flatten(idx)),
        }
    my_builder.feature_names = ["pt", "mass", "tau32"]  # optional

Contract (checked on every chunk; each violation raises
:class:`~advsyst.errors.InputError` naming the builder)
------------------------------------------------------------------------------------
Required keys, ``n`` = number of selected jets in the chunk (0 is allowed):

``X``                 ``(n, d)`` finite floats: the tagger's inputs; ``d`` the same in
                      every chunk (and ``len(builder.feature_names)`` when it has them);
``run``, ``luminosityBlock``, ``event``
                      ``(n,)`` non-negative integers, the jet's event (every jet's event
                      must be one of the chunk's events);
``jet_index``         ``(n,)`` non-negative integers, the jet's index in its event's full
                      collection before any selection (``ak.local_index(jets, axis=1)``).

Optional keys:

``y``                 ``(n,)`` integer labels; default ``metadata["label"]`` of the
                      dataset, else -1 (unknown).  Labels never come from a branch.
``w``                 ``(n,)`` finite per-jet event weights *before* normalisation
                      (signs kept); default the event's ``genWeight`` for simulation and
                      1 for collision data.  :func:`advsyst.workflows.twopass.run_pass1`
                      then multiplies simulation by ``xsec * lumi / sum(genWeight)``.
``region_<name>``     ``(n,)`` booleans, e.g. ``region_CR`` (the attack's control region).
``movable``           ``(n, d)`` booleans, False = the variations never move this entry
                      (padded particle slots: ``ParticleLayout.movable``); it becomes
                      ``VariationContext.movable`` in ``build_varied_scores``.
anything else         ``(n,)`` or ``(n, k)`` finite numbers, carried along (``pt``, ...).

NumPy arrays and flat awkward arrays are accepted.  The wrapper adds ``dataset`` (the
fileset key) and, when the builder gives none, ``y`` and ``w``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from coffea import processor

from advsyst.errors import InputError

__all__ = [
    "REQUIRED_KEYS",
    "FeatureBuilder",
    "BuilderProcessor",
    "builder_name",
    "check_builder_output",
    "concat_builder_chunks",
]

#: Keys every builder output must have.
REQUIRED_KEYS = ("X", "run", "luminosityBlock", "event", "jet_index")
_INT_KEYS = ("run", "luminosityBlock", "event", "jet_index")
FeatureBuilder = Callable[[Any], Mapping[str, Any]]


def builder_name(builder: Any) -> str:
    """A readable name for error messages."""
    for attr in ("__qualname__", "__name__"):
        name = getattr(builder, attr, None)
        if isinstance(name, str):
            return name
    return type(builder).__name__


def _as_numpy(value: Any, key: str, who: str) -> np.ndarray:
    if type(value).__module__.split(".")[0] == "awkward":
        import awkward as ak

        try:
            value = ak.to_numpy(value)
        except Exception as exc:  # jagged, option types, records
            raise InputError(
                f"feature builder {who!r}: {key!r} is not a flat or regular array "
                f"({type(value).__name__} {getattr(value, 'type', '')}); give one entry per jet"
            ) from exc
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise InputError(f"feature builder {who!r}: {key!r} is not an array ({exc})") from exc
    if arr.dtype == object:
        raise InputError(f"feature builder {who!r}: {key!r} is not numeric (dtype object)")
    return arr


def check_builder_output(
    out: Any,
    who: str,
    *,
    feature_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Validate one chunk's builder output against the contract (module docstring).

    Returns the arrays as NumPy with canonical dtypes (``X``/``w`` float64, keys and ``y``
    int64 / uint64 for ``event``, ``region_*`` bool).

    Raises
    ------
    InputError
        Not a mapping, a required key missing, wrong shapes or dtypes, NaN/inf, negative
        keys; the message names the builder and the key.
    """
    if not isinstance(out, Mapping):
        raise InputError(
            f"feature builder {who!r} returned {type(out).__name__}; expected a mapping "
            f"with at least {list(REQUIRED_KEYS)}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in out]
    if missing:
        raise InputError(
            f"feature builder {who!r}: missing keys {missing} (returned {sorted(map(str, out))});"
            f" required: {list(REQUIRED_KEYS)}"
        )
    X = _as_numpy(out["X"], "X", who)
    if X.ndim != 2:
        raise InputError(f"feature builder {who!r}: X has shape {X.shape}, expected (n_jets, d)")
    if not np.issubdtype(X.dtype, np.number) and X.dtype != np.bool_:
        raise InputError(f"feature builder {who!r}: X has dtype {X.dtype}, expected numbers")
    X = X.astype(np.float64)
    n, d = X.shape
    if feature_names is not None and len(feature_names) != d:
        raise InputError(
            f"feature builder {who!r}: X has {d} columns but {len(feature_names)} feature_names"
        )
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(
            f"feature builder {who!r}: X has {int(bad.sum())} NaN/inf values "
            f"(first at jet {int(i)}, feature {int(j)})"
        )
    result: dict[str, np.ndarray] = {"X": X}
    for key, value in out.items():
        key = str(key)
        if key == "X":
            continue
        if key == "dataset":
            raise InputError(
                f"feature builder {who!r}: do not return 'dataset'; it is the fileset key"
            )
        a = _as_numpy(value, key, who)
        if a.ndim not in (1, 2) or len(a) != n:
            expect = f"({n},)" if key in (*_INT_KEYS, "y", "w") else f"({n},) or ({n}, k)"
            raise InputError(
                f"feature builder {who!r}: {key!r} has shape {a.shape}, expected {expect} "
                f"(one entry per jet of X)"
            )
        if key in (*_INT_KEYS, "y", "w") and a.ndim != 1:
            raise InputError(
                f"feature builder {who!r}: {key!r} has shape {a.shape}, expected ({n},)"
            )
        if key == "movable" and (a.dtype != np.bool_ or a.shape != X.shape):
            raise InputError(
                f"feature builder {who!r}: 'movable' has dtype {a.dtype} and shape {a.shape}, "
                f"expected bool {X.shape} (one flag per entry of X)"
            )
        if key.startswith("region_"):
            if a.dtype != np.bool_:
                raise InputError(
                    f"feature builder {who!r}: {key!r} has dtype {a.dtype}, expected bool"
                )
            result[key] = a
            continue
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise InputError(f"feature builder {who!r}: {key!r} has dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise InputError(
                f"feature builder {who!r}: {key!r} has {int((~np.isfinite(a)).sum())} NaN/inf"
            )
        if key in (*_INT_KEYS, "y"):
            if not np.issubdtype(a.dtype, np.integer) and not (
                np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a))
            ):
                raise InputError(
                    f"feature builder {who!r}: {key!r} must hold integers, got dtype {a.dtype}"
                )
            if key in _INT_KEYS and a.size and a.min() < 0:
                raise InputError(
                    f"feature builder {who!r}: {key!r} has negative entries (min {a.min()})"
                )
            a = a.astype(np.uint64 if key == "event" else np.int64)
        elif key == "w":
            a = a.astype(np.float64)
        result[key] = a
    return result


_EVKEY = np.dtype([("r", ">u8"), ("l", ">u8"), ("e", ">u8")])  # bytes order = key order


def _pack(run: np.ndarray, lumi: np.ndarray, event: np.ndarray) -> np.ndarray:
    rec = np.empty(len(event), dtype=_EVKEY)
    rec["r"], rec["l"], rec["e"] = run, lumi, event
    return rec.view(f"S{_EVKEY.itemsize}")


def _event_rows(events: Any, jets: Mapping[str, np.ndarray], who: str) -> np.ndarray:
    """Row in ``events`` of each jet's (run, luminosityBlock, event)."""
    import awkward as ak

    fields = set(events.fields)
    ev = np.asarray(ak.to_numpy(events["event"]), dtype=np.uint64)
    rl = [
        np.asarray(ak.to_numpy(events[k]), dtype=np.uint64)
        if k in fields
        else np.zeros(len(ev), dtype=np.uint64)
        for k in ("run", "luminosityBlock")
    ]
    ekeys = _pack(rl[0], rl[1], ev)
    jkeys = _pack(
        jets["run"].astype(np.uint64),
        jets["luminosityBlock"].astype(np.uint64),
        jets["event"].astype(np.uint64),
    )
    order = np.argsort(ekeys, kind="stable")
    pos = np.searchsorted(ekeys[order], jkeys)
    pos_c = np.minimum(pos, max(len(ev) - 1, 0))
    ok = (pos < len(ev)) & (ekeys[order][pos_c] == jkeys) if len(ev) else pos < 0
    if not np.all(ok):
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(
            f"feature builder {who!r}: jet {i} has (run, luminosityBlock, event) = "
            f"({int(jets['run'][i])}, {int(jets['luminosityBlock'][i])}, "
            f"{int(jets['event'][i])}), not an event of this chunk"
        )
    return order[pos_c]


class BuilderProcessor(processor.ProcessorABC):
    """coffea processor (virtual/eager mode) around a feature builder.

    ``process`` returns ``{"chunks": {(dataset, filename, entrystart): arrays}}`` so that
    chunks go back in file order whatever executor ran them
    (:func:`concat_builder_chunks`).
    """

    def __init__(self, builder: FeatureBuilder, name: str | None = None) -> None:
        if not callable(builder):
            raise InputError(f"feature builder {builder!r} is not callable")
        self.builder = builder
        self.name = name or builder_name(builder)

    @property
    def feature_names(self) -> list[str] | None:
        names = getattr(self.builder, "feature_names", None)
        try:
            return None if names is None else [str(s) for s in names]
        except Exception:  # a property that needs data first
            return None

    def process(self, events: Any) -> dict[str, Any]:
        import awkward as ak

        meta = dict(events.metadata or {})
        fields = set(events.fields)
        if meta.get("is_data") is not None:
            is_data = bool(meta["is_data"])
        else:
            is_data = "genWeight" not in fields
        out = check_builder_output(
            self.builder(events), self.name, feature_names=self.feature_names
        )
        n = len(out["X"])
        if "y" not in out:
            label = meta.get("label")
            out["y"] = np.full(n, -1 if label is None else int(label), dtype=np.int64)
        if "w" not in out:
            if is_data or "genWeight" not in fields:
                out["w"] = np.ones(n)
            else:
                if "event" not in fields:
                    raise InputError(f"feature builder {self.name!r}: events have no 'event'")
                rows = _event_rows(events, out, self.name)
                gw = np.asarray(ak.to_numpy(events["genWeight"]), dtype=np.float64)
                out["w"] = gw[rows]
        key = (
            str(meta.get("dataset", "")),
            str(meta.get("filename", "")),
            int(meta.get("entrystart", 0) or 0),
        )
        return {"chunks": {key: out}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def concat_builder_chunks(
    order: Sequence[tuple[str, Sequence[str]]],
    chunks: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]],
    who: str,
) -> dict[str, np.ndarray]:
    """Concatenate per-chunk builder outputs in fileset order; check chunks agree.

    ``order`` is ``[(dataset, [files...]), ...]``.  Raises :class:`InputError` naming the
    builder when chunks have different keys, column counts or dtypes kinds.
    """
    file_rank = {(ds, f): i for ds, files in order for i, f in enumerate(files)}
    ds_rank = {ds: i for i, (ds, _) in enumerate(order)}
    keys = sorted(
        chunks,
        key=lambda k: (ds_rank.get(k[0], len(ds_rank)), file_rank.get((k[0], k[1]), 0), k[2]),
    )
    if not keys:
        return {}
    first = chunks[keys[0]]
    names = set(first)
    for k in keys[1:]:
        c = chunks[k]
        if set(c) != names:
            raise InputError(
                f"feature builder {who!r}: chunk {k[1]}@{k[2]} returned keys {sorted(c)}, "
                f"another chunk {sorted(names)}; return the same keys for every chunk"
            )
        for name in names:
            if np.shape(c[name])[1:] != np.shape(first[name])[1:]:
                raise InputError(
                    f"feature builder {who!r}: {name!r} has shape {np.shape(c[name])} in chunk "
                    f"{k[1]}@{k[2]} but {np.shape(first[name])} in another"
                )
    out = {name: np.concatenate([np.asarray(chunks[k][name]) for k in keys]) for name in names}
    out["dataset"] = np.array(
        [k[0] for k in keys for _ in range(len(chunks[k]["X"]))], dtype=str
    ).reshape(-1)
    if out["dataset"].size == 0:
        out["dataset"] = np.zeros(0, dtype="<U1")
    return out
