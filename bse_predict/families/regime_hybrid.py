"""The hybrid: a tabular family that also reads the HMM's forward-filtered regime.

Training fits a Gaussian HMM (:class:`bse_predict.families.regime_model.RegimeModel`) on the
training rows' hourly history, computes the regime columns of
:func:`bse_predict.families.regime_model.regime_features` for every row (filtered state
probabilities at the row's last hour, hours in the current state, the chance of
leaving it next hour, whether it just changed: all forward-filtered over the
row's own 168-hour window, nothing after its candle), and fits the base family
(RandomForest or XGBoost) on the 82 features plus those columns.

The exported graph reads both inputs, ``features`` and ``sequence``: the
filter of :func:`bse_predict.families.regime_graphs.regime_feature_graph` feeds a ``Concat`` in
front of the base family's own graph, so the worker serves it like any other
family (it builds both inputs from its window).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bse_predict.explain.contributions import Contributions
from bse_predict.families.base import BasePredictor, get_model, register
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.families.random_forest import RandomForestPredictor
from bse_predict.families.xgboost_family import XGBoostPredictor
from bse_predict.features.inputs import InputRows
from bse_predict.families.two_inputs import FeaturesAndSequence
from bse_predict.families.regime_graphs import REGIME_FEATURES_OUTPUT, regime_feature_graph
from bse_predict.families.regime_cache import fit_regime_model
from bse_predict.families.regime_model import regime_feature_names, regime_features

__all__ = ["RandomForestRegimesPredictor", "XGBoostRegimesPredictor"]

_COLUMNS = "hybrid_columns"


class _RegimeHybrid(FeaturesAndSequence, BasePredictor):
    """A base family over features + regime columns; subclasses name the base."""

    base_family: ClassVar[str]

    def __init__(self, base_params: dict[str, Any] | None = None, n_states: int = 4, covariance_type: str = "diag",
                 n_iter: int = 100, tol: float = 1e-2, min_covar: float = 1e-3, seed: int = 7) -> None:
        self.base_params = base_params
        self.n_states = n_states
        self.covariance_type = covariance_type
        self.n_iter = n_iter
        self.tol = tol
        self.min_covar = min_covar
        self.seed = seed

    def _columns(self, X: InputRows) -> np.ndarray:
        regimes, _ = regime_features(self.regimes_, X.parts["sequence"])
        return np.hstack([np.asarray(X.parts["features"], dtype=np.float64), regimes])

    # ------------------------------------------------------------ learning
    def train(self, X: InputRows, y: np.ndarray,  # type: ignore[override]
              validation_data: tuple[InputRows, np.ndarray] | None = None) -> dict[str, float]:
        self.regimes_ = fit_regime_model(self, X.parts["sequence"])
        self.base_ = get_model(self.base_family, **(self.base_params or {}))
        validation = None if validation_data is None else (self._columns(validation_data[0]), validation_data[1])
        self.base_.train(self._columns(X), y, validation_data=validation)
        evaluated = validation_data or (X, y)
        return self.validate(*evaluated, reference_labels=y)

    def predict_proba(self, X: InputRows) -> np.ndarray:  # type: ignore[override]
        return self.base_.predict_proba(self._columns(X))

    def contributions(self, X: InputRows) -> Contributions:  # type: ignore[override]
        """The base family's, its extra columns named after the regime features."""
        return self.base_.contributions(self._columns(X)).renamed(self._column_names())

    def get_feature_importance(self) -> dict[str, float]:
        """The base family's importance, its extra columns named after the regime features."""
        values = list(self.base_.get_feature_importance().values())
        return dict(zip(self._column_names(), values, strict=True))

    def _column_names(self) -> list[str]:
        return list(FEATURE_NAMES) + regime_feature_names(self.regimes_)

    # ------------------------------------------------------------ export
    def export_onnx(self, path: Path) -> None:
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            base_path = Path(tmp) / "base.onnx"
            self.base_.export_onnx(base_path)
            base = onnx.load(str(base_path))
        proto = _prepend_regimes(base, regime_feature_graph(self.regimes_), len(FEATURE_NAMES))
        path.write_bytes(proto.SerializeToString())


def _prepend_regimes(base: Any, regimes: Any, n_features: int) -> Any:
    """One graph: ``features`` and ``sequence`` in; the regime filter's columns concatenated
    to the features feed the base graph, whose input is renamed to an inner edge."""
    from onnx import TensorProto, checker, compose, helper

    from bse_predict.families.onnx_limits import cap_ir_version

    regimes = compose.add_prefix(regimes, "regime/", rename_inputs=False)
    (base_input,) = base.graph.input
    for node in base.graph.node:
        node.input[:] = [_COLUMNS if name == base_input.name else name for name in node.input]
    concat = helper.make_node("Concat", ["features", f"regime/{REGIME_FEATURES_OUTPUT}"], [_COLUMNS],
                              name="hybrid_concat", axis=1)
    graph = helper.make_graph(
        [*regimes.graph.node, concat, *base.graph.node], "regime_hybrid",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features]), *regimes.graph.input],
        list(base.graph.output), [*regimes.graph.initializer, *base.graph.initializer])
    proto = helper.make_model(graph, opset_imports=list(base.opset_import), producer_name="bse-predict")
    helper.set_model_props(proto, {"regime_states": regimes.metadata_props[0].value})
    cap_ir_version(proto)
    checker.check_model(proto, full_check=True)
    return proto


@register
class RandomForestRegimesPredictor(_RegimeHybrid):
    family = "random_forest_regimes"
    base_family = "random_forest"
    fast_params: ClassVar[dict[str, Any]] = {
        "base_params": RandomForestPredictor.fast_params, "n_states": 3, "n_iter": 15}


@register
class XGBoostRegimesPredictor(_RegimeHybrid):
    family = "xgboost_regimes"
    base_family = "xgboost"
    uses_validation = True
    fast_params: ClassVar[dict[str, Any]] = {
        "base_params": XGBoostPredictor.fast_params, "n_states": 3, "n_iter": 15}
