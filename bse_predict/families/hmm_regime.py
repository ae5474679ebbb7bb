"""HMM regimes: the forward-filtered regime at the last hour of a sequence, mapped to outcomes.

A Gaussian HMM (:mod:`bse_predict.families.regime_model`) is fitted on the training history, then
the outcome map P(outcome | regime), a [K, 3] matrix, is counted from the
training rows: each row adds its filtered regime probabilities at its last hour
to the row of its label, with Laplace smoothing (``smoothing`` per cell).
A prediction is α_T @ outcome map: rows sum to 1 because α_T and every row of
the map do. Only the forward filter is used, over the row's own 168-hour
window, so a row's prediction depends on nothing after its candle.

The ONNX graph is the filter of :func:`bse_predict.families.regime_graphs.filter_graph` followed by a
MatMul with the outcome map; it also outputs ``regime_probabilities`` [batch, K]
and names the states in the metadata property ``regime_states``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bse_predict.families.base import BasePredictor, register
from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.evaluation.holdout_metrics import holdout_metrics
from bse_predict.families.regime_graphs import filter_graph
from bse_predict.families.regime_cache import fit_regime_model

__all__ = ["HMMRegimePredictor"]


@register
class HMMRegimePredictor(BasePredictor):
    family = "hmm_regime"
    input_kind = "sequence"
    fast_params: ClassVar[dict[str, Any]] = {"n_states": 3, "n_iter": 15}
    skipped_checks: ClassVar[dict[str, str]] = {
        "additivity": "not a tree family: its answer has no per-feature contributions"}

    def __init__(self, n_states: int = 4, covariance_type: str = "diag", n_iter: int = 100, tol: float = 1e-2,
                 min_covar: float = 1e-3, smoothing: float = 1.0, seed: int = 7) -> None:
        self.n_states = n_states
        self.covariance_type = covariance_type
        self.n_iter = n_iter
        self.tol = tol
        self.min_covar = min_covar
        self.smoothing = smoothing
        self.seed = seed

    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        self.regimes_ = fit_regime_model(self, X)
        alpha = self.regimes_.current_probabilities(X)
        counts = alpha.T @ np.eye(len(CLASS_NAMES))[y]  # [K, 3]: α-weighted label counts
        self.outcome_map_ = (counts + self.smoothing) / (counts.sum(axis=1, keepdims=True)
                                                          + len(CLASS_NAMES) * self.smoothing)
        if validation_data is None:  # the training rows' regimes are already filtered
            return holdout_metrics(alpha @ self.outcome_map_, y, y)
        return self.validate(*validation_data, reference_labels=y)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.regimes_.current_probabilities(X) @ self.outcome_map_

    def get_feature_importance(self) -> dict[str, float]:
        """Empty: the model reads one regime probability vector, not input columns; the
        outcome map (``outcome_map_``, one row per state in ``regimes_.state_names_``) is
        its whole explanation."""
        return {}

    def export_onnx(self, path: Path) -> None:
        path.write_bytes(filter_graph(self.regimes_, self.outcome_map_).SerializeToString())
