"""Multinomial logistic regression on the standardised features: the evaluation's logistic baseline as a family.

On the whole futures history the calibrated logistic baseline of ``evaluate`` had the lowest point
log loss of every model at every target (docs/models/ensembles.md); as a family it can be served
and be an ensemble member. The fitted state is numpy arrays only (the scaler's mean and scale, one
weight column and intercept per class seen), so the native file holds no library object, and the
ONNX graph is written by hand: ``(x - mean) / scale``, ``MatMul``, ``Add``, ``Softmax`` and a
constant matrix that scatters the classes seen into (up, down, none). The fit runs on one BLAS
thread (:func:`bse_predict.training.blas.single_threaded_blas`: 20 times faster here than two).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bse_predict.families.base import ONNX_OUTPUT, BasePredictor, register, tabular_column_names
from bse_predict.families.onnx_limits import TARGET_OPSET, cap_ir_version
from bse_predict.labels.first_touch import expand_classes
from bse_predict.training.blas import single_threaded_blas

__all__ = ["LogisticPredictor"]


@register
class LogisticPredictor(BasePredictor):
    family = "logistic"
    fast_params: ClassVar[dict[str, Any]] = {"max_iter": 300}
    skipped_checks: ClassVar[dict[str, str]] = {
        "additivity": "not a tree family: its features add up in log-odds, not in probabilities"}

    def __init__(self, C: float = 0.01, max_iter: int = 2000) -> None:
        self.C = C
        self.max_iter = max_iter

    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        rows = np.asarray(X, dtype=np.float32).astype(np.float64)  # what the graph reads, in float32
        scaler = StandardScaler().fit(rows)
        with single_threaded_blas():
            model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(scaler.transform(rows), y)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # sklearn keeps one column for two classes: softmax over [0, z] is sigmoid(z)
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        self.mean_ = scaler.mean_.astype(np.float32)
        self.scale_ = scaler.scale_.astype(np.float32)
        self.weights_ = np.ascontiguousarray(coef.T, dtype=np.float32)  # [features, classes seen]
        self.intercept_ = intercept.astype(np.float32)
        self.classes_ = np.asarray(model.classes_, dtype=np.int64)
        evaluated = validation_data or (X, y)
        return self.validate(*evaluated, reference_labels=y)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        logits = ((np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_) @ self.weights_ + self.intercept_
        logits = logits.astype(np.float64)
        shares = np.exp(logits - logits.max(axis=1, keepdims=True))
        return expand_classes(shares / shares.sum(axis=1, keepdims=True), self.classes_)

    def get_feature_importance(self) -> dict[str, float]:
        """Each standardised feature's largest absolute weight over the classes, normalised to sum to 1."""
        size = np.abs(self.weights_).max(axis=1).astype(np.float64)
        total = size.sum()
        return dict(zip(tabular_column_names(len(size)), (size / total if total else size).tolist(), strict=True))

    def export_onnx(self, path: Path) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        scatter = np.zeros((len(self.classes_), 3), dtype=np.float32)
        scatter[np.arange(len(self.classes_)), self.classes_] = 1.0
        constants = {"mean": self.mean_, "scale": self.scale_, "weights": self.weights_,
                     "intercept": self.intercept_, "class_scatter": scatter}
        nodes = [
            helper.make_node("Sub", [self.input_kind, "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "scale"], ["standardised"]),
            helper.make_node("MatMul", ["standardised", "weights"], ["products"]),
            helper.make_node("Add", ["products", "intercept"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities_seen"], axis=1),
            helper.make_node("MatMul", ["probabilities_seen", "class_scatter"], [ONNX_OUTPUT]),
        ]
        graph = helper.make_graph(
            nodes, "logistic",
            [helper.make_tensor_value_info(self.input_kind, TensorProto.FLOAT, [None, len(self.mean_)])],
            [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, [None, 3])],
            [numpy_helper.from_array(value, name) for name, value in constants.items()])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)])
        cap_ir_version(proto)
        onnx.checker.check_model(proto)
        path.write_bytes(proto.SerializeToString())
