"""Robustness studies with CONSERVAttack (the paper's Sections 6, 7 and 8).

Three workflows on plain arrays and torch models (no coffea):

* :func:`repeated_misclassification` -- are the clean events that R independently trained
  adversarial detectors flag the same ones more often than chance allows?  Under the null
  hypothesis every (run, event) pair is flagged independently with one probability
  ``p = 1 - mean per-run accuracy``, so the number of runs flagging an event is
  Binomial(R, p); the observed count of events flagged in exactly k runs is compared to
  ``E_k = N Binom(k; R, p)`` with a Poisson upper-tail p-value per bin.
  :func:`detector_runs` produces the ``(R, N)`` flags from R detector trainings.
* :func:`grey_box_matrix` -- R taggers trained with identical settings and different seeds;
  each one's test set is attacked (white box) and every model is evaluated on every
  model's adversaries.  Entry ``[a, t]`` is the fooling ratio of the adversaries made
  against model ``a`` when shown to model ``t``: the diagonal is the white-box fooling
  ratio, the off-diagonal entries are grey-box (transfer) fooling ratios.
* :func:`adversarial_training` -- cumulative adversarial training: every round attacks the
  current model on the clean training set with freshly drawn attack parameters, appends the
  adversaries with their true labels (:func:`augment`) and retrains from scratch; each round
  records the clean test AUROC and the fooling ratio of a fixed test attack.

Every result carries its seeds, configurations and a :func:`~advsyst._io.provenance`
record, converts to JSON-friendly dictionaries with ``to_dict()`` and writes itself
atomically with ``write_json()``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from advsyst._io import atomic_write_json, provenance, to_jsonable
from advsyst.attacks.config import ALIASES, ConservAttackConfig
from advsyst.attacks.conservattack import ConservAttack
from advsyst.attacks.metrics import auroc, fooling_ratio_with_error
from advsyst.attacks.model import as_adapter
from advsyst.attacks.result import AttackResult
from advsyst.errors import ConfigError, InputError
from advsyst.models import Classifier, train_classifier
from advsyst.workflows.detector import DetectorResult, train_detector

__all__ = [
    "MisclassificationSignificance",
    "repeated_misclassification",
    "detector_runs",
    "GreyBoxResult",
    "grey_box_matrix",
    "TrainingRound",
    "AdversarialTrainingResult",
    "adversarial_training",
    "augment",
    "draw_attack_parameters",
    "run_seeds",
]

log = logging.getLogger(__name__)

#: independent streams derived from the user's seed (models, parameter draws, splits)
_STREAM_MODELS, _STREAM_PARAMS, _STREAM_SPLIT, _STREAM_ATTACK = 0, 1, 2, 3


# ====================================================================== shared helpers
def run_seeds(seed: int, n: int, stream: int = _STREAM_MODELS) -> list[int]:
    """``n`` reproducible, well-separated 32-bit seeds derived from ``seed``.

    Runs ``seed`` and ``seed + 1`` of a study do not share models (unlike ``seed + r``).
    """
    ss = np.random.SeedSequence([int(seed), int(stream)])
    return [int(child.generate_state(1)[0]) for child in ss.spawn(int(n))]


def _n_runs(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 2:
        raise ConfigError(f"{name} must be an integer >= 2 (runs to compare), got {value!r}")
    return int(value)


def _features(X: Any, name: str) -> np.ndarray:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"{name} must be a non-empty 2-D (events, features) array, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN/inf")
    return a


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.shape != (n,):
        raise InputError(f"{name} must have shape ({n},) to match the features, got {a.shape}")
    af = a.astype(np.float64)
    if not np.isfinite(af).all() or (af != np.round(af)).any() or (af < 0).any():
        raise InputError(f"{name} must hold non-negative integer class labels")
    return a.astype(np.int64)


def _weights(w: Any, n: int, name: str) -> np.ndarray | None:
    if w is None:
        return None
    a = np.asarray(w, dtype=np.float64)
    if a.shape != (n,):
        raise InputError(f"{name} must have shape ({n},) to match the features, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN/inf")
    return a


def _mask(m: Any, n: int, name: str) -> np.ndarray | None:
    if m is None:
        return None
    a = np.asarray(m)
    if a.shape != (n,):
        raise InputError(f"{name} must have shape ({n},), got {a.shape}")
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise InputError(f"{name} must be boolean")
        a = a.astype(bool)
    return a


def _kwargs_for(
    func: Any, kwargs: Mapping[str, Any] | None, name: str, reserved: Sequence[str]
) -> dict[str, Any]:
    """Check ``kwargs`` against ``func``'s keyword parameters; ``progress`` defaults off."""
    kw = dict(kwargs or {})
    params = inspect.signature(func).parameters
    allowed = {
        p
        for p, v in params.items()
        if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p not in reserved
    }
    for key in kw:
        if key in reserved:
            raise ConfigError(f"{name} must not set {key!r}: the workflow sets it per run")
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r} in {name} for {func.__name__}; valid keys: {sorted(allowed)}"
            )
    kw.setdefault("progress", False)
    return kw


