"""The paper's robustness studies as runnable units (``advsyst study NAME``).

Each study reads a feature file (``X``, ``y``, optional ``w`` and ``feature_names``), a
TorchScript tagger where it needs one, and a YAML configuration, and writes into its
output folder:

* ``result.json`` -- every number with its uncertainty, the configuration, the seeds and
  the package versions (:func:`~advsyst._io.provenance`);
* ``<name>.png`` -- the figure the paper shows for the study;
* ``summary.md`` -- a short human-readable summary;
* ``runs/`` -- one result file per run, written atomically and last, so that ``resume=True``
  skips the runs already done.

========================  ===================================================================
``detector``              Section 7 / Fig. 32: R runs; each attacks the detector-training and
                          the test slice, trains a detector, and corrects the fooling ratio of
                          the *other* runs' test adversaries with it.
``training``              Section 7 / Fig. 31: cumulative adversarial training with attack
                          parameters drawn from ranges (Table 15), test attack (Table 16).
``augmentation``          Section 6 / Figs. 10, 30: a reduced training set, augmented with its
                          own adversaries, retrained; clean AUROC before and after.
``greybox``               Section 7: the R x R white-box / grey-box fooling-ratio matrix.
``significance``          Section 8 / Fig. 15, eqs. 6-11: repeated misclassification of clean
                          events over R detector runs.
``efficiency``            Section 8 / Fig. 16: detector clean-event efficiency against the
                          threshold on simulation and on (pseudo-)data, averaged over runs.
``auroc-vs-size``         Section 9 / Fig. 24: detector AUROC against the training size.
========================  ===================================================================

Configuration: a flat table of CONSERVAttack settings (the paper's parameter tables in
``examples/configs/``) is read as ``attack``; otherwise the mapping holds the
:class:`StudyConfig` fields, with ``attack`` (and ``test_attack``, ``attack_ranges``)
nested.  Unknown keys raise :class:`~advsyst.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advsyst._io import (
    atomic_savez,
    atomic_write_json,
    atomic_write_text,
    provenance,
    to_jsonable,
)
from advsyst.attacks.config import ALIASES, ConservAttackConfig
from advsyst.attacks.conservattack import ConservAttack
from advsyst.attacks.metrics import (
    auroc,
    binomial_uncertainty,
    fooling_ratio_with_error,
    weighted_fraction_uncertainty,
)
from advsyst.attacks.model import as_adapter
from advsyst.attacks.result import AttackResult
from advsyst.errors import ConfigError, InputError
from advsyst.workflows import robustness as rb
from advsyst.workflows.detector import DetectorResult, ordered_columns, train_detector

__all__ = [
    "STUDIES",
    "DETECTOR_INPUTS",
    "StudyConfig",
    "StudyResult",
    "run_study",
    "load_study_config",
    "auroc_error",
    "detector_inputs",
    "plot_study",
    "add_arguments",
    "run",
]

log = logging.getLogger(__name__)

STUDIES = (
    "detector",
    "training",
    "augmentation",
    "greybox",
    "significance",
    "efficiency",
    "auroc-vs-size",
)
#: studies that attack a given tagger (the others train their own taggers)
_NEEDS_MODEL = {"detector", "significance", "efficiency", "auroc-vs-size"}
DETECTOR_INPUTS = ("features", "features+score", "features+order", "features+order+score")


# ====================================================================== configuration
@dataclass
class StudyConfig:
    """Settings of a study (every field lands in ``result.json``).

    Attributes
    ----------
    attack
        CONSERVAttack settings of the study's attacks (Tables 12-14 ...).
    n_runs, seed
        R independent runs; their seeds come from :func:`~advsyst.workflows.robustness.run_seeds`.
    test_fraction
        Fraction of each class kept as the test slice (never trained on).
    max_events
        Use at most this many events (a seeded random subset; ``None``: all).
    tagger
        :func:`~advsyst.models.train_classifier` keywords for the studies that train
        taggers (``training``, ``augmentation``, ``greybox``).
    detector
        :func:`~advsyst.workflows.detector.train_detector` keywords (``hidden``, ``epochs``,
        ``batch_size``, ``lr``, ``train_fraction``).
    detector_inputs
        ``"features"`` (the paper's detector), ``"features+score"`` (the tagger's logit
        appended as one more input), ``"features+order"`` (the constituent-pT ordering
        inputs of :func:`~advsyst.workflows.detector.order_inputs`, found by the feature
        names ``pt_1, pt_2, ...``) or ``"features+order+score"``.
    select
        Adversaries the detector trains on: ``"fooled"`` (the paper) or ``"moved"``.
    threshold, clean_efficiency
        Detector working point: a fixed ``threshold`` on P(adversarial) (the paper: 0.5),
        or, when ``clean_efficiency`` is set, per run the quantile of P(adversarial) on that
        detector's held-out clean events that keeps this fraction unflagged.
    rounds, attack_ranges, test_attack
        Adversarial training (Tables 15 and 16).
    train_size
        Augmentation: size of the reduced training set.
    sizes
        auroc-vs-size: total detector training sizes (clean + adversarial, 50/50).
    significance_level
        Significance level of the repeated-misclassification bins (the paper: 0.05).
    """

    attack: dict[str, Any] = field(default_factory=dict)
    n_runs: int = 3
    seed: int = 0
    test_fraction: float = 0.5
    max_events: int | None = None
    tagger: dict[str, Any] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)
    detector_inputs: str = "features"
    select: str = "fooled"
    threshold: float = 0.5
    clean_efficiency: float | None = None
    rounds: int = 5
    attack_ranges: dict[str, Any] = field(default_factory=dict)
    test_attack: dict[str, Any] | None = None
    train_size: int | None = None
    sizes: list[int] = field(default_factory=lambda: [500, 1000, 2000, 5000, 10000])
    significance_level: float = 0.05

    def __post_init__(self) -> None:
        self.attack = rb._attack_config(self.attack, "attack")
        if self.test_attack is not None:
            self.test_attack = rb._attack_config(self.test_attack, "test_attack")
        rb._parse_ranges(self.attack_ranges)
        self.n_runs = _int(self.n_runs, "n_runs", 1)
        self.seed = _int(self.seed, "seed", 0)
        self.rounds = _int(self.rounds, "rounds", 1)
        if self.max_events is not None:
            self.max_events = _int(self.max_events, "max_events", 10)
        if self.train_size is not None:
            self.train_size = _int(self.train_size, "train_size", 10)
        self.test_fraction = _unit(self.test_fraction, "test_fraction")
        self.threshold = _unit(self.threshold, "threshold")
        self.significance_level = _unit(self.significance_level, "significance_level")
        if self.clean_efficiency is not None:
            self.clean_efficiency = _unit(self.clean_efficiency, "clean_efficiency")
        if self.detector_inputs not in DETECTOR_INPUTS:
            raise ConfigError(
                f"detector_inputs must be one of {DETECTOR_INPUTS}, got {self.detector_inputs!r}"
            )
        if self.select not in ("fooled", "moved"):
            raise ConfigError(f"select must be 'fooled' or 'moved', got {self.select!r}")
        if not isinstance(self.sizes, list | tuple) or not self.sizes:
            raise ConfigError(f"sizes must be a non-empty list of integers, got {self.sizes!r}")
        self.sizes = sorted(_int(s, "sizes[]", 4) for s in self.sizes)
        for name, func, reserved in (
            ("tagger", _train_classifier(), ("X", "y", "w", "seed")),
            (
                "detector",
                train_detector,
                ("X_clean", "X_adv", "weights", "moved", "seed", "threshold"),
            ),
        ):
            kw = rb._kwargs_for(func, getattr(self, name), name, reserved)
            _finite_values(kw, name)
            setattr(self, name, kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> StudyConfig:
        """Build from a mapping; a flat table of CONSERVAttack settings becomes ``attack``."""
        if d is not None and not isinstance(d, Mapping):
            raise ConfigError(f"a study configuration must be a mapping, got {d!r}")
        d = dict(d or {})
        attack_keys = set(ConservAttackConfig.field_names()) | set(ALIASES)
        own = {f.name for f in dataclasses.fields(cls)}
        if d and all(k in attack_keys for k in d) and any(k not in own for k in d):
            return cls(attack=d)
        flat_attack = {k: v for k, v in d.items() if k in attack_keys and k not in own}
        unknown = [k for k in d if k not in own and k not in attack_keys]
        if unknown:
            raise ConfigError(
                f"unknown study configuration key(s) {unknown}; valid keys: {sorted(own)} "
                "(or a flat table of CONSERVAttack settings)"
            )
        if flat_attack:
            raise ConfigError(
                f"CONSERVAttack settings {sorted(flat_attack)} next to study keys: nest them "
                "under 'attack:'"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


def _train_classifier() -> Callable[..., Any]:
    from advsyst.models import train_classifier

    return train_classifier


def _int(v: Any, name: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or int(v) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _unit(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.number):
        raise ConfigError(f"{name} must be a number in (0, 1), got {v!r}")
    f = float(v)
    if not (math.isfinite(f) and 0.0 < f < 1.0):
        raise ConfigError(f"{name} must be a finite number in (0, 1), got {v!r}")
    return f


def _finite_values(kw: Mapping[str, Any], name: str) -> None:
    for k, v in kw.items():
        vals = v if isinstance(v, list | tuple) else [v]
        for x in vals:
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{name}.{k} must be finite, got {v!r}")


def load_study_config(config: str | os.PathLike[str] | Mapping[str, Any] | StudyConfig | None):
    """A :class:`StudyConfig` from a YAML path, a mapping, or itself."""
    if isinstance(config, StudyConfig):
        return config
    if isinstance(config, str | os.PathLike):
        from advsyst.attacks.cli import load_config

        return StudyConfig.from_dict(load_config(os.fspath(config)))
    return StudyConfig.from_dict(config)


# ====================================================================== small helpers
def auroc_error(auc: float, n_pos: float, n_neg: float) -> float:
    """Standard error of an AUROC (Hanley & McNeil 1982) from the class counts."""
    if not (math.isfinite(auc) and n_pos > 0 and n_neg > 0):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return float(math.sqrt(max(var, 0.0)))


def _mean(values: Sequence[float]) -> dict[str, float]:
    """Mean over runs with the standard error of the mean and the run-to-run spread."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"value": float("nan"), "error": float("nan"), "std": float("nan"), "n": 0}
    std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return {
        "value": float(v.mean()),
        "error": std / math.sqrt(len(v)) if len(v) > 1 else float("nan"),
        "std": std,
        "n": int(len(v)),
    }


