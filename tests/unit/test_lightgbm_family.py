"""The LightGBM family: early stopping on a purged slice, three classes always, only the kept rounds
exported, ONNX parity, and no library output on the console."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.families import get_model
from bse_predict.families.base import ONNX_OUTPUT
from bse_predict.families.tree_onnx import probabilities_only
from bse_predict.families.lightgbm_family import LIGHTGBM_OPSET, LightGBMPredictor, float32_thresholds
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.serving.onnx_runner import make_session
from bse_predict.training.dataset import build_dataset

QUICK = {"n_jobs": 1, "num_leaves": 4, "max_depth": 2, "learning_rate": 0.3, "min_child_samples": 5}


def _noise(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, len(FEATURE_NAMES))), rng.integers(0, 3, size=rows)


def _onnx_probabilities(model: LightGBMPredictor, X: np.ndarray, path: Path) -> np.ndarray:
    model.export_onnx(path)
    (p,) = make_session(path, ["CPUExecutionProvider"]).run([ONNX_OUTPUT], {model.input_kind: X.astype(np.float32)})
    return p


def test_the_registry_finds_the_family() -> None:
    model = get_model("lightgbm", num_leaves=4)
    assert isinstance(model, LightGBMPredictor) and model.get_hyperparameters()["num_leaves"] == 4


def test_early_stopping_keeps_only_the_best_rounds_on_noise_labels() -> None:
    X, y = _noise(1200)
    model = LightGBMPredictor(n_estimators=300, early_stopping_rounds=10, validation_fraction=0.2, purge_rows=72,
                              **QUICK)
    metrics = model.train(X, y)
    assert model.rounds_built_ == model.best_iteration_ + 1 + model.early_stopping_rounds < model.n_estimators
    assert model.booster_.current_iteration() == model.best_iteration_ + 1  # the rounds after the best are cut
    assert metrics["rows"] == 240  # the validation slice is what is scored


def test_the_purge_gap_and_the_validation_rows_never_train() -> None:
    X, y = _noise(1000, seed=1)
    params = {"n_estimators": 60, "early_stopping_rounds": 5, "seed": 11, **QUICK}
    held_out = LightGBMPredictor(validation_fraction=0.2, purge_rows=72, **params)
    held_out.train(X, y)
    assert held_out.fit_rows_ == 1000 - 200 - 72

    # The same fit spelled out: rows [0, 728) train, rows [728, 800) are dropped, [800, 1000) validate.
    explicit = LightGBMPredictor(**params)
    explicit.train(X[:728], y[:728], validation_data=(X[800:], y[800:]))
    assert explicit.fit_rows_ == 728 and explicit.best_iteration_ == held_out.best_iteration_
    np.testing.assert_array_equal(held_out.predict_proba(X), explicit.predict_proba(X))

    unpurged = LightGBMPredictor(validation_fraction=0.2, purge_rows=0, **params)
    unpurged.train(X, y)
    assert unpurged.fit_rows_ == 800
    assert not np.array_equal(unpurged.predict_proba(X), held_out.predict_proba(X))


def test_too_few_rows_for_the_purged_holdout_is_an_error() -> None:
    X, y = _noise(100, seed=3)
    with pytest.raises(ValueError, match="too few"):
        LightGBMPredictor(validation_fraction=0.2, purge_rows=72, **QUICK).train(X, y)


def test_three_columns_even_without_class_none(tmp_path: Path) -> None:
    X, _ = _noise(900, seed=4)
    y = (X[:, 0] > 0).astype(np.int64)  # up and down only: no NONE in the slice
    model = LightGBMPredictor(n_estimators=40, early_stopping_rounds=None, **QUICK)
    model.train(X, y)
    p = model.predict_proba(X)
    assert p.shape == (900, 3) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert p[:, 2].max() < 1e-3 and set(np.unique(model.predict(X))) <= {0, 1}
    onnx_p = _onnx_probabilities(model, X, tmp_path / "model.onnx")
    assert onnx_p.shape == (900, 3) and float(np.max(np.abs(onnx_p - p))) <= 1e-5


def test_training_and_export_print_nothing(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Leaves that cannot split (LightGBM's "[Warning] No further splits with positive gain") and the
    reference-dataset parameters stay off the console: ``verbosity=-1`` reaches every call."""
    X, y = _noise(600, seed=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = LightGBMPredictor(n_estimators=20, early_stopping_rounds=5, validation_fraction=0.2, purge_rows=10,
                                  n_jobs=1, num_leaves=31, max_depth=-1, min_child_samples=200)
        model.train(X, y)
        model.export_onnx(tmp_path / "model.onnx")
        model.save(tmp_path / "model.joblib")
        LightGBMPredictor.load(tmp_path / "model.joblib").predict_proba(X)
    printed = capfd.readouterr()
    assert (printed.out, printed.err) == ("", "")
    assert not [str(w.message) for w in caught if "lightgbm" in w.filename]


def _split_thresholds(booster: Any) -> list[tuple[int, float]]:
    """(feature, threshold) of every tree's root split."""
    return [(tree["tree_structure"]["split_feature"], tree["tree_structure"]["threshold"])
            for tree in booster.dump_model()["tree_info"] if "split_feature" in tree["tree_structure"]]


def _converted(booster: Any, X: np.ndarray, path: Path) -> np.ndarray:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    proto = convert_lightgbm(booster, initial_types=[("features", FloatTensorType([None, X.shape[1]]))],
                             target_opset=LIGHTGBM_OPSET, zipmap=False)
    path.write_bytes(probabilities_only(proto, LIGHTGBM_OPSET, 3).SerializeToString())
    (p,) = make_session(path, ["CPUExecutionProvider"]).run([ONNX_OUTPUT], {"features": X})
    return p


def test_thresholds_lowered_to_float32_keep_every_float32_decision_and_the_onnx_graph_exact(tmp_path: Path) -> None:
    """A row whose value is a root threshold rounded up to float32 lies above the double threshold: LightGBM
    sends it right, a float32 comparison with the rounded threshold left. Lowered thresholds change no
    float32 prediction and remove that difference from the graph."""
    import lightgbm as lgb

    X, y = _noise(3000, seed=7)
    X = X.astype(np.float32)
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 4, "learning_rate": 0.3, "verbosity": -1,
              "num_threads": 1}
    trained = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=20)
    planted = []
    for feature, threshold in _split_thresholds(trained):
        if float(np.float32(threshold)) > threshold:
            row = X[0].copy()
            row[feature] = np.float32(threshold)
            planted.append(row)
    rows = np.vstack([X, *planted])
    assert len(planted) > 5, len(planted)

    lowered = lgb.Booster(model_str=float32_thresholds(trained.model_to_string()))
    np.testing.assert_array_equal(lowered.predict(rows), trained.predict(rows))
    thresholds = np.array([t for _, t in _split_thresholds(lowered)])
    np.testing.assert_array_equal(thresholds.astype(np.float32).astype(np.float64), thresholds)

    native = trained.predict(planted_rows := np.vstack(planted))
    assert float(np.max(np.abs(_converted(trained, planted_rows, tmp_path / "raw.onnx") - native))) > 1e-3
    assert float(np.max(np.abs(_converted(lowered, planted_rows, tmp_path / "lowered.onnx") - native))) <= 1e-5


