"""Brute-force CONSERVAttack scoring, the way the public reference code does it.

For every event, every movable feature and every grid candidate the reference code moves
the entry, recomputes the moved feature's *full* histogram over all ``n`` events
(``np.histogram``) and the *full* Pearson correlation matrix (``np.corrcoef`` over the
``n x d`` data), scores ``alpha*JSD_j + beta*dFN`` and moves back: O(n*d^2) per candidate.

It is the baseline of ``benchmarks/attack_throughput.py`` and, because it shares no code with
:mod:`advsyst.stats`, also an independent check of the statistics
(``tests/test_benchmarks_smoke.py``).  Conventions follow advsyst (not the reference code's
defects, see DESIGN.md): bins are ``num_bins`` equal-width bins on each feature's clean
[min, max] plus an under- and an overflow slot, JSD is the base-2 Jensen-Shannon *distance*,
dFN = ||C - C0||_F / ||C0||_F with unweighted Pearson correlations, the budget is
cumulative and an inadmissible candidate is never applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.special import rel_entr

__all__ = ["BruteForceReference", "BruteForceStats"]


@dataclass
class BruteForceStats:
    """What :meth:`BruteForceReference.attack_events` did and how long it took."""

    n_events: int
    n_evaluations: int
    n_moves: int
    seconds: float

    @property
    def seconds_per_evaluation(self) -> float:
        return self.seconds / max(self.n_evaluations, 1)


class BruteForceReference:
    """Clean reference statistics of ``X0`` and brute-force evaluation of moves.

    Parameters
    ----------
    X0
        Clean data (n, d); defines the bins, the clean histograms and the clean correlation.
    num_bins
        Inner histogram bins per feature.
    """

    def __init__(self, X0: np.ndarray, num_bins: int = 200):
        self.X0 = np.array(X0, dtype=np.float64)
        self.num_bins = int(num_bins)
        lo, hi = self.X0.min(axis=0), self.X0.max(axis=0)
        self.lo = lo
        self.hi = np.where(hi > lo, hi, lo + 1.0)
        self.H0 = [self.histogram(self.X0[:, j], j) for j in range(self.X0.shape[1])]
        self.C0 = np.corrcoef(self.X0, rowvar=False)
        self.norm0 = float(np.linalg.norm(self.C0))

    # ------------------------------------------------------------------ statistics
    def histogram(self, col: np.ndarray, j: int) -> np.ndarray:
        """Counts of feature ``j``: underflow, ``num_bins`` inner bins, overflow (O(n))."""
        inner, _ = np.histogram(col, bins=self.num_bins, range=(self.lo[j], self.hi[j]))
        under = np.count_nonzero(col < self.lo[j])
        over = np.count_nonzero(col > self.hi[j])
        return np.concatenate(([under], inner, [over])).astype(np.float64)

    @staticmethod
    def js_distance(h0: np.ndarray, h: np.ndarray) -> float:
        """Base-2 Jensen-Shannon distance of two count vectors."""
        p, q = h0 / h0.sum(), h / h.sum()
        m = 0.5 * (p + q)
        div = 0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / np.log(2.0)
        return float(np.sqrt(max(div, 0.0)))

    def jsd_feature(self, X: np.ndarray, j: int) -> float:
        """JSD of feature ``j`` of ``X`` to the clean histogram (full recount)."""
        return self.js_distance(self.H0[j], self.histogram(X[:, j], j))

    def dfn(self, X: np.ndarray) -> float:
        """||corrcoef(X) - C0||_F / ||C0||_F (full recomputation, O(n*d^2))."""
        return float(np.linalg.norm(np.corrcoef(X, rowvar=False) - self.C0) / self.norm0)

    def evaluate(self, X: np.ndarray, i: int, j: int, delta: float) -> tuple[float, float]:
        """(JSD_j, dFN) of ``X`` with ``X[i, j] += delta``; ``X`` is restored afterwards."""
        old = X[i, j]
        X[i, j] = old + delta
        try:
            return self.jsd_feature(X, j), self.dfn(X)
        finally:
            X[i, j] = old

    # ------------------------------------------------------------------ attack
    def attack_events(
        self,
        X: np.ndarray,
        events: np.ndarray,
        sign: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        min_change: float = 0.005,
        step: float = 0.01,
        max_candidates: int = 2000,
        alpha: float = 6.5,
        beta: float = 1.0,
        max_jsd: float = 0.02,
        max_dfn: float = 0.02,
    ) -> BruteForceStats:
        """Sequential reference attack of ``events`` (moves ``X`` in place).

        For each event and feature (in order) every grid candidate ``min_change + k*step``
        (k < ``max_candidates``) in the direction ``sign[t, j]`` up to the bound is
        evaluated by brute force; the best-scoring admissible one (every budget checked on
        the cumulative statistics) is applied, none if no candidate is admissible.
        """
        t0 = time.perf_counter()
        n_eval = n_moves = 0
        d = X.shape[1]
        for t, i in enumerate(np.asarray(events)):
            for j in range(d):
                s = float(sign[t, j])
                if s == 0.0:
                    continue
                dist = hi[j] - X[i, j] if s > 0 else X[i, j] - lo[j]
                if dist < min_change:
                    continue
                n_c = min(int((dist - min_change) / step) + 1, int(max_candidates))
                best_sc, best_d = np.inf, 0.0
                for k in range(n_c):
                    delta = s * (min_change + k * step)
                    jsd_j, dfn = self.evaluate(X, i, j, delta)
                    n_eval += 1
                    sc = alpha * jsd_j + beta * dfn
                    if jsd_j <= max_jsd and dfn <= max_dfn and sc < best_sc:
                        best_sc, best_d = sc, delta
                if best_d != 0.0:
                    X[i, j] += best_d
                    n_moves += 1
        return BruteForceStats(
            n_events=len(events),
            n_evaluations=n_eval,
            n_moves=n_moves,
            seconds=time.perf_counter() - t0,
        )
