"""Held-out metrics of a trained model, each beside its baseline.

These are the quick numbers written into the manifest at training time; the
full purged walk-forward evaluation is ``bse-predict evaluate``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from bse_predict.labels.first_touch import DOWN, NONE, UP

__all__ = ["holdout_metrics"]

_EPS = 1e-12


def _brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    onehot = np.eye(3)[labels]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def holdout_metrics(probabilities: np.ndarray, labels: np.ndarray, train_labels: np.ndarray) -> dict[str, float]:
    """Log loss, Brier and its skill against climatology, accuracy beside the base rate,
    and ROC AUC of up against down on the rows where a barrier was touched."""
    climatology = np.bincount(train_labels, minlength=3) / len(train_labels)
    clim_probabilities = np.tile(climatology, (len(labels), 1))
    brier = _brier(probabilities, labels)
    brier_clim = _brier(clim_probabilities, labels)
    metrics = {
        "rows": float(len(labels)),
        "log_loss": float(log_loss(labels, np.clip(probabilities, _EPS, 1), labels=[UP, DOWN, NONE])),
        "log_loss_climatology": float(log_loss(labels, clim_probabilities, labels=[UP, DOWN, NONE])),
        "brier": brier,
        "brier_climatology": brier_clim,
        "brier_skill": 1.0 - brier / brier_clim if brier_clim > 0 else 0.0,
        "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
        "accuracy_base_rate": float(np.max(np.bincount(labels, minlength=3)) / len(labels)),
    }
    touched = labels != NONE
    if touched.any() and len(np.unique(labels[touched])) == 2:
        p_up = probabilities[touched, UP] / np.maximum(probabilities[touched, UP] + probabilities[touched, DOWN], _EPS)
        metrics["auc_up_vs_down"] = float(roc_auc_score(labels[touched] == UP, p_up))
        metrics["up_share_touched"] = float(np.mean(labels[touched] == UP))
    return metrics
