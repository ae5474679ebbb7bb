"""Scores of class probabilities (up, down, none) against first-touch labels.

Beyond :func:`bse_predict.evaluation.holdout_metrics.holdout_metrics`: the ROC AUC of up against
down, expected calibration error, reliability bins, precision and coverage at
confidence thresholds, and :func:`group_metrics`, which puts all of them for one
group of rows beside the climatology's on the same rows.

Definitions:

- confidence, the called side, the per-row log loss and Brier, and the bins
  are :mod:`bse_predict.scoring.probabilities`'s, the ones serving publishes with.
- ECE is class-wise: for each class, equal-width bins of its probability,
  ``sum_b n_b / n * |mean p - observed share|``; the mean over the three
  classes. Class-wise rather than top-label, because the "none" class and the
  up/down split matter separately to the signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bse_predict.evaluation.schema import GroupMetrics, ReliabilityBin, ThresholdMetrics
from bse_predict.labels.first_touch import NONE, UP
from bse_predict.scoring.probabilities import (called_side, calibration_bins, confidence, row_brier, row_log_loss,
                                              up_share)

__all__ = [
    "AUC_SCORE_DECIMALS",
    "auc_score",
    "auc_up_vs_down",
    "expected_calibration_error",
    "reliability_bins",
    "threshold_metrics",
    "group_metrics",
]

_CLASSES = 3
AUC_SCORE_DECIMALS = 12


def auc_score(probabilities: np.ndarray) -> np.ndarray:
    """The score the up-vs-down AUC ranks: the up share, rounded to :data:`AUC_SCORE_DECIMALS` decimals so that
    shares equal but for float rounding (a constant side with a different p_none per fold) tie."""
    return np.round(up_share(probabilities), AUC_SCORE_DECIMALS)


def auc_up_vs_down(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC of p_up / (p_up + p_down) (:func:`auc_score`), UP against DOWN, on rows where a barrier was touched."""
    from sklearn.metrics import roc_auc_score

    touched = labels != NONE
    if len(np.unique(labels[touched])) < 2:
        return None
    return float(roc_auc_score(labels[touched] == UP, auc_score(probabilities[touched])))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    if len(labels) == 0:
        return 0.0
    total = 0.0
    for k in range(_CLASSES):
        binned = calibration_bins(probabilities[:, k], labels == k, bins)
        total += float(np.sum(np.abs(binned.sum_p - binned.sum_hit))) / len(labels)
    return total / _CLASSES


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, klass: int,
                     bins: int = 10) -> tuple[ReliabilityBin, ...]:
    """Equal-width bins of p[:, klass]: mean predicted against observed share (non-empty bins only)."""
    binned = calibration_bins(probabilities[:, klass], labels == klass, bins)
    mean_p, hit_rate = binned.mean_p, binned.hit_rate
    return tuple(ReliabilityBin(lower=float(binned.lower[b]), upper=float(binned.upper[b]), rows=int(binned.rows[b]),
                                mean_predicted=float(mean_p[b]), observed=float(hit_rate[b]))
                 for b in np.flatnonzero(binned.rows))


def threshold_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> ThresholdMetrics:
    called = confidence(probabilities) >= threshold
    hits = called & (labels == called_side(probabilities))
    touched_calls = called & (labels != NONE)
    n_calls = int(called.sum())
    return ThresholdMetrics(
        threshold=threshold, calls=n_calls, coverage=n_calls / len(labels) if len(labels) else 0.0,
        precision=float(hits.sum() / n_calls) if n_calls else None,
        precision_touched=float(hits.sum() / touched_calls.sum()) if touched_calls.any() else None,
    )


def group_metrics(probabilities: np.ndarray, labels: np.ndarray, climatology: np.ndarray,
                  thresholds: Sequence[float], bins: int = 10) -> GroupMetrics:
    """Every metric of one group of rows; ``climatology`` holds the climatology's
    probabilities for the same rows (the reference of log loss, Brier and ECE)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("group_metrics needs at least one row")
    brier = float(row_brier(probabilities, labels).mean())
    brier_clim = float(row_brier(climatology, labels).mean())
    touched = labels != NONE
    shares = np.bincount(labels, minlength=_CLASSES) / len(labels)
    return GroupMetrics(
        rows=len(labels),
        touched_rows=int(touched.sum()),
        log_loss=float(row_log_loss(probabilities, labels).mean()),
        log_loss_climatology=float(row_log_loss(climatology, labels).mean()),
        brier=brier,
        brier_climatology=brier_clim,
        brier_skill=1.0 - brier / brier_clim if brier_clim > 0 else 0.0,
        auc_up_vs_down=auc_up_vs_down(probabilities, labels),
        up_share_touched=float(np.mean(labels[touched] == UP)) if touched.any() else None,
        accuracy=float(np.mean(np.argmax(probabilities, axis=1) == labels)),
        accuracy_base_rate=float(shares.max()),
        ece=expected_calibration_error(probabilities, labels, bins),
        ece_climatology=expected_calibration_error(climatology, labels, bins),
        thresholds=tuple(threshold_metrics(probabilities, labels, t) for t in thresholds),
        mean_probabilities=tuple(float(x) for x in probabilities.mean(axis=0)),  # type: ignore[arg-type]
        label_shares=tuple(float(x) for x in shares),  # type: ignore[arg-type]
    )
