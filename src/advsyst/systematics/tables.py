"""Uncertainty tables: one row per region x process x variation.

Each row holds the nominal tagged yield (events with score >= working point), the
tagged yield with the varied features, the band ``nominal * (1 +- FR_tagged)`` -- with
``FR_tagged`` the fooling ratio of the *tagged* events of that region and process (the
weighted fraction of them whose predicted class flips), not of all its events -- the
fooling ratio of all events of the region (paper eq. 5, the number the verdict uses)
and the detector-corrected fooling ratio with their binomial uncertainties, the
detector's clean-event efficiency on simulation and on data at the detector threshold,
and a verdict against the physics-systematics budget.

Verdict rule
------------
With FR the fooling ratio, FRc the corrected one (when detector decisions exist) and
``pull = (eff_data - eff_mc) / sqrt(err_mc^2 + err_data^2)`` at the detector threshold:

1. ``|pull| >= max_abs_pull`` (data and simulation detector efficiencies are
   inconsistent): the detector cannot be trusted on data; verdict
   ``"extra uncertainty: detector data/simulation inconsistent"``, extra = FR (the
   full, uncorrected fooling ratio).
2. ``|pull| < max_abs_pull`` and FRc exists: x = FRc (``fr_used = "corrected"``).
3. Otherwise (no detector decisions, or no data efficiency to validate the detector):
   x = FR (``fr_used = "uncorrected"``) — an unvalidated detector earns no credit.

In cases 2 and 3: x <= budget gives ``"no extra uncertainty"`` (extra = 0); otherwise
``"extra uncertainty"`` with extra = x - budget, the part of the adversarial
susceptibility the physics systematics do not cover.  ``extra_uncertainty`` is relative
to the tagged yield; ``extra_yield = extra_uncertainty * nominal_yield``.  Central
values are compared; their uncertainties are reported, not used.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from advsyst._io import atomic_write_json, atomic_write_text, provenance
from advsyst.errors import ConfigError, InputError
from advsyst.systematics.bands import (
    DetectorEfficiency,
    band_limits,
    fooling_ratio,
    tagged_fooling_ratio,
    tagged_yield,
)
from advsyst.systematics.histograms import VariationOutcome

__all__ = [
    "TableRow",
    "UncertaintyTable",
    "build_uncertainty_table",
    "verdict",
    "NO_EXTRA",
    "EXTRA",
    "EXTRA_INCONSISTENT",
]

NO_EXTRA = "no extra uncertainty"
EXTRA = "extra uncertainty"
EXTRA_INCONSISTENT = "extra uncertainty: detector data/simulation inconsistent"

_NAN = float("nan")


@dataclass(frozen=True)
class TableRow:
    """One region x process x variation line of an :class:`UncertaintyTable`."""

    region: str
    process: str
    variation: str
    n_events: int
    nominal_yield: float
    nominal_yield_err: float
    varied_yield: float
    band_fooling_ratio: float
    band_fooling_ratio_err: float
    band_up: float
    band_down: float
    fooling_ratio: float
    fooling_ratio_err: float
    corrected_fooling_ratio: float
    corrected_fooling_ratio_err: float
    detector_threshold: float
    detector_eff_mc: float
    detector_eff_mc_err: float
    detector_eff_data: float
    detector_eff_data_err: float
    detector_pull: float
    detector_consistent: bool | None
    budget: float
    fr_used: str
    verdict: str
    extra_uncertainty: float
    extra_yield: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(
    fr: float,
    corrected_fr: float | None,
    budget: float,
    consistent: bool | None,
) -> tuple[str, float, str]:
    """Apply the module's verdict rule; returns ``(verdict, extra, fr_used)``."""
    if consistent is False:
        return EXTRA_INCONSISTENT, float(fr), "uncorrected"
    if consistent and corrected_fr is not None and math.isfinite(corrected_fr):
        x, used = float(corrected_fr), "corrected"
    else:
        x, used = float(fr), "uncorrected"
    if x <= budget:
        return NO_EXTRA, 0.0, used
    return EXTRA, x - float(budget), used


def _lookup(spec: Any, region: str, process: str, what: str) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    for key in ((region, process), region):
        if key in spec:
            return spec[key]
    if "*" in spec:
        return spec["*"]
    raise ConfigError(f"no {what} given for region {region!r}, process {process!r}")


def _flatten(
    outcomes: Mapping[str, Mapping[str, VariationOutcome]] | Iterable[VariationOutcome],
) -> list[VariationOutcome]:
    if isinstance(outcomes, Mapping):
        flat = [o for per in outcomes.values() for o in per.values()]
    else:
        flat = list(outcomes)
    for o in flat:
        if not isinstance(o, VariationOutcome):
            raise InputError(f"expected VariationOutcome objects, got {type(o).__name__}")
    return flat


