"""RandomForest: the first family, three classes, exported with skl2onnx (no ZipMap).

``max_samples`` draws each tree's bootstrap from that share of the rows. Hourly
rows with 72-hour labels overlap so much that a quarter of them carries nearly
all the information, and the forest trains four times faster
(docs/models/README.md has the measurement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bse_predict.explain.contributions import Contributions
from bse_predict.explain.trees import forest_contributions
from bse_predict.families.base import ONNX_OUTPUT, BasePredictor, register, tabular_column_names
from bse_predict.families.onnx_limits import ML_OPSET, TARGET_OPSET, cap_ir_version
from bse_predict.labels.first_touch import expand_classes

__all__ = ["RandomForestPredictor"]


@register
class RandomForestPredictor(BasePredictor):
    family = "random_forest"
    fast_params: ClassVar[dict[str, Any]] = {"n_estimators": 16, "max_depth": 5, "min_samples_leaf": 40}

    def __init__(self, n_estimators: int = 200, max_depth: int | None = 8, min_samples_leaf: int = 200,
                 max_features: str | float | None = "sqrt", class_weight: str | None = None,
                 max_samples: float | None = None, seed: int = 7, n_jobs: int = -1) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.max_samples = max_samples
        self.seed = seed
        self.n_jobs = n_jobs

    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        from sklearn.ensemble import RandomForestClassifier

        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features, class_weight=self.class_weight, max_samples=self.max_samples,
            random_state=self.seed,
            n_jobs=self.n_jobs,
        ).fit(X.astype(np.float32), y)  # the trees compare in float32, as ONNX will
        evaluated = validation_data or (X, y)
        return self.validate(*evaluated, reference_labels=y)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return expand_classes(self.forest_.predict_proba(X.astype(np.float32)), self.forest_.classes_)

    def contributions(self, X: np.ndarray) -> Contributions:
        """The forest's exact path decomposition (:func:`bse_predict.explain.trees.forest_contributions`)."""
        values, bias = forest_contributions(self.forest_, X.astype(np.float32))
        present = self.forest_.classes_
        return Contributions(
            names=tabular_column_names(self.forest_.n_features_in_), inputs=np.asarray(X, dtype=np.float64),
            values=expand_classes(values, present), bias=expand_classes(np.tile(bias, (len(X), 1)), present),
            unexplained=np.zeros((len(X), 3)),
            method="exact path decomposition of the forest's probabilities (Saabas)")

    def get_feature_importance(self) -> dict[str, float]:
        names = tabular_column_names(self.forest_.n_features_in_)
        return dict(zip(names, self.forest_.feature_importances_.tolist(), strict=True))

    def export_onnx(self, path: Path) -> None:
        import onnx
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        proto = convert_sklearn(
            self.forest_,
            initial_types=[(self.input_kind, FloatTensorType([None, self.forest_.n_features_in_]))],
            options={id(self.forest_): {"zipmap": False}},
            target_opset={"": TARGET_OPSET, "ai.onnx.ml": ML_OPSET},
        )
        proto = _full_class_output(proto, self.forest_.classes_)
        cap_ir_version(proto)
        onnx.checker.check_model(proto)
        path.write_bytes(proto.SerializeToString())


def _full_class_output(proto: Any, present: np.ndarray) -> Any:
    """skl2onnx answers one column per class the forest saw; a constant 0/1 matrix scatters
    them into (up, down, none) inside the graph, so every family's ONNX answers [batch, 3]."""
    from onnx import TensorProto, helper

    graph = proto.graph
    for node in graph.node:
        node.output[:] = ["probabilities_seen" if name == "probabilities" else name for name in node.output]
    for output in [o for o in graph.output if o.name == "probabilities"]:
        graph.output.remove(output)
    scatter = np.zeros((len(present), 3), dtype=np.float32)
    scatter[np.arange(len(present)), np.asarray(present)] = 1.0
    graph.initializer.append(helper.make_tensor("class_scatter", TensorProto.FLOAT, scatter.shape, scatter.ravel()))
    graph.node.append(helper.make_node("MatMul", ["probabilities_seen", "class_scatter"], [ONNX_OUTPUT]))
    graph.output.append(helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, [None, 3]))
    return proto
