"""XGBoost: shallow boosted trees, softprob over three classes, early stopping on a purged slice.

Trained with the native ``xgb.train`` API and ``num_class=3``, so a training
slice without one of the classes still answers (up, down, none). Early stopping
watches the multi-class log loss of a validation slice; prediction and the ONNX
export both use only the rounds up to ``best_iteration_``. Exported with
onnxmltools (opset <= 15, see ``XGBOOST_OPSET``).
"""

from __future__ import annotations

import json
import logging
import warnings
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bse_predict.explain.contributions import Contributions
from bse_predict.explain.link import softmax_path
from bse_predict.explain.trees import booster_contributions
from bse_predict.families.base import BasePredictor, early_stopping_split, register, tabular_column_names
from bse_predict.families.onnx_limits import TARGET_OPSET
from bse_predict.families.tree_onnx import probabilities_only
from bse_predict.labels.first_touch import CLASS_NAMES

__all__ = ["XGBoostPredictor", "XGBOOST_OPSET", "cuda_usable"]

log = logging.getLogger(__name__)

XGBOOST_OPSET = min(TARGET_OPSET, 15)
"""onnxmltools' XGBoost converter refuses target opsets above 15 (1.16)."""

N_CLASSES = len(CLASS_NAMES)


@cache
def cuda_usable() -> bool:
    """Whether xgboost can train on a CUDA device here: a CUDA build, and a one-round fit
    with ``device="cuda"`` that xgboost does not move back to the CPU."""
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA", False):
        return False
    probe = xgb.DMatrix(np.arange(12, dtype=np.float32).reshape(6, 2), label=np.arange(6) % N_CLASSES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No visible GPU is found, setting device to CPU."
            booster = xgb.train({"device": "cuda", "objective": "multi:softprob", "num_class": N_CLASSES,
                                 "verbosity": 0}, probe, num_boost_round=1)
    except xgb.core.XGBoostError:
        return False
    device = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    return str(device).startswith("cuda")


@register
class XGBoostPredictor(BasePredictor):
    family = "xgboost"
    uses_validation = True
    fast_params: ClassVar[dict[str, Any]] = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.1,
                                             "early_stopping_rounds": 10, "n_jobs": 1}

    def __init__(self, n_estimators: int = 600, max_depth: int = 3, learning_rate: float = 0.03,
                 subsample: float = 0.7, colsample_bytree: float = 0.5, min_child_weight: float = 50.0,
                 reg_lambda: float = 10.0, early_stopping_rounds: int | None = 50,
                 validation_fraction: float = 0.15, purge_rows: int = 72, use_gpu: bool = False, seed: int = 7,
                 n_jobs: int = -1) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.purge_rows = purge_rows
        self.use_gpu = use_gpu
        self.seed = seed
        self.n_jobs = n_jobs

    # ------------------------------------------------------------ learning
    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        """Fit up to ``n_estimators`` rounds, stopping early on the validation log loss.

        With ``validation_data`` given, early stopping watches it and all of ``X`` trains.
        Without it, the last ``validation_fraction`` of the rows is held out and the
        ``purge_rows`` rows before it are dropped, so no training label (72 h barrier)
        overlaps a validation row. That assumes the rows of ``X`` are one symbol in time
        order: pooled multi-symbol data must pass its own purged ``validation_data``.
        Returns the metrics of the validation slice (of ``X`` itself when there is none).
        """
        import xgboost as xgb

        fit_rows, validation = early_stopping_split(X, y, validation_data, self.early_stopping_rounds,
                                                         self.validation_fraction, self.purge_rows)
        X_fit, y_fit = X[:fit_rows], y[:fit_rows]
        self.fit_rows_ = fit_rows
        dtrain = xgb.DMatrix(X_fit.astype(np.float32), label=y_fit)
        evals = []
        if validation is not None:
            evals = [(xgb.DMatrix(validation[0].astype(np.float32), label=validation[1]), "validation")]
        self.device_ = self._device()
        self.booster_ = xgb.train(
            self._params(), dtrain, num_boost_round=self.n_estimators, evals=evals,
            early_stopping_rounds=self.early_stopping_rounds if evals else None, verbose_eval=False,
        )
        self.best_iteration_ = (self.booster_.best_iteration if evals and self.early_stopping_rounds
                                else self.booster_.num_boosted_rounds() - 1)
        self.booster_.set_param({"device": "cpu"})  # predict (and reload) on the CPU, as ONNX does
        evaluated = validation or (X_fit, y_fit)
        return self.validate(*evaluated, reference_labels=y_fit)

    def _params(self) -> dict[str, Any]:
        return {
            "objective": "multi:softprob", "num_class": N_CLASSES, "eval_metric": "mlogloss",
            "tree_method": "hist", "device": self.device_, "max_depth": self.max_depth, "eta": self.learning_rate,
            "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight, "lambda": self.reg_lambda, "seed": self.seed,
            "nthread": self.n_jobs if self.n_jobs > 0 else 0, "verbosity": 1,
        }

    def _device(self) -> str:
        if not self.use_gpu:
            return "cpu"
        if cuda_usable():
            return "cuda"
        log.warning("use_gpu=True but xgboost finds no usable CUDA device; training on the CPU")
        return "cpu"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        # float32 input, as ONNX sees it: the trees compare in float32 either way
        p = self.booster_.predict(xgb.DMatrix(X.astype(np.float32)), iteration_range=(0, self.best_iteration_ + 1))
        p = p.astype(np.float64).reshape(len(X), N_CLASSES)
        return p / p.sum(axis=1, keepdims=True)

    def contributions(self, X: np.ndarray) -> Contributions:
        """TreeSHAP on the margin of the rounds that predict, carried into probability
        (:func:`bse_predict.explain.link.softmax_path`)."""
        margin_values, margin_bias = booster_contributions(self.booster_, X.astype(np.float32),
                                                           (0, self.best_iteration_ + 1))
        values, bias = softmax_path(margin_values, margin_bias)
        return Contributions(
            names=tabular_column_names(self.booster_.num_features()), inputs=np.asarray(X, dtype=np.float64),
            values=values, bias=bias, unexplained=np.zeros((len(X), N_CLASSES)),
            method="TreeSHAP on the margin, carried into probability along the softmax")

    def get_feature_importance(self) -> dict[str, float]:
        """Mean gain per split of each feature (unused features 0), normalised to sum to 1."""
        gain = self._best_booster().get_score(importance_type="gain")
        names = tabular_column_names(self.booster_.num_features())
        values = np.array([gain.get(f"f{i}", 0.0) for i in range(len(names))], dtype=np.float64)
        total = values.sum()
        return dict(zip(names, (values / total if total > 0 else values).tolist(), strict=True))

    def _best_booster(self) -> Any:
        """The booster cut to the rounds that predict: 0..best_iteration_."""
        return self.booster_[: self.best_iteration_ + 1]

    # ------------------------------------------------------------ export
    def export_onnx(self, path: Path) -> None:
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        booster = self._best_booster()
        proto = convert_xgboost(
            booster, initial_types=[(self.input_kind, FloatTensorType([None, booster.num_features()]))],
            target_opset=XGBOOST_OPSET,
        )
        proto = probabilities_only(proto, XGBOOST_OPSET, N_CLASSES)
        path.write_bytes(proto.SerializeToString())