def build_uncertainty_table(
    outcomes: Mapping[str, Mapping[str, VariationOutcome]] | Iterable[VariationOutcome],
    *,
    budget: float | Mapping[Any, float],
    working_point: float = 0.5,
    detector: DetectorEfficiency | Mapping[Any, DetectorEfficiency | None] | None = None,
    max_abs_pull: float = 2.0,
) -> UncertaintyTable:
    """Build the table from evaluated variations.

    Parameters
    ----------
    outcomes
        ``{process: {variation: VariationOutcome}}`` (as from
        :class:`~advsyst.systematics.histograms.SystematicsBuilder`) or a flat iterable.
    budget
        Physics-systematics budget on the fraction of misclassified events: a number,
        or a mapping keyed by ``(region, process)``, ``region`` or ``"*"``.
    working_point
        Tagged events have nominal (resp. varied) score >= ``working_point``.
    detector
        Detector clean-event efficiencies (simulation and data) at the working
        detector threshold: one :class:`DetectorEfficiency` for all rows, or a mapping
        keyed like ``budget``; None when no detector is used.
    max_abs_pull
        Data and simulation efficiencies are consistent when ``|pull| < max_abs_pull``.
    """
    rows: list[TableRow] = []
    for o in _flatten(outcomes):
        for region, m in o.region_masks.items():
            b = float(_lookup(budget, region, o.process, "budget"))
            det = _lookup(detector, region, o.process, "detector efficiency") if detector else None
            fr, corr = fooling_ratio(o.nominal_pred, o.up_pred, o.weights, m, o.detected)
            nom, nom_err = tagged_yield(o.nominal_score, working_point, o.weights, m)
            varied, _ = tagged_yield(o.up_score, working_point, o.weights, m)
            frt, _ = tagged_fooling_ratio(
                o.nominal_score, o.nominal_pred, o.up_pred, working_point, o.weights, m
            )
            band_up, band_down = band_limits(nom, frt.value)
            consistent = det.consistent(max_abs_pull) if det is not None else None
            corr_value = None if corr is None else corr.value
            text, extra, used = verdict(fr.value, corr_value, b, consistent)
            rows.append(
                TableRow(
                    region=region,
                    process=o.process,
                    variation=o.name,
                    n_events=int(np.sum(m)),
                    nominal_yield=nom,
                    nominal_yield_err=nom_err,
                    varied_yield=varied,
                    band_fooling_ratio=frt.value,
                    band_fooling_ratio_err=frt.error,
                    band_up=band_up,
                    band_down=band_down,
                    fooling_ratio=fr.value,
                    fooling_ratio_err=fr.error,
                    corrected_fooling_ratio=_NAN if corr is None else corr.value,
                    corrected_fooling_ratio_err=_NAN if corr is None else corr.error,
                    detector_threshold=_NAN if det is None else det.threshold,
                    detector_eff_mc=_NAN if det is None else det.mc.value,
                    detector_eff_mc_err=_NAN if det is None else det.mc.error,
                    detector_eff_data=_NAN if det is None or det.data is None else det.data.value,
                    detector_eff_data_err=_NAN
                    if det is None or det.data is None
                    else det.data.error,
                    detector_pull=_NAN if det is None else det.pull,
                    detector_consistent=consistent,
                    budget=b,
                    fr_used=used,
                    verdict=text,
                    extra_uncertainty=extra,
                    extra_yield=extra * nom,
                )
            )
    return UncertaintyTable(
        rows=rows, working_point=float(working_point), max_abs_pull=float(max_abs_pull)
    )


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool | str):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}"


def _pm(v: float, e: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{_fmt(v)} ± {_fmt(e)}"


@dataclass
class UncertaintyTable:
    """Rows of adversarial-uncertainty numbers with writers (Markdown, CSV, JSON)."""

    rows: list[TableRow] = field(default_factory=list)
    working_point: float = 0.5
    max_abs_pull: float = 2.0

    @property
    def columns(self) -> list[str]:
        return [f.name for f in fields(TableRow)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "working_point": self.working_point,
            "max_abs_pull": self.max_abs_pull,
            "rows": [r.to_dict() for r in self.rows],
        }

    def to_dataframe(self) -> Any:
        """The rows as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.rows], columns=self.columns)

    def to_markdown(self, path: str | os.PathLike[str] | None = None) -> str:
        """A Markdown table (returned; also written atomically when ``path`` is given)."""
        head = [
            "region",
            "process",
            "variation",
            "tagged yield",
            "varied yield",
            "band (FR of tagged)",
            "FR",
            "corrected FR",
            "det. eff. sim",
            "det. eff. data",
            "pull",
            "budget",
            "verdict",
            "extra unc.",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [
                r.region,
                r.process,
                r.variation,
                _pm(r.nominal_yield, r.nominal_yield_err),
                _fmt(r.varied_yield),
                f"[{_fmt(r.band_down)}, {_fmt(r.band_up)}] "
                f"({_pm(r.band_fooling_ratio, r.band_fooling_ratio_err)})",
                _pm(r.fooling_ratio, r.fooling_ratio_err),
                _pm(r.corrected_fooling_ratio, r.corrected_fooling_ratio_err),
                _pm(r.detector_eff_mc, r.detector_eff_mc_err),
                _pm(r.detector_eff_data, r.detector_eff_data_err),
                _fmt(r.detector_pull, 3),
                _fmt(r.budget),
                r.verdict + (f" ({r.fr_used} FR)" if r.verdict != EXTRA_INCONSISTENT else ""),
                _fmt(r.extra_uncertainty),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            f"Tagged: nominal score >= {self.working_point:g}. Band: tagged yield x "
            "(1 ± FR of tagged), where FR of tagged is the fooling ratio of the tagged jets of "
            "that region and process (the weighted fraction of them whose predicted class "
            "flips), not of all its jets. FR: fooling ratio of all jets of the region and "
            "process; the verdict compares it (or the corrected FR) with the budget. "
            f"Detector consistent when |pull| < {self.max_abs_pull:g}. "
            "Extra uncertainty is relative to the tagged yield."
        )
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """CSV with one column per :class:`TableRow` field, full precision."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow(
                {k: repr(v) if isinstance(v, float) else v for k, v in r.to_dict().items()}
            )
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_json(
        self,
        path: str | os.PathLike[str],
        *,
        config: Any = None,
        seed: int | None = None,
        **provenance_extra: Any,
    ) -> Path:
        """JSON with the rows and a provenance record (config, seed, versions), atomically."""
        obj = {
            "provenance": provenance(config=config, seed=seed, **provenance_extra),
            **self.to_dict(),
        }
        return atomic_write_json(path, obj)
