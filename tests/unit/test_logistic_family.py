"""The logistic family answers what scikit-learn's scaler and logistic regression answer, its ONNX graph
the same within 1e-5, also when training saw only two of the three classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bse_predict.families import get_model
from bse_predict.serving.onnx_runner import make_session


def _rows(seed: int, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(900, 6)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0, 50.0]) + 5.0
    signal = X[:, 0] + rng.normal(size=900)
    y = np.array(classes)[np.digitize(signal, np.quantile(signal, np.linspace(0, 1, len(classes) + 1)[1:-1]))]
    return X.astype(np.float32), y


@pytest.mark.parametrize("classes", [(0, 1, 2), (0, 2)])
def test_the_family_equals_scikit_learn_and_its_graph(classes: tuple[int, ...], tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _rows(1, classes)
    model = get_model("logistic", C=0.5)
    model.train(X, y)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000)).fit(X.astype(np.float64), y)
    expected = np.zeros((len(X), 3))
    expected[:, list(classes)] = reference.predict_proba(X.astype(np.float64))
    answer = model.predict_proba(X)
    np.testing.assert_allclose(answer, expected, atol=1e-5)
    assert (answer[:, [c for c in range(3) if c not in classes]] == 0).all()
    model.export_onnx(tmp_path / "logistic.onnx")
    graph = make_session(tmp_path / "logistic.onnx", ["CPUExecutionProvider"]).run(None, {"features": X})[0]
    assert np.abs(graph - answer).max() <= 1e-5
    importance = model.get_feature_importance()
    assert sum(importance.values()) == pytest.approx(1.0) and max(importance, key=importance.get) == "f0"
