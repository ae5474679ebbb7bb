"""Scores of class probabilities (up, down, none) against first-touch labels.

Beyond :func:`bse_predict.evaluation.holdout_metrics.holdout_metrics`: per-row losses (for the paired
bootstrap), expected calibration error, reliability bins, precision and
coverage at confidence thresholds, and :func:`group_metrics`, which puts all
of them for one group of rows beside the climatology's on the same rows.

Definitions:

- ``confidence = max(p_up, p_down) / (p_up + p_down)`` and the called side is
  up when ``p_up >= p_down``, as in :mod:`bse_predict.serving.signals`.
- ECE is class-wise: for each class, equal-width bins of its probability,
  ``sum_b n_b / n * |mean p - observed share|``; the mean over the three
  classes. Class-wise rather than top-label, because the "none" class and the
  up/down split matter separately to the signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bse_predict.evaluation.schema import GroupMetrics, ReliabilityBin, ThresholdMetrics
from bse_predict.labels.first_touch import DOWN, NONE, UP

__all__ = [
    "LOSS_FLOOR",
    "row_log_loss",
    "row_brier",
    "confidence",
    "auc_up_vs_down",
    "expected_calibration_error",
    "reliability_bins",
    "threshold_metrics",
    "group_metrics",
]

LOSS_FLOOR = 1e-12
"""Probabilities are clipped here before the log, as in :mod:`bse_predict.evaluation.holdout_metrics`."""
_CLASSES = 3


def row_log_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log p[label] per row."""
    return -np.log(np.clip(probabilities[np.arange(len(labels)), labels], LOSS_FLOOR, 1.0))


def row_brier(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sum over the three classes of (p - onehot)^2 per row (0 to 2)."""
    return np.sum((probabilities - np.eye(_CLASSES)[labels]) ** 2, axis=1)


def confidence(probabilities: np.ndarray) -> np.ndarray:
    touched = probabilities[:, UP] + probabilities[:, DOWN]
    side = np.maximum(probabilities[:, UP], probabilities[:, DOWN])
    return np.divide(side, touched, out=np.full(len(touched), 0.5), where=touched > 0)


def auc_up_vs_down(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC of p_up / (p_up + p_down), UP against DOWN, on rows where a barrier was touched."""
    from sklearn.metrics import roc_auc_score

    touched = labels != NONE
    if len(np.unique(labels[touched])) < 2:
        return None
    p = probabilities[touched]
    score = np.divide(p[:, UP], p[:, UP] + p[:, DOWN], out=np.full(len(p), 0.5), where=(p[:, UP] + p[:, DOWN]) > 0)
    return float(roc_auc_score(labels[touched] == UP, score))


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((values * bins).astype(np.int64), bins - 1)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    if len(labels) == 0:
        return 0.0
    total = 0.0
    for k in range(_CLASSES):
        index = _bin_index(probabilities[:, k], bins)
        predicted = np.bincount(index, weights=probabilities[:, k], minlength=bins)
        observed = np.bincount(index, weights=(labels == k).astype(float), minlength=bins)
        total += float(np.sum(np.abs(predicted - observed))) / len(labels)
    return total / _CLASSES


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, klass: int,
                     bins: int = 10) -> tuple[ReliabilityBin, ...]:
    """Equal-width bins of p[:, klass]: mean predicted against observed share (non-empty bins only)."""
    p = probabilities[:, klass]
    index = _bin_index(p, bins)
    out = []
    for b in range(bins):
        rows = index == b
        if rows.any():
            out.append(ReliabilityBin(lower=b / bins, upper=(b + 1) / bins, rows=int(rows.sum()),
                                      mean_predicted=float(p[rows].mean()),
                                      observed=float(np.mean(labels[rows] == klass))))
    return tuple(out)


def threshold_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> ThresholdMetrics:
    called = confidence(probabilities) >= threshold
    side = np.where(probabilities[:, UP] >= probabilities[:, DOWN], UP, DOWN)
    hits = called & (labels == side)
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
