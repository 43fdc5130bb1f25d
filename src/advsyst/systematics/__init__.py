"""Adversarial pseudo-systematics: variations, histograms, bands, tables, export, plots.

The chain, for one process::

    split = optimal_cut_regions(X, y, w)                       # control / signal regions
    h, out = evaluate_variations(X, model, ["conservattack"], context,
                                 {"conservattack": {...}}, process="ttbar",
                                 region_masks=split.masks(X), weights=w)
    table = build_uncertainty_table({"ttbar": out}, budget=0.05)
    write_root_histograms("templates.root", h)
    write_workspace("ws.json", build_pyhf_workspace(h, signal_process="ttbar"))

Importing this package registers the built-in variations (:mod:`.variations`).
Plotting lives in :mod:`advsyst.systematics.plots` (imported on demand).
"""

from __future__ import annotations

from advsyst.systematics import variations as _variations  # noqa: F401  (registers built-ins)
from advsyst.systematics.bands import (
    DetectorEfficiency,
    FoolingRatio,
    Fraction,
    YieldBand,
    compare_data_mc,
    detector_efficiency,
    detector_efficiency_curve,
    effective_entries,
    fooling_ratio,
    fooling_ratios,
    tagged_yield,
    weighted_fraction,
    yield_bands,
)
from advsyst.systematics.export import (
    build_pyhf_workspace,
    histogram_name,
    systematic_names,
    write_root_histograms,
    write_workspace,
)
from advsyst.systematics.histograms import (
    NOMINAL,
    LowStatisticsWarning,
    SystematicsBuilder,
    VariationOutcome,
    evaluate_dataset,
    evaluate_variations,
    fill_variations,
    make_hist,
    mirror_scores,
    model_scores,
)
from advsyst.systematics.regions import (
    Region,
    RegionSplit,
    masks_from,
    optimal_cut_regions,
    region_masks,
    weighted_auroc,
)
from advsyst.systematics.registry import (
    Variation,
    VariationContext,
    VariationResult,
    available,
    detector_scores,
    get,
    register,
    register_variation,
    run_variation,
    unregister,
)
from advsyst.systematics.tables import TableRow, UncertaintyTable, build_uncertainty_table, verdict

__all__ = [
    # registry
    "Variation",
    "VariationContext",
    "VariationResult",
    "available",
    "detector_scores",
    "get",
    "register",
    "register_variation",
    "run_variation",
    "unregister",
    # regions
    "Region",
    "RegionSplit",
    "masks_from",
    "optimal_cut_regions",
    "region_masks",
    "weighted_auroc",
    # histograms
    "NOMINAL",
    "LowStatisticsWarning",
    "SystematicsBuilder",
    "VariationOutcome",
    "evaluate_dataset",
    "evaluate_variations",
    "fill_variations",
    "make_hist",
    "mirror_scores",
    "model_scores",
    # bands
    "DetectorEfficiency",
    "FoolingRatio",
    "Fraction",
    "YieldBand",
    "compare_data_mc",
    "detector_efficiency",
    "detector_efficiency_curve",
    "effective_entries",
    "fooling_ratio",
    "fooling_ratios",
    "tagged_yield",
    "weighted_fraction",
    "yield_bands",
    # tables
    "TableRow",
    "UncertaintyTable",
    "build_uncertainty_table",
    "verdict",
    # export
    "build_pyhf_workspace",
    "histogram_name",
    "systematic_names",
    "write_root_histograms",
    "write_workspace",
]
