"""Dataset-level statistics by direct recomputation (the reference implementation).

* :class:`FeatureBinning`: per-feature weighted histograms on fixed clean-data bins;
  :func:`jsd_per_feature`: Jensen–Shannon distance (base 2) per feature.
* :func:`pearson_correlation`, :func:`delta_fn`: weighted Pearson correlation and ΔFN;
  :class:`MomentTracker`: weighted moments of event sets, mergeable with ``+``.
* :func:`distance_correlation_matrix`: distance correlation on a subsample.
* :func:`binning_scan` / :func:`resolution` (:mod:`advsyst.stats.validation`): JSD under
  binnings an attack never saw, next to the bootstrap resolution of each binning.

The attack updates these statistics incrementally, O(1) per candidate, in the numba
kernels of :mod:`advsyst.attacks._kernels` (JSD, moments, correlation) and
:mod:`advsyst.attacks._disco` (distance correlation); those are the only incremental
implementations, tested against the functions here.
"""

from __future__ import annotations

from advsyst.stats.binning import FeatureBinning, check_finite
from advsyst.stats.dcor import distance_correlation, distance_correlation_matrix
from advsyst.stats.jsd import histogram_jsd, js_term, jsd, jsd_per_feature
from advsyst.stats.moments import (
    MomentTracker,
    delta_fn,
    delta_fn_from_cov,
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
    "MomentTracker",
    "check_finite",
    "delta_fn",
    "delta_fn_from_cov",
    "distance_correlation",
    "distance_correlation_matrix",
    "js_term",
    "jsd",
    "jsd_per_feature",
    "pearson_correlation",
    "zero_variance_features",
]