@pytest.fixture(scope="module")
def eth(futures_series: dict[str, CandleSeries]) -> tuple[np.ndarray, np.ndarray]:
    dataset = build_dataset(futures_series["ETHUSDT"].tail(3000), (2,), 72)
    return LightGBMPredictor().prepare_data(dataset, "2%")


def test_onnx_export_holds_the_kept_rounds_and_equals_native(eth: tuple[np.ndarray, np.ndarray],
                                                           tmp_path: Path) -> None:
    X, y = eth
    model = LightGBMPredictor(n_jobs=1, n_estimators=400, learning_rate=0.02, min_child_samples=20,
                              early_stopping_rounds=20, validation_fraction=0.15)
    model.train(X, y)
    kept_rounds = model.best_iteration_ + 1
    assert 10 < kept_rounds < model.rounds_built_ < model.n_estimators

    onnx_p = _onnx_probabilities(model, X, tmp_path / "model.onnx")
    assert onnx_p.shape == (len(X), 3)
    assert float(np.max(np.abs(onnx_p - model.predict_proba(X)))) <= 1e-5

    graph = onnx.load(tmp_path / "model.onnx").graph
    assert [o.name for o in graph.output] == [ONNX_OUTPUT]
    (ensemble,) = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    tree_ids = next(a.ints for a in ensemble.attribute if a.name == "nodes_treeids")
    assert len(set(tree_ids)) == 3 * kept_rounds  # one tree per class and round, none past the best


def test_feature_importance_names_every_feature(eth: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = eth
    model = LightGBMPredictor(n_jobs=1, n_estimators=30, early_stopping_rounds=None)
    model.train(X, y)
    importance = model.get_feature_importance()
    assert tuple(importance) == FEATURE_NAMES
    assert all(v >= 0 for v in importance.values()) and sum(importance.values()) == pytest.approx(1.0)
