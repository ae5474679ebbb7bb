"""Per-row log loss of one parameter set on one fold, fit and calibrated out of fold as ``evaluate`` does
(:func:`bse_predict.evaluation.fold_predictions.train_on_fold`, :func:`fit_calibrator`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bse_predict.evaluation.baselines import Climatology
from bse_predict.evaluation.fold_predictions import FamilySplit, FoldMasks, fit_calibrator, train_on_fold
from bse_predict.families import get_model
from bse_predict.scoring.probabilities import row_log_loss
from bse_predict.training.pooling import PooledRows

__all__ = ["family_fold_loss", "climatology_fold_loss"]


def family_fold_loss(family: str, params: dict[str, Any], X: np.ndarray, rows: PooledRows, m: FoldMasks,
                     split: FamilySplit) -> np.ndarray:
    """float[test rows]: log loss of the family fit on the fold's fit rows, calibrated on its calibration rows."""
    model = get_model(family, **params)
    train_on_fold(model, X, rows, m, family, split)
    calibrator = fit_calibrator(split.calibrator, m, rows.labels, lambda rows_of: model.predict_proba(X[rows_of]))
    return row_log_loss(calibrator.transform(model.predict_proba(X[m.test])), rows.labels[m.test])


def climatology_fold_loss(rows: PooledRows, m: FoldMasks) -> np.ndarray:
    """float[test rows]: log loss of the class shares of the fold's training rows."""
    climatology = Climatology().fit(rows.features[m.train], rows.return_24h[m.train], rows.labels[m.train])
    return row_log_loss(climatology.predict_proba(rows.features[m.test], rows.return_24h[m.test]), rows.labels[m.test])