def _logit(model: Any, X: np.ndarray) -> np.ndarray:
    lp = as_adapter(model, n_features=X.shape[1]).log_probabilities(X)
    if lp.shape[1] != 2:
        raise InputError("detector_inputs='features+score' needs a binary tagger")
    return lp[:, 1] - lp[:, 0]


def detector_inputs(X: np.ndarray, tagger: Any, mode: str = "features") -> np.ndarray:
    """What the detector network is given: the features, or the features plus the tagger's
    logit (``+score``).  The ``+order`` inputs are computed inside the detector model
    (:class:`~advsyst.workflows.detector.DetectorNet`) from the raw features."""
    if mode in ("features", "features+order"):
        return X
    if mode in ("features+score", "features+order+score"):
        return np.column_stack([X, _logit(tagger, X)])
    raise ConfigError(f"detector_inputs must be one of {DETECTOR_INPUTS}, got {mode!r}")


def _p_adv(det_model: Any, X: np.ndarray, tagger: Any, mode: str) -> np.ndarray:
    Xd = detector_inputs(X, tagger, mode)
    return as_adapter(det_model, n_features=Xd.shape[1]).scores(Xd)


def _pair_auroc(p_clean: np.ndarray, p_adv: np.ndarray, w_clean, w_adv) -> dict[str, float]:
    y = np.r_[np.zeros(len(p_clean)), np.ones(len(p_adv))]
    w = None if w_clean is None else np.r_[w_clean, w_adv]
    if len(p_clean) == 0 or len(p_adv) == 0:
        return {"value": float("nan"), "error": float("nan")}
    a = auroc(y, np.r_[p_clean, p_adv], w)
    return {"value": float(a), "error": auroc_error(a, len(p_adv), len(p_clean))}


def _fraction(passed: np.ndarray, w: np.ndarray | None) -> dict[str, float]:
    passed = np.asarray(passed, dtype=bool)
    if len(passed) == 0:
        return {"value": float("nan"), "error": float("nan")}
    if w is None:
        return {
            "value": float(passed.mean()),
            "error": float(binomial_uncertainty(int(passed.sum()), len(passed))),
        }
    return {
        "value": float((w * passed).sum() / w.sum()),
        "error": float(weighted_fraction_uncertainty(passed, w)),
    }