def _attack_config(cfg: Mapping[str, Any] | ConservAttackConfig | None, name: str) -> dict:
    """Validate an attack configuration mapping (unknown keys raise ConfigError)."""
    if isinstance(cfg, ConservAttackConfig):
        cfg = cfg.to_dict()
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ConfigError(f"{name} must be a mapping of CONSERVAttack settings, got {cfg!r}")
    d = dict(cfg or {})
    d.setdefault("progress", False)
    try:
        return ConservAttackConfig.from_dict(d).to_dict()
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    except TypeError as exc:  # e.g. a list where a number belongs
        raise ConfigError(f"{name}: invalid value ({exc})") from exc


def _adapter(model: Any, d: int, cfg: Mapping[str, Any]) -> Any:
    """The adapter the attack itself uses (same threshold, output convention, batching)."""
    return as_adapter(
        model,
        n_features=d,
        output=cfg.get("model_output", "auto"),
        device=cfg.get("device", "cpu"),
        batch_size=int(cfg.get("batch_size", 16384)),
        threshold=float(cfg.get("threshold", 0.5)),
    )


def _clean_auroc(model: Any, X: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> float:
    """AUROC of the model on clean events (mean one-vs-rest for more than two classes).

    Ranked by float64 log-probabilities (the logit for binary models), so saturated
    float32 probabilities do not create artificial ties.
    """
    if len(np.unique(y)) < 2:
        return float("nan")
    lp = as_adapter(model, n_features=X.shape[1]).log_probabilities(X)
    if lp.shape[1] == 2:
        return auroc(y, lp[:, 1] - lp[:, 0], w)
    aucs = [auroc(y == c, lp[:, c], w) for c in range(lp.shape[1]) if (y == c).any()]
    return float(np.mean(aucs))


def _stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([int(seed), _STREAM_SPLIT])
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())


# ====================================================================== Section 8
@dataclass
class MisclassificationSignificance(_JsonMixin):
    """Repeated misclassification of clean events over R detector runs (paper eqs. 6-11).

    Attributes
    ----------
    n_runs, n_events
        R and N (events in the ``correct`` selection).
    per_run_accuracy
        ``acc_r = (N - flagged_r) / N`` per run (eq. 6).
    mean_accuracy, p
        ``ā`` (eq. 7) and the per-run misclassification probability ``p = 1 - ā`` (eq. 8).
    k, expected, observed
        ``k = 0..R``; ``E_k = N·Binom(k; R, p)`` (eqs. 9-10); ``O_k`` events flagged in
        exactly k runs.
    p_values
        ``P(X >= O_k | X ~ Poisson(E_k))`` (eq. 11); 1 where ``O_k = 0``.
    significant
        ``p_values < alpha`` per bin.
    counts, event_index
        Per selected event: in how many runs it was flagged, and its column in ``flags``.
    """

    n_runs: int
    n_events: int
    per_run_accuracy: np.ndarray
    mean_accuracy: float
    p: float
    k: np.ndarray
    expected: np.ndarray
    observed: np.ndarray
    p_values: np.ndarray
    significant: np.ndarray
    alpha: float
    counts: np.ndarray
    event_index: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def significant_bins(self) -> list[int]:
        """The k with a significant excess of events flagged exactly k times."""
        return [int(k) for k in self.k[self.significant]]

    def events_in_bins(self, bins: Sequence[int] | None = None) -> np.ndarray:
        """Column indices (into ``flags``) of events flagged k times for k in ``bins``
        (default: the significant bins with k >= 1)."""
        if bins is None:
            bins = [k for k in self.significant_bins if k >= 1]
        return self.event_index[np.isin(self.counts, np.asarray(list(bins), dtype=np.int64))]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "n_runs": self.n_runs,
                "n_events": self.n_events,
                "per_run_accuracy": self.per_run_accuracy,
                "mean_accuracy": self.mean_accuracy,
                "p": self.p,
                "alpha": self.alpha,
                "bins": [
                    {
                        "k": int(k),
                        "expected": float(e),
                        "observed": int(o),
                        "p_value": float(pv),
                        "significant": bool(s),
                    }
                    for k, e, o, pv, s in zip(
                        self.k,
                        self.expected,
                        self.observed,
                        self.p_values,
                        self.significant,
                        strict=True,
                    )
                ],
                "significant_bins": self.significant_bins,
                "provenance": self.provenance,
            }
        )


