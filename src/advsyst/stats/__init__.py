"""Dataset-level statistics with exact incremental updates.

* :class:`FeatureBinning` / :class:`HistogramTracker`: per-feature weighted histograms
  on fixed clean-data bins, Jensen–Shannon distance (base 2) with O(1) updates.
* :class:`MomentTracker`: weighted mean and covariance, Pearson correlation and the
  closed-form ΔFN of a single moved entry.
* :func:`distance_correlation_matrix`: distance correlation on a subsample.
* :func:`binning_scan` / :func:`resolution` (:mod:`advsyst.stats.validation`): JSD under
  binnings an attack never saw, next to the bootstrap resolution of each binning.

All trackers merge with ``+`` (the tracker of the union of the event sets).
"""

from __future__ import annotations

from advsyst.stats.binning import FeatureBinning, check_finite
from advsyst.stats.dcor import distance_correlation, distance_correlation_matrix
from advsyst.stats.jsd import HistogramTracker, histogram_jsd, js_term, jsd, jsd_per_feature
from advsyst.stats.moments import (
    MomentTracker,
    delta_fn,
    pearson_correlation,
    zero_variance_features,
)
from advsyst.stats.validation import BinningScan, binning_scan, resolution

__all__ = [
    "BinningScan",
    "binning_scan",
    "histogram_jsd",
    "resolution",
    "FeatureBinning",
    "HistogramTracker",
    "MomentTracker",
    "check_finite",
    "delta_fn",
    "distance_correlation",
    "distance_correlation_matrix",
    "js_term",
    "jsd",
    "jsd_per_feature",
    "pearson_correlation",
    "zero_variance_features",
]
