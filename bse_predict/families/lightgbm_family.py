"""LightGBM: leaf-wise boosted trees, softmax over three classes, early stopping on a purged slice.

Trained with the native ``lgb.train`` API and ``num_class=3``, so a training slice
without one of the classes still answers (up, down, none). Early stopping watches
the multi-class log loss of a validation slice; the fitted booster is cut to the
rounds up to the best one, so prediction, contributions and the ONNX export all
read the same trees. Exported with onnxmltools' ``convert_lightgbm`` (opset <= 15,
see ``LIGHTGBM_OPSET``). LightGBM prints nothing: ``verbosity=-1``.

LightGBM widens a float32 input to double and compares it with double thresholds; the
ONNX tree ensemble compares in float32, with each threshold rounded to the nearest
float32. A row whose value lies between the two goes the other way in ONNX (on the
SOLUSDT futures history, up to 4e-4 in probability for a 2% model). The fitted booster therefore
holds every threshold lowered to the largest float32 not above it
(:func:`float32_thresholds`): for a float32 ``x``, ``x <= t`` exactly when
``x <= float32_floor(t)``, so no float32 prediction changes and the graph holds the
same numbers as the booster.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bse_predict.explain.contributions import Contributions
from bse_predict.explain.link import softmax_path
from bse_predict.explain.trees import lightgbm_contributions
from bse_predict.families.base import BasePredictor, early_stopping_split, register, tabular_column_names
from bse_predict.families.onnx_limits import TARGET_OPSET
from bse_predict.families.tree_onnx import probabilities_only
from bse_predict.labels.first_touch import CLASS_NAMES

__all__ = ["LightGBMPredictor", "LIGHTGBM_OPSET", "float32_thresholds"]

LIGHTGBM_OPSET = min(TARGET_OPSET, 15)
"""onnxmltools' LightGBM converter refuses target opsets above 15 (1.16)."""

N_CLASSES = len(CLASS_NAMES)
_TREE_LINE = re.compile(r"^Tree=\d+$", re.MULTILINE)
_THRESHOLD_LINE = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_TREE_SIZES_LINE = re.compile(r"^tree_sizes=.*$", re.MULTILINE)


