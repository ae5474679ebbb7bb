"""The XGBoost family: early stopping on a purged slice, three classes always, GPU fallback, ONNX parity.

Every model here trains on one thread: OpenMP threads stall each other on a busy 2-core machine
(docs/models/xgboost.md, Cost).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import build_dataset
from bse_predict.families import get_model
from bse_predict.families.base import ONNX_OUTPUT
from bse_predict.families.xgboost_family import XGBoostPredictor, cuda_usable
from bse_predict.features.definitions import FEATURE_NAMES


def _noise(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, len(FEATURE_NAMES))), rng.integers(0, 3, size=rows)


def _onnx_probabilities(model: XGBoostPredictor, X: np.ndarray, path: Path) -> np.ndarray:
    model.export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (p,) = session.run([ONNX_OUTPUT], {model.input_kind: X.astype(np.float32)})
    return p


def test_the_registry_finds_the_family() -> None:
    model = get_model("xgboost", max_depth=2)
    assert isinstance(model, XGBoostPredictor) and model.get_hyperparameters()["max_depth"] == 2


def test_early_stopping_stops_on_noise_labels() -> None:
    X, y = _noise(1200)
    model = XGBoostPredictor(n_jobs=1, n_estimators=300, max_depth=3, learning_rate=0.3, min_child_weight=1,
                             early_stopping_rounds=10, validation_fraction=0.2, purge_rows=72)
    metrics = model.train(X, y)
    assert model.best_iteration_ < model.n_estimators - 1
    assert model.booster_.num_boosted_rounds() == model.best_iteration_ + 1 + model.early_stopping_rounds
    assert metrics["rows"] == 240  # the validation slice is what is scored


def test_the_purge_gap_and_the_validation_rows_never_train() -> None:
    X, y = _noise(1000, seed=1)
    params = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.3, "min_child_weight": 1,
              "early_stopping_rounds": 5, "seed": 11}
    held_out = XGBoostPredictor(n_jobs=1, validation_fraction=0.2, purge_rows=72, **params)
    held_out.train(X, y)
    assert held_out.fit_rows_ == 1000 - 200 - 72

    # The same fit spelled out: rows [0, 728) train, rows [728, 800) are dropped, [800, 1000) validate.
    explicit = XGBoostPredictor(n_jobs=1, **params)
    explicit.train(X[:728], y[:728], validation_data=(X[800:], y[800:]))
    assert explicit.fit_rows_ == 728 and explicit.best_iteration_ == held_out.best_iteration_
    np.testing.assert_array_equal(held_out.predict_proba(X), explicit.predict_proba(X))

    # Without the purge the 72 rows would train, and the model would differ.
    unpurged = XGBoostPredictor(n_jobs=1, validation_fraction=0.2, purge_rows=0, **params)
    unpurged.train(X, y)
    assert unpurged.fit_rows_ == 800
    assert not np.array_equal(unpurged.predict_proba(X), held_out.predict_proba(X))


def test_given_validation_data_all_rows_train() -> None:
    X, y = _noise(600, seed=2)
    model = XGBoostPredictor(n_jobs=1, n_estimators=20, early_stopping_rounds=5, min_child_weight=1)
    metrics = model.train(X[:500], y[:500], validation_data=(X[500:], y[500:]))
    assert model.fit_rows_ == 500 and metrics["rows"] == 100


def test_too_few_rows_for_the_purged_holdout_is_an_error() -> None:
    X, y = _noise(100, seed=3)
    with pytest.raises(ValueError, match="too few"):
        XGBoostPredictor(n_jobs=1, validation_fraction=0.2, purge_rows=72).train(X, y)


def test_three_columns_even_without_class_none(tmp_path: Path) -> None:
    X, _ = _noise(900, seed=4)
    y = (X[:, 0] > 0).astype(np.int64)  # up and down only: no NONE in the slice
    model = XGBoostPredictor(n_jobs=1, n_estimators=40, min_child_weight=1, early_stopping_rounds=None)
    model.train(X, y)
    p = model.predict_proba(X)
    assert p.shape == (900, 3) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert p[:, 2].max() < 1e-3 and set(np.unique(model.predict(X))) <= {0, 1}
    onnx_p = _onnx_probabilities(model, X, tmp_path / "model.onnx")
    assert onnx_p.shape == (900, 3) and float(np.max(np.abs(onnx_p - p))) <= 1e-5


def test_use_gpu_falls_back_to_the_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    X, y = _noise(500, seed=5)
    params = {"n_estimators": 10, "min_child_weight": 1, "early_stopping_rounds": None, "n_jobs": 1}
    with caplog.at_level(logging.WARNING, logger="bse_predict.families.xgboost_family"):
        on_gpu = XGBoostPredictor(use_gpu=True, **params)
        on_gpu.train(X, y)
    warned = any("no usable CUDA device" in record.getMessage() for record in caplog.records)
    if cuda_usable():  # a machine with a GPU: it is used, silently
        assert on_gpu.device_ == "cuda" and not warned
        return
    assert on_gpu.device_ == "cpu" and warned
    on_cpu = XGBoostPredictor(use_gpu=False, **params)
    on_cpu.train(X, y)
    np.testing.assert_array_equal(on_gpu.predict_proba(X), on_cpu.predict_proba(X))


@pytest.fixture(scope="module")
def eth(futures_series: dict[str, CandleSeries]) -> tuple[np.ndarray, np.ndarray]:
    dataset = build_dataset(futures_series["ETHUSDT"].tail(3000), (2,), 72)
    return XGBoostPredictor().prepare_data(dataset, "2%")


def test_onnx_export_keeps_only_the_best_rounds_and_equals_native(eth: tuple[np.ndarray, np.ndarray],
                                                                 tmp_path: Path) -> None:
    X, y = eth
    model = XGBoostPredictor(n_jobs=1, n_estimators=400, max_depth=3, learning_rate=0.02, min_child_weight=5,
                             early_stopping_rounds=20, validation_fraction=0.15)
    model.train(X, y)
    kept_rounds = model.best_iteration_ + 1
    assert 10 < kept_rounds < model.booster_.num_boosted_rounds() < model.n_estimators

    onnx_p = _onnx_probabilities(model, X, tmp_path / "model.onnx")
    assert onnx_p.shape == (len(X), 3)
    assert float(np.max(np.abs(onnx_p - model.predict_proba(X)))) <= 1e-5

    (ensemble,) = [n for n in onnx.load(tmp_path / "model.onnx").graph.node if n.op_type == "TreeEnsembleClassifier"]
    tree_ids = next(a.ints for a in ensemble.attribute if a.name == "nodes_treeids")
    assert len(set(tree_ids)) == 3 * kept_rounds  # one tree per class and round, none past the best

    import xgboost as xgb

    every_round = model.booster_.predict(xgb.DMatrix(X.astype(np.float32)))
    assert float(np.max(np.abs(every_round - model.predict_proba(X)))) > 1e-3


def test_feature_importance_names_every_feature(eth: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = eth
    model = XGBoostPredictor(n_jobs=1, n_estimators=30, early_stopping_rounds=None)
    model.train(X, y)
    importance = model.get_feature_importance()
    assert tuple(importance) == FEATURE_NAMES
    assert all(v >= 0 for v in importance.values()) and sum(importance.values()) == pytest.approx(1.0)
