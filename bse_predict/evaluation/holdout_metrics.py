"""Held-out metrics of a trained model, each beside its baseline.

These are the quick numbers written into the manifest at training time; the
full purged walk-forward evaluation is ``bse-predict evaluate``.
"""

from __future__ import annotations

import numpy as np

from bse_predict.evaluation.scoring import auc_up_vs_down
from bse_predict.labels.first_touch import NONE, UP
from bse_predict.scoring.probabilities import climatology_shares, row_brier, row_log_loss

__all__ = ["holdout_metrics"]


def holdout_metrics(probabilities: np.ndarray, labels: np.ndarray, train_labels: np.ndarray) -> dict[str, float]:
    """Log loss, Brier and its skill against climatology, accuracy beside the base rate,
    and ROC AUC of up against down on the rows where a barrier was touched."""
    clim_probabilities = np.tile(climatology_shares(train_labels), (len(labels), 1))
    brier = float(np.mean(row_brier(probabilities, labels)))
    brier_clim = float(np.mean(row_brier(clim_probabilities, labels)))
    metrics = {
        "rows": float(len(labels)),
        "log_loss": float(np.mean(row_log_loss(probabilities, labels))),
        "log_loss_climatology": float(np.mean(row_log_loss(clim_probabilities, labels))),
        "brier": brier,
        "brier_climatology": brier_clim,
        "brier_skill": 1.0 - brier / brier_clim if brier_clim > 0 else 0.0,
        "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
        "accuracy_base_rate": float(np.max(np.bincount(labels, minlength=3)) / len(labels)),
    }
    auc = auc_up_vs_down(probabilities, labels)
    if auc is not None:
        metrics["auc_up_vs_down"] = auc
        metrics["up_share_touched"] = float(np.mean(labels[labels != NONE] == UP))
    return metrics