def repeated_misclassification(
    flags: np.ndarray, correct: np.ndarray | None = None, alpha: float = 0.05
) -> MisclassificationSignificance:
    """Test whether clean events are flagged repeatedly beyond independent chance.

    Parameters
    ----------
    flags
        ``(R, N)`` booleans: ``flags[r, i]`` is True when detector run ``r`` flagged clean
        event ``i`` as adversarial (R >= 2).
    correct
        Optional ``(N,)`` selection of the events that count (the paper's ``N_correct``,
        e.g. clean events the tagger classifies correctly, or events no detector trained
        on); default all.
    alpha
        Significance level per bin.  The R + 1 bins are tested separately; apply your own
        trials correction if you need one.

    Returns
    -------
    MisclassificationSignificance
    """
    f = np.asarray(flags)
    if f.ndim != 2:
        raise InputError(f"flags must be a 2-D (runs, events) array, got shape {f.shape}")
    if f.dtype != bool:
        if not np.isin(f, (0, 1)).all():
            raise InputError("flags must be boolean (or 0/1)")
        f = f.astype(bool)
    R, n_all = f.shape
    if R < 2:
        raise InputError(f"flags holds {R} run(s); repeated misclassification needs R >= 2")
    sel = _mask(correct, n_all, "correct")
    event_index = np.arange(n_all) if sel is None else np.flatnonzero(sel)
    N = len(event_index)
    if N == 0:
        raise InputError("no events to test: flags has no columns or `correct` selects none")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    fs = f[:, event_index]
    per_run_accuracy = (N - fs.sum(axis=1)) / N
    mean_accuracy = float(per_run_accuracy.mean())
    p = min(max(1.0 - mean_accuracy, 0.0), 1.0)
    k = np.arange(R + 1)
    expected = N * sps.binom.pmf(k, R, p)
    counts = fs.sum(axis=0).astype(np.int64)
    observed = np.bincount(counts, minlength=R + 1).astype(np.int64)
    p_values = np.asarray(sps.poisson.sf(observed - 1, expected), dtype=np.float64)
    p_values = np.where(observed == 0, 1.0, p_values)
    significant = p_values < float(alpha)
    out = MisclassificationSignificance(
        n_runs=int(R),
        n_events=int(N),
        per_run_accuracy=per_run_accuracy,
        mean_accuracy=mean_accuracy,
        p=float(p),
        k=k,
        expected=expected,
        observed=observed,
        p_values=p_values,
        significant=significant,
        alpha=float(alpha),
        counts=counts,
        event_index=event_index,
        provenance=provenance({"alpha": float(alpha)}, None, workflow="repeated_misclassification"),
    )
    log.info(
        "repeated misclassification: R=%d, N=%d, p=%.4g, significant bins %s",
        R,
        N,
        p,
        out.significant_bins or "none",
    )
    return out


def detector_runs(
    X_clean: np.ndarray,
    X_adv: np.ndarray,
    moved: np.ndarray | None,
    X_eval: np.ndarray,
    *,
    n_runs: int = 10,
    seed: int = 0,
    threshold: float = 0.5,
    clean_efficiency: float | None = None,
    weights: np.ndarray | None = None,
    **train_kwargs: Any,
) -> tuple[np.ndarray, list[DetectorResult]]:
    """Train ``n_runs`` adversarial detectors with different seeds and flag ``X_eval``.

    Parameters
    ----------
    X_clean, X_adv, moved, weights
        Paired clean/adversarial training events (see
        :func:`~advsyst.workflows.detector.train_detector`).
    X_eval
        Clean events to flag (N, d).  Use events no detector trained on, or the flags
        measure memorisation.
    n_runs, seed
        R >= 2 detectors, seeds from :func:`run_seeds` (recorded in ``info["seed"]``).
    threshold, clean_efficiency
        Working point: a fixed ``threshold`` on P(adversarial), or, when
        ``clean_efficiency`` is given, per run the quantile of P(adversarial) on that
        detector's held-out clean events that keeps this fraction unflagged.
    **train_kwargs
        Passed to :func:`train_detector` (``hidden``, ``epochs``, ``train_fraction``...).

    Returns
    -------
    (flags, detectors)
        ``flags[r, i]``: run r flags event i (P(adversarial) >= that run's threshold);
        the :class:`DetectorResult` list (their ``threshold`` is the one used).
    """
    R = _n_runs(n_runs, "n_runs")
    Xc = _features(X_clean, "X_clean")
    Xa = _features(X_adv, "X_adv")
    if Xa.shape != Xc.shape:
        raise InputError(f"X_clean {Xc.shape} and X_adv {Xa.shape} shapes differ")
    Xe = _features(X_eval, "X_eval")
    if Xe.shape[1] != Xc.shape[1]:
        raise InputError(f"X_eval has {Xe.shape[1]} features but X_clean has {Xc.shape[1]}")
    mv = _mask(moved, len(Xc), "moved")
    w = _weights(weights, len(Xc), "weights")
    if clean_efficiency is not None and not 0.0 < float(clean_efficiency) < 1.0:
        raise ConfigError(f"clean_efficiency must be in (0, 1), got {clean_efficiency!r}")
    kw = _kwargs_for(
        train_detector,
        train_kwargs,
        "detector train_kwargs",
        ("X_clean", "X_adv", "weights", "moved", "seed", "threshold"),
    )
    seeds = run_seeds(seed, R)
    flags = np.zeros((R, len(Xe)), dtype=bool)
    detectors: list[DetectorResult] = []
    for r, s in enumerate(seeds):
        t0 = time.perf_counter()
        det = train_detector(Xc, Xa, w, moved=mv, seed=s, threshold=float(threshold), **kw)
        if clean_efficiency is not None:
            p_clean = det.p_adversarial(Xc[det.test_events])
            det.threshold = float(np.quantile(p_clean, float(clean_efficiency)))
        flags[r] = det.p_adversarial(Xe) >= det.threshold
        det.info.update({"seed": s, "run": r, "threshold_mode": _thr_mode(clean_efficiency)})
        detectors.append(det)
        log.info(
            "detector run %d/%d (seed %d): AUROC %.4f, threshold %.4f, flags %.2f%% of %d "
            "clean events (%.1fs)",
            r + 1,
            R,
            s,
            det.auroc,
            det.threshold,
            100 * flags[r].mean(),
            len(Xe),
            time.perf_counter() - t0,
        )
    return flags, detectors


