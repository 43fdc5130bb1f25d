"""Adversarial pseudo-systematics: variations, histograms, bands, tables, export, plots.

The chain, for one process::

    split = optimal_cut_regions(X, y, w)                       # control / signal regions
    h, out = evaluate_variations(X, model, ["conservattack"], context,
                                 {"conservattack": {...}}, process="ttbar",
                                 region_masks=split.masks(X), weights=w)
    table = build_uncertainty_table({"ttbar": out}, budget=0.05)
    fit = write_fit_inputs("out", h, signal_process="ttbar")  # out/histograms.root + cabinetry.yml
    ws = build_workspace(fit.config_file)                     # pyhf workspace, built by cabinetry

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
    band_limits,
    compare_data_mc,
    detector_efficiency,
    detector_efficiency_curve,
    effective_entries,
    fooling_ratio,
    fooling_ratios,
    tagged_fooling_ratio,
    tagged_yield,
    weighted_fraction,
    yield_bands,
)
from advsyst.systematics.export import (
    FitInputs,
    build_pyhf_workspace,
    build_workspace,
    cabinetry_config,
    data_process_names,
    histogram_name,
    key_part,
    systematic_names,
    unkey_part,
    write_cabinetry_config,
    write_fit_inputs,
    write_root_histograms,
    write_workspace,
)
from advsyst.systematics.histograms import (
    DOWN_MODES,
    NOMINAL,
    LowStatisticsWarning,
    SystematicsBuilder,
    VariationOutcome,
    evaluate_dataset,
    evaluate_variations,
    fill_variations,
    make_hist,
    mirror_scores,
    mirror_templates,
    model_scores,
    template_axes,
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
    "DOWN_MODES",
    "NOMINAL",
    "LowStatisticsWarning",
    "SystematicsBuilder",
    "VariationOutcome",
    "evaluate_dataset",
    "evaluate_variations",
    "fill_variations",
    "make_hist",
    "mirror_scores",
    "mirror_templates",
    "model_scores",
    "template_axes",
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
    "band_limits",
    "fooling_ratios",
    "tagged_fooling_ratio",
    "tagged_yield",
    "weighted_fraction",
    "yield_bands",
    # tables
    "TableRow",
    "UncertaintyTable",
    "build_uncertainty_table",
    "verdict",
    # export
    "FitInputs",
    "build_pyhf_workspace",
    "build_workspace",
    "cabinetry_config",
    "data_process_names",
    "histogram_name",
    "key_part",
    "systematic_names",
    "unkey_part",
    "write_cabinetry_config",
    "write_fit_inputs",
    "write_root_histograms",
    "write_workspace",
]