def _subset(w: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if w is None else w[idx]


# ====================================================================== inputs
@dataclass
class _Inputs:
    X: np.ndarray
    y: np.ndarray | None
    w: np.ndarray | None
    names: list[str] | None
    model: Any
    X_data: np.ndarray | None
    w_data: np.ndarray | None
    sources: dict[str, Any]


def _load_data(data: Any, what: str) -> tuple[np.ndarray, Any, Any, Any, str | None]:
    if isinstance(data, str | os.PathLike):
        from advsyst.attacks.cli import load_attack_data

        X, y, w, names = load_attack_data(os.fspath(data))
        return X, y, w, names, os.path.abspath(data)
    if isinstance(data, Mapping):
        if "X" not in data:
            raise InputError(f"{what} mapping has no 'X'")
        return data["X"], data.get("y"), data.get("w"), data.get("feature_names"), None
    if isinstance(data, tuple | list) and 1 <= len(data) <= 3:
        X, y, w = (*data, None, None)[:3]
        return X, y, w, None, None
    raise InputError(f"{what} must be a .npz path, a mapping with 'X', or an (X, y, w) tuple")


def _inputs(name: str, data: Any, model: Any, real_data: Any, cfg: StudyConfig) -> _Inputs:
    X, y, w, names, src = _load_data(data, "data")
    X = rb._features(X, "X")
    if y is None:
        raise InputError(f"study {name!r} needs labels: the data has no 'y'")
    y = rb._labels(y, len(X), "y")
    if len(np.unique(y)) < 2:
        raise InputError("the data must hold both classes (y has a single value)")
    w = rb._weights(w, len(X), "w")
    if cfg.max_events is not None and len(X) > cfg.max_events:
        keep = np.sort(np.random.default_rng([cfg.seed, 7]).permutation(len(X))[: cfg.max_events])
        X, y, w = X[keep], y[keep], _subset(w, keep)
    m = None
    msrc = None
    if name in _NEEDS_MODEL or cfg.detector_inputs == "features+score":
        if model is None:
            raise InputError(f"study {name!r} needs a tagger model (--model)")
        if isinstance(model, str | os.PathLike):
            from advsyst.models import load_model

            msrc = os.path.abspath(model)
            m = load_model(model)
        else:
            m = model
        rb._adapter(m, X.shape[1], cfg.attack).predict(X[:2])  # wrong outputs fail here
    Xd = wd = None
    dsrc = None
    if name == "efficiency":
        if real_data is None:
            raise InputError("study 'efficiency' needs (pseudo-)data events (--real-data)")
        Xd, _, wd, _, dsrc = _load_data(real_data, "real_data")
        Xd = rb._features(Xd, "real-data X")
        if Xd.shape[1] != X.shape[1]:
            raise InputError(
                f"real data has {Xd.shape[1]} features but the simulation has {X.shape[1]}"
            )
        wd = rb._weights(wd, len(Xd), "real-data w")
    return _Inputs(X, y, w, names, m, Xd, wd, {"data": src, "model": msrc, "real_data": dsrc})


# ====================================================================== results
@dataclass
class StudyResult:
    """What a study wrote: its ``result`` dictionary (as in ``result.json``) and paths."""

    name: str
    result: dict[str, Any]
    out: Path
    figure: Path
    summary: Path

    def __getitem__(self, key: str) -> Any:
        return self.result[key]


class _Runs:
    """Per-run result files under ``out/runs`` (atomic; skipped on resume)."""

    def __init__(self, out: Path, resume: bool):
        self.dir = out / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume

    def path(self, key: str, suffix: str = ".json") -> Path:
        return self.dir / f"{key}{suffix}"

    def done(self, key: str) -> dict[str, Any] | None:
        import json

        p = self.path(key)
        if self.resume and p.exists():
            log.info("resume: %s already done, skipped", p.name)
            return json.loads(p.read_text())
        return None

    def write(self, key: str, rec: Mapping[str, Any]) -> dict[str, Any]:
        rec = to_jsonable(dict(rec))
        atomic_write_json(self.path(key), rec)
        return rec


def _attack(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    model: Any,
    cfg: Mapping[str, Any],
    seed: int,
    runs: _Runs,
    key: str,
    names: list[str] | None,
) -> AttackResult:
    """One attack, cached in ``runs/key.npz`` (reloaded on resume)."""
    p = runs.path(key, ".npz")
    if runs.resume and p.exists():
        log.info("resume: attack %s loaded from %s", key, p.name)
        return AttackResult.load(p)
    res = ConservAttack(dict(cfg, seed=int(seed))).run(
        X, model, y=y, weights=w, feature_names=names
    )
    log.info(
        "attack %s: %d events, fooling ratio %.4f, JSD max %.3g, dFN %.3g (%.1fs, %.2f ms/event)",
        key,
        len(X),
        res.fooling_ratio,
        res.metrics.get("jsd_max", float("nan")),
        res.metrics.get("dfn", float("nan")),
        res.metrics.get("seconds", float("nan")),
        1e3 * float(res.metrics.get("seconds", float("nan"))) / max(len(X), 1),
    )
    res.save(p)
    return res


def _split(inp: _Inputs, cfg: StudyConfig) -> tuple[np.ndarray, np.ndarray]:
    return rb._stratified_split(inp.y, cfg.test_fraction, cfg.seed)


def _train_det(
    inp: _Inputs, cfg: StudyConfig, X: np.ndarray, res: AttackResult, w, seed: int, **extra
) -> DetectorResult:
    sel = res.fooled if cfg.select == "fooled" else res.moved
    Xc = detector_inputs(X, inp.model, cfg.detector_inputs)
    Xa = detector_inputs(res.X_adv, inp.model, cfg.detector_inputs)
    kw = dict(cfg.detector) | extra
    if "+order" in cfg.detector_inputs:
        order = ordered_columns(inp.names)
        if not order:
            raise InputError(
                "detector_inputs '+order' needs feature names with pt_1, pt_2, ... (the data "
                "has none)"
            )
        kw.setdefault("ordered_features", order)
    return train_detector(Xc, Xa, w, moved=sel, seed=int(seed), threshold=cfg.threshold, **kw)


def _working_point(det: DetectorResult, inp: _Inputs, cfg: StudyConfig, X: np.ndarray) -> float:
    """The run's threshold: fixed, or the clean-efficiency quantile on held-out clean events
    of the detector's own training slice (as :func:`~advsyst.workflows.robustness.detector_runs`)."""
    if cfg.clean_efficiency is None:
        return float(cfg.threshold)
    if len(det.test_events) == 0:
        raise ConfigError(
            "clean_efficiency needs held-out detector events: set detector.train_fraction < 1"
        )
    p = _p_adv(det.model, X[det.test_events], inp.model, cfg.detector_inputs)
    return float(np.quantile(p, cfg.clean_efficiency))


def _detector_run(
    inp: _Inputs,
    cfg: StudyConfig,
    runs: _Runs,
    r: int,
    seeds: list[int],
    tr: np.ndarray,
    te: np.ndarray,
    *,
    test_attack: bool,
) -> tuple[dict[str, Any], Any, AttackResult | None]:
    """Run ``r`` of the detector pipeline: attack the detector-training slice (and the test
    slice), train the detector, evaluate it on the clean test slice (and on data)."""
    from advsyst.models import load_model, save_model

    key = f"run{r}"
    s = seeds[r]
    wtr, wte = _subset(inp.w, tr), _subset(inp.w, te)
    done = runs.done(key)
    res_te = None
    if test_attack:
        res_te = _attack(
            inp.X[te], inp.y[te], wte, inp.model, cfg.attack, s + 1, runs, f"{key}_test", inp.names
        )
    if done is not None:
        return done, load_model(runs.path(f"{key}_detector", ".pt")), res_te
    t0 = time.perf_counter()
    res_tr = _attack(
        inp.X[tr], inp.y[tr], wtr, inp.model, cfg.attack, s, runs, f"{key}_train", inp.names
    )
    det = _train_det(inp, cfg, inp.X[tr], res_tr, wtr, s)
    thr = _working_point(det, inp, cfg, inp.X[tr])
    p_clean = _p_adv(det.model, inp.X[te], inp.model, cfg.detector_inputs)
    rec: dict[str, Any] = {
        "run": r,
        "seed": s,
        "threshold": thr,
        "train_attack": res_tr.summary(),
        "n_detector_pairs": int(len(det.train_events)),
        "detector_holdout_auroc": det.auroc,
        "detector_history": det.history.to_dict(),
        "clean_efficiency": _fraction(p_clean < thr, wte),
    }
    if res_te is not None:
        sel = res_te.fooled if cfg.select == "fooled" else res_te.moved
        p_adv = _p_adv(det.model, res_te.X_adv[sel], inp.model, cfg.detector_inputs)
        rec["detector_auroc"] = _pair_auroc(
            p_clean[sel],
            p_adv,
            _subset(wte, np.flatnonzero(sel)),
            _subset(wte, np.flatnonzero(sel)),
        )
        rec["test_attack"] = res_te.summary()
    atomic_savez(runs.path(f"{key}_p_clean", ".npz"), p=p_clean)
    if inp.X_data is not None:
        p_data = _p_adv(det.model, inp.X_data, inp.model, cfg.detector_inputs)
        rec["data_clean_efficiency"] = _fraction(p_data < thr, inp.w_data)
        atomic_savez(runs.path(f"{key}_p_data", ".npz"), p=p_data)
    save_model(det.model, runs.path(f"{key}_detector", ".pt"), metadata={"role": "detector"})
    rec["seconds"] = time.perf_counter() - t0
    log.info(
        "[run %d/%d] detector: %d pairs, hold-out AUROC %.4f, threshold %.3f, clean "
        "efficiency %.4f (%.1fs)",
        r + 1,
        cfg.n_runs,
        len(det.train_events),
        det.auroc,
        thr,
        rec["clean_efficiency"]["value"],
        rec["seconds"],
    )
    return runs.write(key, rec), det.model, res_te


def _load_p(runs: _Runs, key: str) -> np.ndarray:
    with np.load(runs.path(key, ".npz")) as z:
        return np.asarray(z["p"])


# ====================================================================== the studies
def _study_detector(inp: _Inputs, cfg: StudyConfig, runs: _Runs) -> dict[str, Any]:
    R = _int(cfg.n_runs, "n_runs", 2)
    tr, te = _split(inp, cfg)
    seeds = rb.run_seeds(cfg.seed, R)
    wte = _subset(inp.w, te)
    recs, dets, tests = [], [], []
    for r in range(R):
        rec, det, res_te = _detector_run(inp, cfg, runs, r, seeds, tr, te, test_attack=True)
        recs.append(rec)
        dets.append(det)
        tests.append(res_te)
    # cross evaluation: detector r corrects the fooling ratio of run j's test adversaries
    corrected = np.full((R, R), np.nan)
    corrected_err = np.full((R, R), np.nan)
    adv_eff = np.full((R, R), np.nan)
    for r in range(R):
        for j in range(R):
            res = tests[j]
            flagged = (
                _p_adv(dets[r], res.X_adv, inp.model, cfg.detector_inputs) >= recs[r]["threshold"]
            )
            f = _fraction(res.fooled & ~flagged, wte)
            corrected[r, j], corrected_err[r, j] = f["value"], f["error"]
            adv_eff[r, j] = _fraction(
                flagged[res.fooled], _subset(wte, np.flatnonzero(res.fooled))
            )["value"]
    off = ~np.eye(R, dtype=bool)
    per_run = []
    ad = rb._adapter(inp.model, inp.X.shape[1], cfg.attack)
    pred_clean = ad.predict(inp.X[te])
    for r in range(R):
        fr, fr_err = fooling_ratio_with_error(pred_clean, ad.predict(tests[r].X_adv), None, wte)
        others = corrected[r, off[r]]
        per_run.append(
            {
                "run": r,
                "seed": recs[r]["seed"],
                "fooling_ratio": {"value": fr, "error": fr_err},
                "corrected_fooling_ratio": {
                    "value": float(others.mean()),
                    "error": float(np.sqrt(np.mean(corrected_err[r, off[r]] ** 2))),
                    "std_over_runs": float(others.std(ddof=1)) if R > 2 else float("nan"),
                    "definition": "mean over the other runs j of the weighted fraction of run "
                    "j's test events that are fooled and not flagged by this run's detector",
                },
                "corrected_fooling_ratio_same_run": {
                    "value": float(corrected[r, r]),
                    "error": float(corrected_err[r, r]),
                },
                "detector_auroc": recs[r]["detector_auroc"],
                "clean_efficiency": recs[r]["clean_efficiency"],
                "adversarial_efficiency": {"value": float(adv_eff[r, off[r]].mean())},
                "threshold": recs[r]["threshold"],
                "test_attack_jsd_max": recs[r]["test_attack"].get("jsd_max"),
                "test_attack_dfn": recs[r]["test_attack"].get("dfn"),
                "n_detector_pairs": recs[r]["n_detector_pairs"],
                "attack_ms_per_event": 1e3
                * float(recs[r]["train_attack"].get("seconds", float("nan")))
                / max(len(tr), 1),
            }
        )
    mean = {
        k: _mean([p[k]["value"] for p in per_run])
        for k in (
            "fooling_ratio",
            "corrected_fooling_ratio",
            "detector_auroc",
            "clean_efficiency",
            "adversarial_efficiency",
        )
    }
    return {
        "runs": per_run,
        "mean": mean,
        "corrected_matrix": corrected,
        "corrected_matrix_errors": corrected_err,
        "matrix_orientation": "[detector run, adversaries of run]",
        "n_events": {"detector_training": int(len(tr)), "test": int(len(te))},
    }


def _study_significance(inp: _Inputs, cfg: StudyConfig, runs: _Runs) -> dict[str, Any]:
    R = _int(cfg.n_runs, "n_runs", 2)
    tr, te = _split(inp, cfg)
    seeds = rb.run_seeds(cfg.seed, R)
    recs = [_detector_run(inp, cfg, runs, r, seeds, tr, te, test_attack=False)[0] for r in range(R)]
    flags = np.stack([_load_p(runs, f"run{r}_p_clean") >= recs[r]["threshold"] for r in range(R)])
    sig = rb.repeated_misclassification(flags, alpha=cfg.significance_level)
    d = sig.to_dict()
    d.pop("provenance", None)
    return {
        **d,
        "runs": [
            {
                "run": r["run"],
                "seed": r["seed"],
                "threshold": r["threshold"],
                "clean_efficiency": r["clean_efficiency"],
                "detector_holdout_auroc": r["detector_holdout_auroc"],
            }
            for r in recs
        ],
        "slices": {"detector_training": int(len(tr)), "evaluated": int(len(te))},
    }


def _study_efficiency(inp: _Inputs, cfg: StudyConfig, runs: _Runs) -> dict[str, Any]:
    from advsyst.systematics import compare_data_mc, detector_efficiency_curve

    R = cfg.n_runs
    tr, te = _split(inp, cfg)
    seeds = rb.run_seeds(cfg.seed, R)
    recs = [_detector_run(inp, cfg, runs, r, seeds, tr, te, test_attack=False)[0] for r in range(R)]
    wte = _subset(inp.w, te)
    t = np.linspace(0.0, 1.0, 101)
    mc, dt, mc_err, dt_err = [], [], [], []
    for r in range(R):
        _, e, s = detector_efficiency_curve(_load_p(runs, f"run{r}_p_clean"), wte, t)
        _, ed, sd = detector_efficiency_curve(_load_p(runs, f"run{r}_p_data"), inp.w_data, t)
        mc.append(e)
        mc_err.append(s)
        dt.append(ed)
        dt_err.append(sd)
    mc, dt = np.asarray(mc), np.asarray(dt)

    def band(curves: np.ndarray, stat: list[np.ndarray]) -> np.ndarray:
        spread = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
        return np.hypot(spread, np.sqrt(np.mean(np.square(stat), axis=0)))

    eff_mc, eff_dt = mc.mean(axis=0), dt.mean(axis=0)
    err_mc, err_dt = band(mc, mc_err), band(dt, dt_err)
    i = int(np.argmin(np.abs(t - cfg.threshold)))
    at = {
        "threshold": float(t[i]),
        "simulation": {"value": float(eff_mc[i]), "error": float(err_mc[i])},
        "data": {"value": float(eff_dt[i]), "error": float(err_dt[i])},
    }
    at |= {"comparison": compare_data_mc(eff_mc[i], err_mc[i], eff_dt[i], err_dt[i])}
    return {
        "thresholds": t,
        "simulation": {"efficiency": eff_mc, "error": err_mc, "per_run": mc},
        "data": {"efficiency": eff_dt, "error": err_dt, "per_run": dt},
        "error_definition": "run-to-run spread (std) and the mean binomial error, in quadrature",
        "at_threshold": at,
        "runs": [
            {
                k: r[k]
                for k in (
                    "run",
                    "seed",
                    "threshold",
                    "clean_efficiency",
                    "data_clean_efficiency",
                    "detector_holdout_auroc",
                )
            }
            for r in recs
        ],
        "n_events": {"simulation_evaluated": int(len(te)), "data": int(len(inp.X_data))},
    }


def _study_auroc_vs_size(inp: _Inputs, cfg: StudyConfig, runs: _Runs) -> dict[str, Any]:
    tr, te = _split(inp, cfg)
    wtr, wte = _subset(inp.w, tr), _subset(inp.w, te)
    res_tr = _attack(
        inp.X[tr], inp.y[tr], wtr, inp.model, cfg.attack, cfg.seed, runs, "train_attack", inp.names
    )
    res_te = _attack(
        inp.X[te],
        inp.y[te],
        wte,
        inp.model,
        cfg.attack,
        cfg.seed + 1,
        runs,
        "test_attack",
        inp.names,
    )
    sel_tr = np.flatnonzero(res_tr.fooled if cfg.select == "fooled" else res_tr.moved)
    sel_te = np.flatnonzero(res_te.fooled if cfg.select == "fooled" else res_te.moved)
    available = 2 * len(sel_tr)
    sizes = [s for s in cfg.sizes if s <= available]
    if not sizes:
        raise InputError(
            f"the attack selected {len(sel_tr)} training adversaries ({available} training "
            f"events with their clean versions); every size in {cfg.sizes} is larger"
        )
    if len(sizes) < len(cfg.sizes):
        log.warning("sizes above %d dropped (only %d training adversaries)", available, len(sel_tr))
    seeds = rb.run_seeds(cfg.seed, cfg.n_runs)
    Xc_te = inp.X[te][sel_te]
    rows = []
    total = len(sizes) * cfg.n_runs
    k = 0
    for n in sizes:
        for r, s in enumerate(seeds):
            k += 1
            key = f"size{n}_run{r}"
            rec = runs.done(key)
            if rec is None:
                t0 = time.perf_counter()
                pick = np.random.default_rng([s, n]).choice(sel_tr, n // 2, replace=False)
                mask = np.zeros(len(tr), dtype=bool)
                mask[pick] = True
                sub = dataclasses.replace(res_tr, fooled=mask, moved=mask)
                det = _train_det(inp, cfg, inp.X[tr], sub, wtr, s, train_fraction=1.0)
                p_c = _p_adv(det.model, Xc_te, inp.model, cfg.detector_inputs)
                p_a = _p_adv(det.model, res_te.X_adv[sel_te], inp.model, cfg.detector_inputs)
                a = _pair_auroc(p_c, p_a, _subset(wte, sel_te), _subset(wte, sel_te))
                rec = runs.write(
                    key,
                    {
                        "size": n,
                        "run": r,
                        "seed": s,
                        "auroc": a,
                        "seconds": time.perf_counter() - t0,
                    },
                )
                log.info("[%d/%d] size %d, run %d: detector AUROC %.4f", k, total, n, r, a["value"])
            rows.append(rec)
    curve = [
        {"size": n, **_mean([x["auroc"]["value"] for x in rows if x["size"] == n])} for n in sizes
    ]
    return {
        "curve": curve,
        "runs": rows,
        "n_test_pairs": int(len(sel_te)),
        "available_training_events": int(available),
        "train_attack": res_tr.summary(),
        "test_attack": res_te.summary(),
    }


def _study_greybox(inp: _Inputs, cfg: StudyConfig, runs: _Runs) -> dict[str, Any]:
    R = _int(cfg.n_runs, "n_runs", 2)
    rec = runs.done("greybox")
    if rec is None:
        g = rb.grey_box_matrix(
            inp.X,
            inp.y,
            n_models=R,
            attack_config=cfg.attack,
            train_kwargs=cfg.tagger,
            seed=cfg.seed,
            weights=inp.w,
            test_fraction=cfg.test_fraction,
        )
        d = g.to_dict()
        d.pop("provenance", None)
        off = g.grey_box
        d["white_box_mean"] = _mean(list(g.white_box))
        d["grey_box_mean"] = _mean(list(off))
        rec = runs.write("greybox", d)
    return rec


def _study_training(inp: _Inputs, cfg: StudyConfig, runs: _Runs) -> dict[str, Any]:
    tr, te = _split(inp, cfg)
    seeds = rb.run_seeds(cfg.seed, cfg.n_runs)
    per_run = []
    for r, s in enumerate(seeds):
        rec = runs.done(f"run{r}")
        if rec is None:
            log.info("[run %d/%d] adversarial training, %d rounds", r + 1, cfg.n_runs, cfg.rounds)
            res = rb.adversarial_training(
                inp.X[tr],
                inp.y[tr],
                inp.X[te],
                inp.y[te],
                rounds=cfg.rounds,
                attack_ranges=cfg.attack_ranges,
                test_attack=cfg.test_attack or cfg.attack,
                train_kwargs=cfg.tagger,
                seed=s,
                weights=_subset(inp.w, tr),
                test_weights=_subset(inp.w, te),
            )
            d = res.to_dict()
            d.pop("provenance", None)
            xfr = res.column("transfer_fooling_ratio")
            xerr = res.column("transfer_fooling_ratio_error")
            best = int(np.argmin(xfr[1:])) + 1
            d["run"], d["seed"] = r, s
            d["base_fooling_ratio"] = {"value": float(xfr[0]), "error": float(xerr[0])}
            d["average_fooling_ratio"] = {
                "value": float(xfr[1:].mean()),
                "error": float(np.sqrt(np.sum(xerr[1:] ** 2)) / len(xfr[1:])),
            }
            d["best_fooling_ratio"] = {
                "value": float(xfr[best]),
                "error": float(xerr[best]),
                "round": best,
            }
            aucs = res.column("clean_auroc")
            d["base_clean_auroc"] = float(aucs[0])
            d["average_clean_auroc"] = float(aucs[1:].mean())
            rec = runs.write(f"run{r}", d)
        per_run.append(rec)
    mean = {
        k: _mean([p[k]["value"] for p in per_run])
        for k in ("base_fooling_ratio", "average_fooling_ratio", "best_fooling_ratio")
    }
    mean["base_clean_auroc"] = _mean([p["base_clean_auroc"] for p in per_run])
    mean["average_clean_auroc"] = _mean([p["average_clean_auroc"] for p in per_run])
    return {
        "runs": per_run,
        "mean": mean,
        "n_events": {"train": int(len(tr)), "test": int(len(te))},
    }


def _study_augmentation(inp: _Inputs, cfg: StudyConfig, runs: _Runs) -> dict[str, Any]:
    train_classifier = _train_classifier()
    tr, te = _split(inp, cfg)
    n_sub = min(cfg.train_size or len(tr) // 4, len(tr))
    seeds = rb.run_seeds(cfg.seed, cfg.n_runs)
    wte = _subset(inp.w, te)
    npos, nneg = int((inp.y[te] == 1).sum()), int((inp.y[te] != 1).sum())
    per_run = []
    for r, s in enumerate(seeds):
        rec = runs.done(f"run{r}")
        if rec is None:
            t0 = time.perf_counter()
            sub = np.sort(np.random.default_rng([s, 11]).choice(tr, n_sub, replace=False))
            Xs, ys, ws = inp.X[sub], inp.y[sub], _subset(inp.w, sub)
            base, _ = train_classifier(Xs, ys, ws, seed=s, **cfg.tagger)
            Xa, ya, wa, res = rb.augment(
                Xs, ys, base, dict(cfg.attack, seed=s), ws, return_attack=True
            )
            aug, _ = train_classifier(Xa, ya, wa, seed=s, **cfg.tagger)
            a0 = rb._clean_auroc(base, inp.X[te], inp.y[te], wte)
            a1 = rb._clean_auroc(aug, inp.X[te], inp.y[te], wte)
            rec = runs.write(
                f"run{r}",
                {
                    "run": r,
                    "seed": s,
                    "train_size": int(n_sub),
                    "augmented_size": int(len(Xa)),
                    "attack": res.summary(),
                    "base_auroc": {"value": a0, "error": auroc_error(a0, npos, nneg)},
                    "augmented_auroc": {"value": a1, "error": auroc_error(a1, npos, nneg)},
                    "gain": a1 - a0,
                    "seconds": time.perf_counter() - t0,
                },
            )
            log.info(
                "[run %d/%d] augmentation: AUROC %.4f -> %.4f (+%d adversaries)",
                r + 1,
                cfg.n_runs,
                a0,
                a1,
                len(Xa) - n_sub,
            )
        per_run.append(rec)
    gains = [p["gain"] for p in per_run]
    return {
        "runs": per_run,
        "mean": {
            "base_auroc": _mean([p["base_auroc"]["value"] for p in per_run]),
            "augmented_auroc": _mean([p["augmented_auroc"]["value"] for p in per_run]),
            "gain": _mean(gains),
        },
        "n_events": {"reduced_train": int(n_sub), "test": int(len(te))},
    }


_RUNNERS: dict[str, Callable[[_Inputs, StudyConfig, _Runs], dict[str, Any]]] = {
    "detector": _study_detector,
    "training": _study_training,
    "augmentation": _study_augmentation,
    "greybox": _study_greybox,
    "significance": _study_significance,
    "efficiency": _study_efficiency,
    "auroc-vs-size": _study_auroc_vs_size,
}


# ====================================================================== entry point
def run_study(
    name: str,
    data: Any,
    model: Any = None,
    config: Any = None,
    out: str | os.PathLike[str] = "study-out",
    *,
    real_data: Any = None,
    resume: bool = False,
) -> StudyResult:
    """Run one of :data:`STUDIES` and write ``result.json``, the figure and ``summary.md``.

    Parameters
    ----------
    name
        One of :data:`STUDIES`.
    data
        Simulated events: an ``.npz`` path (``X``, ``y``, optional ``w``,
        ``feature_names``), a mapping with those keys, or an ``(X, y[, w])`` tuple.
    model
        The tagger (TorchScript path or module); needed by ``detector``, ``significance``,
        ``efficiency`` and ``auroc-vs-size``.
    config
        YAML path, mapping or :class:`StudyConfig`.
    out
        Output folder.
    real_data
        (Pseudo-)data events for ``efficiency`` (same forms as ``data``; labels ignored).
    resume
        Reuse the per-run files already in ``out/runs``.

    Returns
    -------
    StudyResult
    """
    if name not in _RUNNERS:
        raise ConfigError(f"unknown study {name!r}; choose one of {list(STUDIES)}")
    cfg = load_study_config(config)
    inp = _inputs(name, data, model, real_data, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = _Runs(out, resume)
    log.info(
        "study %s: %d events x %d features, %d run(s), seed %d -> %s",
        name,
        len(inp.X),
        inp.X.shape[1],
        cfg.n_runs,
        cfg.seed,
        out,
    )
    t0 = time.perf_counter()
    body = _RUNNERS[name](inp, cfg, runs)
    seconds = time.perf_counter() - t0
    result = to_jsonable(
        {
            "study": name,
            **body,
            "n_input_events": int(len(inp.X)),
            "seconds": seconds,
            "inputs": inp.sources,
            "provenance": provenance(
                cfg.to_dict(),
                cfg.seed,
                workflow=f"study:{name}",
                run_seeds=rb.run_seeds(cfg.seed, cfg.n_runs),
            ),
        }
    )
    fig = plot_study(name, result, out / f"{name}.png")
    atomic_write_json(out / "result.json", result)
    summary = atomic_write_text(out / "summary.md", _summary(name, result, cfg))
    log.info("study %s done in %.0fs: %s", name, seconds, out / "result.json")
    return StudyResult(name, result, out, fig, summary)


def _pm(d: Mapping[str, Any] | None, nd: int = 3) -> str:
    if not d:
        return "n/a"
    v, e = d.get("value"), d.get("error")
    if v is None:
        return "n/a"
    return f"{v:.{nd}f} ± {e:.{nd}f}" if e is not None and math.isfinite(e) else f"{v:.{nd}f}"


def _summary(name: str, r: Mapping[str, Any], cfg: StudyConfig) -> str:
    lines = [
        f"# advsyst study `{name}`",
        "",
        f"{r['n_input_events']} events, {cfg.n_runs} run(s), seed {cfg.seed}, "
        f"{r['seconds']:.0f} s. All numbers: `result.json`; figure: `{name}.png`.",
        "",
    ]
    if name == "detector":
        m = r["mean"]
        lines += [
            "| run | fooling ratio | corrected FR | detector AUROC | clean efficiency |",
            "|---:|---:|---:|---:|---:|",
        ]
        for p in r["runs"]:
            lines.append(
                f"| {p['run']} | {_pm(p['fooling_ratio'])} | "
                f"{_pm(p['corrected_fooling_ratio'])} | {_pm(p['detector_auroc'])} | "
                f"{_pm(p['clean_efficiency'])} |"
            )
        lines.append(
            f"| mean | {_pm(m['fooling_ratio'])} | {_pm(m['corrected_fooling_ratio'])}"
            f" | {_pm(m['detector_auroc'])} | {_pm(m['clean_efficiency'])} |"
        )
    elif name == "training":
        m = r["mean"]
        lines += [
            f"- fooling ratio of the base model's test adversaries: base model "
            f"{_pm(m['base_fooling_ratio'])}, adversarially trained (average over rounds) "
            f"{_pm(m['average_fooling_ratio'])}, best round {_pm(m['best_fooling_ratio'])}",
            f"- clean AUROC: base {_pm(m['base_clean_auroc'], 4)}, trained "
            f"{_pm(m['average_clean_auroc'], 4)}",
        ]
    elif name == "augmentation":
        m = r["mean"]
        lines += [
            f"- clean test AUROC: base {_pm(m['base_auroc'], 4)}, augmented "
            f"{_pm(m['augmented_auroc'], 4)}, gain {_pm(m['gain'], 4)} "
            f"(training set {r['n_events']['reduced_train']} events)"
        ]
    elif name == "greybox":
        lines += [
            f"- white-box fooling ratio {_pm(r['white_box_mean'])}, grey-box "
            f"{_pm(r['grey_box_mean'])}"
        ]
    elif name == "significance":
        lines += [
            f"- {r['n_runs']} detector runs, {r['n_events']} clean events, p = "
            f"{r['p']:.4f}; significant bins (k flagged runs): "
            f"{r['significant_bins'] or 'none'}",
            "",
            "| k | expected | observed | p-value |",
            "|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {b['k']} | {b['expected']:.1f} | {b['observed']} | {b['p_value']:.3g} |"
            for b in r["bins"]
        ]
    elif name == "efficiency":
        a = r["at_threshold"]
        lines += [
            f"- clean-event efficiency at threshold {a['threshold']:.2f}: simulation "
            f"{_pm(a['simulation'])}, data {_pm(a['data'])}, pull "
            f"{a['comparison']['pull']:.2f}"
        ]
    elif name == "auroc-vs-size":
        lines += ["| training events | detector AUROC (mean ± s.e.m.) |", "|---:|---:|"]
        lines += [f"| {c['size']} | {_pm(c)} |" for c in r["curve"]]
    return "\n".join(lines) + "\n"


# ====================================================================== figures
def _per_run(ax: Any, runs: list[dict], series: list[tuple], *, means: bool) -> None:
    """One errorbar series per (key, colour, label, x offset) over the runs, each point
    ``run[key]["value"] ± run[key]["error"]``; ``means`` adds each series' mean as a line."""
    x = np.arange(len(runs))
    for key, col, lab, dx in series:
        v = [p[key]["value"] for p in runs]
        e = [p[key]["error"] for p in runs]
        ax.errorbar(x + dx, v, yerr=e, fmt="o", color=col, label=lab)
        if means:
            ax.axhline(np.mean(v), color=col, ls="--", lw=1)
    ax.set_xticks(x)
    ax.set_xlabel("run")


def plot_study(name: str, r: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """The paper's figure for study ``name`` drawn from its ``result.json`` dictionary."""
    from matplotlib.figure import Figure

    from advsyst.systematics import plots as P

    if name == "efficiency":
        return P.plot_detector_efficiency(
            np.asarray(r["thresholds"]),
            np.asarray(r["simulation"]["efficiency"]),
            np.asarray(r["simulation"]["error"]),
            np.asarray(r["data"]["efficiency"]),
            np.asarray(r["data"]["error"]),
            path,
            label_mc="simulation (clean)",
            label_data="pseudo-data",
        )
    with P._style():
        fig = Figure(figsize=(8, 6))
        ax = fig.add_subplot(1, 1, 1)
        if name == "detector":
            _per_run(ax, r["runs"], [
                ("fooling_ratio", "tab:red", "initial fooling ratio", 0.0),
                ("corrected_fooling_ratio", "tab:gray", "corrected fooling ratio", 0.0),
            ], means=True)  # fmt: skip
            ax.set_ylabel("fooling ratio")
            ax.set_ylim(0, 1.05)
        elif name == "training":
            _per_run(ax, r["runs"], [
                ("base_fooling_ratio", "tab:gray", "baseline model", -0.15),
                ("average_fooling_ratio", "tab:red", "adv. trained (average)", 0.0),
                ("best_fooling_ratio", "tab:blue", "adv. trained (best)", 0.15),
            ], means=False)  # fmt: skip
            ax.set_ylabel("FR, base model's test adv.")
            ax.set_ylim(0, 1.05)
        elif name == "augmentation":
            _per_run(ax, r["runs"], [
                ("base_auroc", "tab:gray", "base model", 0.0),
                ("augmented_auroc", "tab:red", "augmented model", 0.0),
            ], means=True)  # fmt: skip
            ax.set_ylabel("clean test AUROC")
        elif name == "greybox":
            m = np.asarray(r["matrix"])
            im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
            for (i, j), v in np.ndenumerate(m):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=10, color="w")
            fig.colorbar(im, ax=ax, label="fooling ratio")
            ax.set_xlabel("target model")
            ax.set_ylabel("adversaries of model")
        elif name == "significance":
            k = [b["k"] for b in r["bins"]]
            ax.bar(
                k,
                [max(b["expected"], 1e-3) for b in r["bins"]],
                color="tab:gray",
                alpha=0.6,
                label="expected (binomial)",
            )
            ax.errorbar(
                k,
                [b["observed"] for b in r["bins"]],
                yerr=np.sqrt([b["observed"] for b in r["bins"]]),
                fmt="o",
                color="k",
                label="observed",
            )
            sig = [b for b in r["bins"] if b["significant"]]
            if sig:
                ax.plot(
                    [b["k"] for b in sig],
                    [max(b["observed"], 1) for b in sig],
                    "*",
                    color="tab:red",
                    ms=14,
                    label=f"p < {r['alpha']}",
                )
            ax.set_yscale("log")
            ax.set_xlabel("runs flagging a clean event (k)")
            ax.set_ylabel("events")
        elif name == "auroc-vs-size":
            c = r["curve"]
            ax.errorbar(
                [x["size"] for x in c],
                [x["value"] for x in c],
                yerr=[x["std"] if x["std"] is not None else 0 for x in c],
                fmt="o-",
                color="tab:red",
                label="detector (mean ± std over runs)",
            )
            ax.set_xscale("log")
            ax.set_xticks([x["size"] for x in c], [str(x["size"]) for x in c], fontsize=12)
            ax.minorticks_off()
            ax.set_xlabel("detector training events (clean + adversarial)")
            ax.set_ylabel("detector AUROC")
        else:  # pragma: no cover - guarded by run_study
            raise ConfigError(f"no figure for study {name!r}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=11)
        P._label(ax)
        return P._save(fig, path)


# ====================================================================== command line
def add_arguments(p: Any) -> None:
    p.add_argument("name", choices=STUDIES, help="which study")
    p.add_argument("--data", required=True, help="simulated features .npz (X, y, optional w)")
    p.add_argument(
        "--model", help="TorchScript tagger (detector, significance, efficiency, auroc-vs-size)"
    )
    p.add_argument("--config", help="YAML: a paper parameter table or StudyConfig fields")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--real-data", help="(pseudo-)data features .npz (efficiency study)")
    p.add_argument("--runs", type=int, help="override n_runs")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--max-events", type=int, help="override max_events")
    p.add_argument("--resume", action="store_true", help="skip runs already in OUT/runs")


def run(args: Any) -> int:
    from advsyst.attacks.cli import load_config

    d = load_config(args.config)
    cfg = StudyConfig.from_dict(d)
    over = {
        k: v
        for k, v in (("n_runs", args.runs), ("seed", args.seed), ("max_events", args.max_events))
        if v is not None
    }
    if over:
        cfg = StudyConfig.from_dict(cfg.to_dict() | over)
    res = run_study(
        args.name,
        args.data,
        args.model,
        cfg,
        args.out,
        real_data=args.real_data,
        resume=args.resume,
    )
    print(res.summary.read_text())
    print(f"outputs in {Path(args.out).resolve()}: result.json, {res.figure.name}, summary.md")
    return 0