def _thr_mode(clean_efficiency: float | None) -> str:
    return "fixed" if clean_efficiency is None else f"clean_efficiency={clean_efficiency}"


# ====================================================================== Section 7: grey box
@dataclass
class GreyBoxResult(_JsonMixin):
    """White-box and grey-box fooling ratios of R identically configured taggers.

    Attributes
    ----------
    matrix, errors
        ``(R, R)``: ``matrix[a, t]`` is the fooling ratio of the adversaries generated
        against model ``a`` (source) evaluated on model ``t`` (target): the fraction (weighted,
        within the attack mask) of test events whose model-``t`` prediction differs between
        the clean and the adversarial features.  ``errors`` are the binomial standard errors.
    attacks, models
        The white-box :class:`AttackResult` of each model on the shared test set, and the
        models.
    clean_auroc
        Each model's AUROC on the clean test set.
    seeds
        Training seeds of the models (from :func:`run_seeds`).
    test_index, attack_mask
        Rows of ``X`` forming the test set; the test events that were attacked and counted.
    """

    matrix: np.ndarray
    errors: np.ndarray
    attacks: list[AttackResult]
    models: list[Classifier]
    clean_auroc: np.ndarray
    seeds: list[int]
    seed: int
    test_index: np.ndarray
    attack_mask: np.ndarray
    attack_config: dict[str, Any]
    train_kwargs: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def white_box(self) -> np.ndarray:
        """The diagonal: each model attacked with its own gradients."""
        return np.diag(self.matrix).copy()

    @property
    def grey_box(self) -> np.ndarray:
        """The off-diagonal entries (row-major): adversaries shown to the other models."""
        return self.matrix[~np.eye(self.n_models, dtype=bool)]

    @property
    def white_box_mean(self) -> float:
        return float(self.white_box.mean())

    @property
    def grey_box_mean(self) -> float:
        return float(self.grey_box.mean())

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "matrix": self.matrix,
                "errors": self.errors,
                "orientation": "matrix[source, target]: adversaries of model `source` "
                "evaluated on model `target`",
                "white_box": self.white_box,
                "white_box_mean": self.white_box_mean,
                "grey_box_mean": self.grey_box_mean,
                "clean_auroc": self.clean_auroc,
                "seeds": self.seeds,
                "seed": self.seed,
                "n_test_events": int(len(self.test_index)),
                "n_attacked_events": int(self.attack_mask.sum()),
                "attacks": [a.summary() for a in self.attacks],
                "attack_config": self.attack_config,
                "train_kwargs": self.train_kwargs,
                "provenance": self.provenance,
            }
        )