@register
class LightGBMPredictor(BasePredictor):
    family = "lightgbm"
    uses_validation = True
    fast_params: ClassVar[dict[str, Any]] = {"n_estimators": 30, "num_leaves": 7, "max_depth": 3,
                                             "learning_rate": 0.1, "early_stopping_rounds": 10, "n_jobs": 1}

    def __init__(self, n_estimators: int = 600, num_leaves: int = 8, max_depth: int = 3,
                 learning_rate: float = 0.03, subsample: float = 0.7, colsample_bytree: float = 0.5,
                 min_child_samples: int = 100, reg_lambda: float = 10.0, early_stopping_rounds: int | None = 50,
                 validation_fraction: float = 0.15, purge_rows: int = 72, seed: int = 7, n_jobs: int = -1) -> None:
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.purge_rows = purge_rows
        self.seed = seed
        self.n_jobs = n_jobs

    # ------------------------------------------------------------ learning
    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        """Fit up to ``n_estimators`` rounds, stopping early on the validation log loss.

        With ``validation_data`` given, early stopping watches it and all of ``X`` trains.
        Without it, the last ``validation_fraction`` of the rows is held out and the
        ``purge_rows`` rows before it are dropped (one symbol in time order, as for XGBoost).
        Returns the metrics of the validation slice (of ``X`` itself when there is none).
        """
        import lightgbm as lgb

        fit_rows, validation = early_stopping_split(X, y, validation_data, self.early_stopping_rounds,
                                                         self.validation_fraction, self.purge_rows)
        X_fit, y_fit = X[:fit_rows], y[:fit_rows]
        self.fit_rows_ = fit_rows
        params = self._params()
        dtrain = lgb.Dataset(X_fit.astype(np.float32), label=y_fit, params=params, free_raw_data=True)
        valid_sets, callbacks = [], []
        if validation is not None and self.early_stopping_rounds:
            valid_sets = [lgb.Dataset(validation[0].astype(np.float32), label=validation[1], reference=dtrain)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False)]
        booster = lgb.train(params, dtrain, num_boost_round=self.n_estimators, valid_sets=valid_sets,
                            callbacks=callbacks, keep_training_booster=True)  # every round built, cut below
        self.rounds_built_ = booster.current_iteration()
        kept = booster.best_iteration if valid_sets else self.rounds_built_
        self.booster_ = lgb.Booster(model_str=float32_thresholds(booster.model_to_string(num_iteration=kept)))
        self.best_iteration_ = kept - 1
        evaluated = validation or (X_fit, y_fit)
        return self.validate(*evaluated, reference_labels=y_fit)

    def _params(self) -> dict[str, Any]:
        return {
            "objective": "multiclass", "num_class": N_CLASSES, "metric": "multi_logloss",
            "num_leaves": self.num_leaves, "max_depth": self.max_depth, "learning_rate": self.learning_rate,
            "bagging_fraction": self.subsample, "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": self.colsample_bytree, "min_data_in_leaf": self.min_child_samples,
            "lambda_l2": self.reg_lambda, "seed": self.seed, "deterministic": True, "force_col_wise": True,
            "num_threads": self.n_jobs if self.n_jobs > 0 else 0, "verbosity": -1,
        }

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        # float32 input, as ONNX sees it
        p = np.asarray(self.booster_.predict(X.astype(np.float32)), dtype=np.float64).reshape(len(X), N_CLASSES)
        return p / p.sum(axis=1, keepdims=True)

    def contributions(self, X: np.ndarray) -> Contributions:
        """TreeSHAP on the margin (``pred_contrib=True``), carried into probability
        (:func:`bse_predict.explain.link.softmax_path`)."""
        margin_values, margin_bias = lightgbm_contributions(self.booster_, X.astype(np.float32))
        values, bias = softmax_path(margin_values, margin_bias)
        return Contributions(
            names=tabular_column_names(self.booster_.num_feature()), inputs=np.asarray(X, dtype=np.float64),
            values=values, bias=bias, unexplained=np.zeros((len(X), N_CLASSES)),
            method="TreeSHAP on the margin, carried into probability along the softmax")

    def get_feature_importance(self) -> dict[str, float]:
        """Total gain of each feature's splits (unused features 0), normalised to sum to 1."""
        values = np.asarray(self.booster_.feature_importance(importance_type="gain"), dtype=np.float64)
        names = tabular_column_names(len(values))
        total = values.sum()
        return dict(zip(names, (values / total if total > 0 else values).tolist(), strict=True))

    # ------------------------------------------------------------ export
    def export_onnx(self, path: Path) -> None:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        proto = convert_lightgbm(
            self.booster_, initial_types=[(self.input_kind, FloatTensorType([None, self.booster_.num_feature()]))],
            target_opset=LIGHTGBM_OPSET, zipmap=False,
        )
        path.write_bytes(probabilities_only(proto, LIGHTGBM_OPSET, N_CLASSES).SerializeToString())


def float32_thresholds(model_text: str) -> str:
    """A LightGBM model text with every split threshold lowered to the largest float32 not above it,
    and ``tree_sizes`` (each tree's length in bytes, which the loader reads) recounted."""
    starts = [match.start() for match in _TREE_LINE.finditer(model_text)]
    end = model_text.index("\nend of trees\n") + 1
    bounds = zip(starts, [*starts[1:], end], strict=True)
    trees = [_THRESHOLD_LINE.sub(_lowered, model_text[a:b], count=1) for a, b in bounds]
    sizes = "tree_sizes=" + " ".join(str(len(tree.encode())) for tree in trees)
    head = _TREE_SIZES_LINE.sub(sizes, model_text[:starts[0]], count=1)
    return head + "".join(trees) + model_text[end:]


def _lowered(line: re.Match[str]) -> str:
    thresholds = np.array(line.group(1).split(), dtype=np.float64)
    nearest = thresholds.astype(np.float32)
    below = np.where(nearest.astype(np.float64) > thresholds, np.nextafter(nearest, np.float32(-np.inf)), nearest)
    return "threshold=" + " ".join(repr(float(t)) for t in below)
