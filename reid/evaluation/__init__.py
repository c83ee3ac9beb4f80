"""Retrieval evaluation: features, distances, Market-1501 ranking metrics, re-ranking.

Example::

    >>> from reid.evaluation import extract_features, evaluate_features, format_results
    >>> qf = extract_features(model, query_images, size=(256, 128), device="cuda", flip=True)
    >>> gf = extract_features(model, gallery_images, size=(256, 128), device="cuda", flip=True)
    >>> results = evaluate_features(qf, gf, q_pids, q_cams, g_pids, g_cams)
    >>> print(format_results(results))
"""

from .calibration import calibration_bins, expected_calibration_error, feature_ratio, mean_confidence
from .features import (
    compute_distance,
    evaluate_features,
    extract_features,
    read_features_mat,
    retrieval_feature,
    write_features_mat,
)
from .model import evaluate_datasets, evaluate_model
from .ranking import AP_RULES, rank_metrics
from .report import eval_settings, format_results, results_settings, settings_label, settings_tag
from .rerank import re_ranking

__all__ = [
    "AP_RULES",
    "calibration_bins",
    "compute_distance",
    "eval_settings",
    "evaluate_datasets",
    "evaluate_features",
    "expected_calibration_error",
    "evaluate_model",
    "extract_features",
    "feature_ratio",
    "format_results",
    "mean_confidence",
    "rank_metrics",
    "re_ranking",
    "read_features_mat",
    "results_settings",
    "retrieval_feature",
    "settings_label",
    "settings_tag",
    "write_features_mat",
]