def grey_box_matrix(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_models: int = 5,
    attack_config: Mapping[str, Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    weights: np.ndarray | None = None,
    test_fraction: float = 0.5,
    attack_mask: np.ndarray | None = None,
) -> GreyBoxResult:
    """Train R taggers that differ only in their seed, attack each, cross-evaluate.

    The data are split once (stratified, seeded) into a training and a test set shared by
    all models.  Each model is attacked on the test set with CONSERVAttack using the same
    ``attack_config`` (white box); the R adversarial sets are then shown to every model.

    Parameters
    ----------
    X, y, weights
        Features (n, d), integer labels and optional event weights (used in training, in the
        attack's statistics and in the fooling ratios).
    n_models
        R >= 2.
    attack_config
        :class:`ConservAttackConfig` fields (aliases allowed); unknown keys raise
        :class:`ConfigError`.  ``progress`` defaults to False.
    train_kwargs
        Keyword arguments of :func:`~advsyst.models.train_classifier` except ``seed``.
    seed
        Derives the split and the model seeds.
    test_fraction
        Fraction of each class in the shared test set.
    attack_mask
        Optional (n,) selection over ``X`` of the events that may be attacked (e.g.
        background only); the fooling ratios count the attacked test events only.

    Returns
    -------
    GreyBoxResult
    """
    R = _n_runs(n_models, "n_models")
    Xa = _features(X, "X")
    n, d = Xa.shape
    ya = _labels(y, n, "y")
    w = _weights(weights, n, "weights")
    am_all = _mask(attack_mask, n, "attack_mask")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    acfg = _attack_config(attack_config, "attack_config")
    tkw = _kwargs_for(train_classifier, train_kwargs, "train_kwargs", ("X", "y", "w", "seed"))
    tr, te = _stratified_split(ya, float(test_fraction), seed)
    Xtr, ytr, Xte, yte = Xa[tr], ya[tr], Xa[te], ya[te]
    wtr = None if w is None else w[tr]
    wte = None if w is None else w[te]
    am = np.ones(len(te), dtype=bool) if am_all is None else am_all[te]
    if not am.any():
        raise InputError("attack_mask selects no test event")
    seeds = run_seeds(seed, R)
    models: list[Classifier] = []
    attacks: list[AttackResult] = []
    aucs = np.zeros(R)
    for r, s in enumerate(seeds):
        t0 = time.perf_counter()
        model, _ = train_classifier(Xtr, ytr, wtr, seed=s, **tkw)
        aucs[r] = _clean_auroc(model, Xte, yte, wte)
        res = ConservAttack(acfg).run(Xte, model, y=yte, weights=wte, attack_mask=am)
        models.append(model)
        attacks.append(res)
        log.info(
            "grey-box run %d/%d (seed %d): clean AUROC %.4f, white-box fooling ratio %.4f (%.1fs)",
            r + 1,
            R,
            s,
            aucs[r],
            res.fooling_ratio,
            time.perf_counter() - t0,
        )
    matrix = np.zeros((R, R))
    errors = np.zeros((R, R))
    for t, model in enumerate(models):
        adapter = _adapter(model, d, acfg)
        pred_clean = adapter.predict(Xte)
        for a, res in enumerate(attacks):
            matrix[a, t], errors[a, t] = fooling_ratio_with_error(
                pred_clean, adapter.predict(res.X_adv), am, wte
            )
    out = GreyBoxResult(
        matrix=matrix,
        errors=errors,
        attacks=attacks,
        models=models,
        clean_auroc=aucs,
        seeds=seeds,
        seed=int(seed),
        test_index=te,
        attack_mask=am,
        attack_config=acfg,
        train_kwargs=tkw,
        provenance=provenance(
            {
                "attack_config": acfg,
                "train_kwargs": tkw,
                "n_models": R,
                "test_fraction": test_fraction,
            },
            int(seed),
            workflow="grey_box_matrix",
            model_seeds=seeds,
        ),
    )
    log.info(
        "grey-box matrix (%d models): white-box mean %.4f, grey-box mean %.4f",
        R,
        out.white_box_mean,
        out.grey_box_mean,
    )
    return out


# ====================================================================== Sections 6-7: training
def _numeric_fields() -> dict[str, type]:
    """CONSERVAttack settings that can be drawn from a range, with their type."""
    out: dict[str, type] = {}
    for f in dataclasses.fields(ConservAttackConfig):
        default = f.default
        if f.name == "num_candidates":
            out[f.name] = int
        elif isinstance(default, bool):
            continue
        elif isinstance(default, int):
            out[f.name] = int
        elif isinstance(default, float):
            out[f.name] = float
    return out


_NUMERIC = _numeric_fields()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _parse_ranges(ranges: Mapping[str, Any] | None) -> dict[str, tuple[str, Any]]:
    """Validate ``attack_ranges``: name -> ("range", (lo, hi)) or ("fixed", value)."""
    if ranges is not None and not isinstance(ranges, Mapping):
        raise ConfigError(f"attack_ranges must be a mapping, got {ranges!r}")
    known = set(ConservAttackConfig.field_names())
    out: dict[str, tuple[str, Any]] = {}
    for key, val in dict(ranges or {}).items():
        name = ALIASES.get(key, key)
        if name not in known:
            raise ConfigError(
                f"unknown CONSERVAttack config key {key!r} in attack_ranges; valid keys: "
                f"{sorted(known)} (aliases: {sorted(ALIASES)})"
            )
        if name in out:
            raise ConfigError(f"attack_ranges sets {name!r} twice (through an alias)")
        if name in _NUMERIC and isinstance(val, list | tuple | np.ndarray):
            if len(val) != 2 or not all(_is_number(v) for v in val):
                raise ConfigError(
                    f"attack_ranges[{key!r}] must be a number or a (low, high) pair, got {val!r}"
                )
            lo, hi = float(val[0]), float(val[1])
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ConfigError(f"attack_ranges[{key!r}] needs finite low <= high, got {val!r}")
            if _NUMERIC[name] is int and (lo != round(lo) or hi != round(hi)):
                raise ConfigError(f"attack_ranges[{key!r}] is an integer setting, got {val!r}")
            out[name] = ("range", (lo, hi))
        else:
            out[name] = ("fixed", val)
    return out


def draw_attack_parameters(
    attack_ranges: Mapping[str, Any] | None, seed: int, round_index: int
) -> dict[str, Any]:
    """Draw one round's attack settings: each ``(low, high)`` uniformly (integers inclusive),
    fixed values as given.  Reproducible: depends only on ``seed``, ``round_index`` and the
    ranges, and is validated as a full :class:`ConservAttackConfig`.

    Returns the drawn/fixed settings only (canonical names), not the defaults.
    """
    spec = _parse_ranges(attack_ranges)
    rng = np.random.default_rng([int(seed), _STREAM_PARAMS, int(round_index)])
    out: dict[str, Any] = {}
    for name in ConservAttackConfig.field_names():  # a fixed order: reproducible draws
        if name not in spec:
            continue
        kind, val = spec[name]
        if kind == "fixed":
            out[name] = val
        elif _NUMERIC[name] is int:
            out[name] = int(rng.integers(int(val[0]), int(val[1]) + 1))
        else:
            out[name] = float(rng.uniform(val[0], val[1]))
    _attack_config(out, f"attack settings drawn for round {round_index}")
    return out


def augment(
    X: np.ndarray,
    y: np.ndarray,
    model: Any,
    attack_config: Mapping[str, Any] | None = None,
    weights: np.ndarray | None = None,
    *,
    select: str = "fooled",
    into: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    attack_mask: np.ndarray | None = None,
    return_attack: bool = False,
) -> Any:
    """Attack ``(X, y)`` against ``model`` and append the adversaries with their true labels.

    Parameters
    ----------
    X, y, weights
        Clean events to attack, their true labels and weights (adversaries inherit both).
    model
        The model to attack (white box).
    attack_config
        CONSERVAttack settings (``progress`` defaults to False).
    select
        ``"fooled"`` (default, as the paper: adversaries that flip the model's decision,
        at most one per clean event) or ``"moved"`` (every event the attack changed).
    into
        ``(X0, y0, w0)`` to append to (e.g. a cumulative training set); default ``(X, y,
        weights)``.
    attack_mask
        Events that may be attacked (default all).
    return_attack
        Also return the :class:`AttackResult`.

    Returns
    -------
    (X_aug, y_aug, w_aug) or (X_aug, y_aug, w_aug, attack)
        The base set followed by the selected adversaries; ``w_aug`` are unit weights when
        neither the base nor ``weights`` carried any.
    """
    if select not in ("fooled", "moved"):
        raise ConfigError(f"select must be 'fooled' or 'moved', got {select!r}")
    Xa = _features(X, "X")
    n, d = Xa.shape
    ya = _labels(y, n, "y")
    w = _weights(weights, n, "weights")
    am = _mask(attack_mask, n, "attack_mask")
    acfg = _attack_config(attack_config, "attack_config")
    if into is None:
        X0, y0, w0 = Xa, ya, w
    else:
        if len(into) != 3:
            raise InputError("into must be a tuple (X0, y0, w0)")
        X0 = _features(into[0], "into[0] (X0)")
        if X0.shape[1] != d:
            raise InputError(f"into[0] (X0) has {X0.shape[1]} features but X has {d}")
        y0 = _labels(into[1], len(X0), "into[1] (y0)")
        w0 = _weights(into[2], len(X0), "into[2] (w0)")
    res = ConservAttack(acfg).run(Xa, model, y=ya, weights=w, attack_mask=am)
    pick = res.fooled if select == "fooled" else res.moved
    idx = np.flatnonzero(pick)
    X_aug = np.concatenate([X0, res.X_adv[idx]])
    y_aug = np.concatenate([y0, ya[idx]])
    w_base = np.ones(len(X0)) if w0 is None else w0
    w_new = np.ones(len(idx)) if w is None else w[idx]
    w_aug = np.concatenate([w_base, w_new])
    log.info(
        "augment: attack fooling ratio %.4f, %d %s adversaries added (%d -> %d events)",
        res.fooling_ratio,
        len(idx),
        select,
        len(X0),
        len(X_aug),
    )
    if return_attack:
        return X_aug, y_aug, w_aug, res
    return X_aug, y_aug, w_aug


@dataclass
class TrainingRound:
    """One round of :func:`adversarial_training` (round 0 is the model on clean data).

    ``train_size`` is the size of the set the round's model was trained on; ``n_added``
    the adversaries appended in this round; ``params`` the drawn attack settings;
    ``train_attack_fooling_ratio`` the white-box fooling ratio of that training-set attack
    (NaN in round 0).  ``clean_auroc`` is on the clean test set;
    ``test_fooling_ratio`` (± error) is the fixed test attack run afresh against this
    round's model; ``transfer_fooling_ratio`` (± error) shows the round-0 test adversaries
    to this round's model (the paper's comparison).
    """

    round: int
    train_size: int
    n_added: int
    params: dict[str, Any]
    train_seed: int
    attack_seed: int | None
    train_attack_fooling_ratio: float
    clean_auroc: float
    test_fooling_ratio: float
    test_fooling_ratio_error: float
    transfer_fooling_ratio: float
    transfer_fooling_ratio_error: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


@dataclass
class AdversarialTrainingResult(_JsonMixin):
    """The rounds of :func:`adversarial_training` with every model and attack.

    ``models[r]``, ``test_attacks[r]`` belong to round ``r`` (0..K); ``train_attacks[r-1]``
    produced the adversaries added in round ``r``.  ``X_train``, ``y_train``, ``w_train`` are
    the final cumulative training set and ``origin`` the round each of its rows entered
    (0 = clean events).
    """

    rounds: list[TrainingRound]
    models: list[Classifier]
    test_attacks: list[AttackResult]
    train_attacks: list[AttackResult]
    X_train: np.ndarray
    y_train: np.ndarray
    w_train: np.ndarray
    origin: np.ndarray
    seed: int
    attack_ranges: dict[str, Any]
    test_attack: dict[str, Any]
    train_kwargs: dict[str, Any]
    select: str
    attack_model: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        """One recorded quantity over the rounds, e.g. ``column("clean_auroc")``."""
        if name not in {f.name for f in dataclasses.fields(TrainingRound)}:
            raise InputError(f"unknown round quantity {name!r}")
        return np.asarray([getattr(r, name) for r in self.rounds])

    @property
    def train_sizes(self) -> np.ndarray:
        return self.column("train_size")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "rounds": [r.to_dict() for r in self.rounds],
                "seed": self.seed,
                "attack_ranges": self.attack_ranges,
                "test_attack": self.test_attack,
                "train_kwargs": self.train_kwargs,
                "select": self.select,
                "attack_model": self.attack_model,
                "final_train_size": int(len(self.X_train)),
                "provenance": self.provenance,
            }
        )


def adversarial_training(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    rounds: int = 5,
    attack_ranges: Mapping[str, Any] | None = None,
    test_attack: Mapping[str, Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    weights: np.ndarray | None = None,
    test_weights: np.ndarray | None = None,
    select: str = "fooled",
    attack_model: str = "current",
) -> AdversarialTrainingResult:
    """Cumulative adversarial training (augmentation) with randomised attack settings.

    Round 0 trains a model on the clean training set.  Round ``r = 1..K`` draws attack
    settings from ``attack_ranges`` (:func:`draw_attack_parameters`), attacks the clean
    training set against the current model (or the round-0 model with
    ``attack_model="initial"``), appends the selected adversaries with their true labels
    to the cumulative training set (:func:`augment`) and trains a new model from scratch
    on it.  After every round the clean test AUROC, the fooling ratio of the fixed
    ``test_attack`` run against the round's model, and that of the round-0 test
    adversaries shown to it are recorded.

    Parameters
    ----------
    X_train, y_train, X_test, y_test, weights, test_weights
        Clean training and test sets, true labels, optional event weights.
    rounds
        K >= 1 augmentation rounds.
    attack_ranges
        CONSERVAttack settings for the training-set attacks: a ``(low, high)`` pair of a
        numeric setting is drawn uniformly each round (integers inclusive), anything else is
        fixed (the paper's Table 15).  Unknown keys raise :class:`ConfigError`.
    test_attack
        Fixed CONSERVAttack settings of the test attack (the paper's Table 16).
    train_kwargs
        :func:`~advsyst.models.train_classifier` arguments except ``seed``.
    seed
        Derives the training seeds, the parameter draws and the attack seeds.
    select
        Which adversaries are added (see :func:`augment`).
    attack_model
        ``"current"`` (the latest model) or ``"initial"`` (always the round-0 model).

    Returns
    -------
    AdversarialTrainingResult
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")
    K = int(rounds)
    if select not in ("fooled", "moved"):
        raise ConfigError(f"select must be 'fooled' or 'moved', got {select!r}")
    if attack_model not in ("current", "initial"):
        raise ConfigError(f"attack_model must be 'current' or 'initial', got {attack_model!r}")
    Xtr = _features(X_train, "X_train")
    n, d = Xtr.shape
    ytr = _labels(y_train, n, "y_train")
    Xte = _features(X_test, "X_test")
    if Xte.shape[1] != d:
        raise InputError(f"X_test has {Xte.shape[1]} features but X_train has {d}")
    yte = _labels(y_test, len(Xte), "y_test")
    wtr = _weights(weights, n, "weights")
    wte = _weights(test_weights, len(Xte), "test_weights")
    ranges = dict(attack_ranges or {})
    _parse_ranges(ranges)
    for r in range(1, K + 1):  # fail on bad settings before any training
        draw_attack_parameters(ranges, seed, r)
    tcfg = _attack_config(test_attack, "test_attack")
    tkw = _kwargs_for(train_classifier, train_kwargs, "train_kwargs", ("X", "y", "w", "seed"))
    train_seeds = run_seeds(seed, K + 1)
    attack_seeds = run_seeds(seed, K + 1, stream=_STREAM_ATTACK)

    X_cur, y_cur = Xtr, ytr
    w_cur = np.ones(n) if wtr is None else wtr
    origin = np.zeros(n, dtype=np.int64)
    models: list[Classifier] = []
    test_attacks: list[AttackResult] = []
    train_attacks: list[AttackResult] = []
    records: list[TrainingRound] = []
    for r in range(K + 1):
        t0 = time.perf_counter()
        params: dict[str, Any] = {}
        n_added, attack_seed, train_fr = 0, None, float("nan")
        if r > 0:
            params = draw_attack_parameters(ranges, seed, r)
            cfg_r = dict(params)
            cfg_r.setdefault("seed", attack_seeds[r])
            attack_seed = int(cfg_r["seed"])
            target = models[-1] if attack_model == "current" else models[0]
            size_before = len(X_cur)
            X_cur, y_cur, w_cur, res = augment(
                Xtr,
                ytr,
                target,
                cfg_r,
                wtr,
                select=select,
                into=(X_cur, y_cur, w_cur),
                return_attack=True,
            )
            n_added = len(X_cur) - size_before
            origin = np.concatenate([origin, np.full(n_added, r, dtype=np.int64)])
            train_attacks.append(res)
            train_fr = res.fooling_ratio
        model, _ = train_classifier(X_cur, y_cur, w_cur, seed=train_seeds[r], **tkw)
        models.append(model)
        auc = _clean_auroc(model, Xte, yte, wte)
        tres = ConservAttack(tcfg).run(Xte, model, y=yte, weights=wte)
        test_attacks.append(tres)
        adapter = _adapter(model, d, tcfg)
        pred_clean = adapter.predict(Xte)
        fr, fr_err = fooling_ratio_with_error(pred_clean, adapter.predict(tres.X_adv), None, wte)
        xfr, xfr_err = fooling_ratio_with_error(
            pred_clean, adapter.predict(test_attacks[0].X_adv), None, wte
        )
        rec = TrainingRound(
            round=r,
            train_size=int(len(X_cur)),
            n_added=int(n_added),
            params=params,
            train_seed=int(train_seeds[r]),
            attack_seed=attack_seed,
            train_attack_fooling_ratio=float(train_fr),
            clean_auroc=float(auc),
            test_fooling_ratio=float(fr),
            test_fooling_ratio_error=float(fr_err),
            transfer_fooling_ratio=float(xfr),
            transfer_fooling_ratio_error=float(xfr_err),
            seconds=time.perf_counter() - t0,
        )
        records.append(rec)
        log.info(
            "adversarial training round %d/%d: +%d adversaries (train attack fooling ratio "
            "%.4f) -> %d training events; clean AUROC %.4f, test fooling ratio %.4f, round-0 "
            "adversaries %.4f; params %s (%.1fs)",
            r,
            K,
            n_added,
            train_fr,
            len(X_cur),
            auc,
            fr,
            xfr,
            params or "-",
            rec.seconds,
        )
    return AdversarialTrainingResult(
        rounds=records,
        models=models,
        test_attacks=test_attacks,
        train_attacks=train_attacks,
        X_train=X_cur,
        y_train=y_cur,
        w_train=w_cur,
        origin=origin,
        seed=int(seed),
        attack_ranges=to_jsonable(ranges),
        test_attack=tcfg,
        train_kwargs=tkw,
        select=select,
        attack_model=attack_model,
        provenance=provenance(
            {
                "rounds": K,
                "attack_ranges": ranges,
                "test_attack": tcfg,
                "train_kwargs": tkw,
                "select": select,
                "attack_model": attack_model,
            },
            int(seed),
            workflow="adversarial_training",
            train_seeds=train_seeds,
            attack_seeds=attack_seeds[1:],
        ),
    )
