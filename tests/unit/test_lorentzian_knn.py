"""Lorentzian and Euclidean k-NN: distances by hand, the pool, the scaler, the vote, and ONNX parity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import build_dataset
from bse_predict.families import get_model
from bse_predict.families.base import ONNX_OUTPUT
from bse_predict.families.lorentzian_knn import (
    DEFAULT_FEATURES,
    EuclideanKnnPredictor,
    LorentzianKnnPredictor,
    euclidean_distance,
    lorentzian_distance,
    ranking_keys,
)
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.labels.first_touch import DOWN, NONE, UP

TWO = ("rsi_12", "rsi_24")


def _rows(values: list[list[float]], names: tuple[str, ...] = TWO) -> np.ndarray:
    """Full 82-column rows whose ``names`` columns hold ``values`` (the rest 0)."""
    X = np.zeros((len(values), len(FEATURE_NAMES)))
    X[:, [FEATURE_NAMES.index(n) for n in names]] = values
    return X


def _run_onnx(model: LorentzianKnnPredictor, X: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, nearest pool indices) from the exported graph, its TopK indices exposed."""
    model.export_onnx(path)
    proto = onnx.load(str(path))
    proto.graph.output.append(helper.make_tensor_value_info("nearest", TensorProto.INT64, [None, model.k_]))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities, nearest = session.run([ONNX_OUTPUT, "nearest"], {"features": X.astype(np.float32)})
    return probabilities, nearest


# ------------------------------------------------------------ distances by hand
def test_lorentzian_distance_by_hand() -> None:
    # x = (0, 1, 2), y = (1, 1, 0): ln(1 + 1) + ln(1 + 0) + ln(1 + 2) = ln 2 + 0 + ln 3 = ln 6
    assert lorentzian_distance([0, 1, 2], [1, 1, 0]) == pytest.approx(math.log(2) + 0.0 + math.log(3), abs=1e-15)
    # the ranking key is its exponential: (1 + 1)(1 + 0)(1 + 2) = 6, exact in float32
    assert ranking_keys(np.array([[0, 1, 2]]), np.array([[1, 1, 0]]), "lorentzian")[0, 0] == 6.0
    # Euclidean: sqrt(1 + 0 + 4) = sqrt 5; its key is the square, 5
    assert euclidean_distance([0, 1, 2], [1, 1, 0]) == pytest.approx(math.sqrt(5), abs=1e-15)
    assert ranking_keys(np.array([[0, 1, 2]]), np.array([[1, 1, 0]]), "euclidean")[0, 0] == 5.0
    assert lorentzian_distance([0.3, 0.3], [0.3, 0.3]) == 0.0


def test_the_nearest_neighbour_depends_on_the_metric() -> None:
    """From q = (1, 1): A = (0.1, 1) is off by 0.9 in one feature, B = (0.4, 0.4) by 0.6 in both.
    Lorentzian: ln 1.9 = 0.642 for A < 2 ln 1.6 = 0.940 for B, so A is nearer.
    Euclidean: sqrt(0.81) = 0.9 for A > sqrt(0.72) = 0.849 for B, so B is nearer."""
    q, a, b = [1.0, 1.0], [0.1, 1.0], [0.4, 0.4]
    assert lorentzian_distance(q, a) == pytest.approx(math.log(1.9))
    assert lorentzian_distance(q, b) == pytest.approx(2 * math.log(1.6))
    assert euclidean_distance(q, a) == pytest.approx(0.9)
    assert euclidean_distance(q, b) == pytest.approx(math.sqrt(0.72))

    # The same through the predictors. Padding rows at (0,0), (1,0), (0,1) pin the training
    # 1st/99th percentiles of both columns to exactly 0 and 1, so the scaler is the identity;
    # they are farther from q than A and B under both metrics (Lorentzian >= ln 2, Euclidean >= 1).
    train = [[0.0, 0.0]] * 10 + [[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10 + [a, b]
    y = np.array([NONE] * 30 + [UP, DOWN])
    query = _rows([q])
    for family, expected in (("lorentzian_knn", UP), ("euclidean_knn", DOWN)):
        model = get_model(family, feature_names=TWO, k=1, spacing=1, smoothing=0.0)
        model.train(_rows(train), y)
        np.testing.assert_array_equal(model.clip_low_, [0, 0])
        np.testing.assert_array_equal(model.scale_width_, [1, 1])
        assert model.predict(query)[0] == expected
        np.testing.assert_array_equal(model.predict_proba(query)[0], np.eye(3)[expected])


# ------------------------------------------------------------ fitted state
def test_the_pool_is_spaced_bounded_and_newest() -> None:
    X = _rows(np.linspace(0, 1, 200).reshape(100, 2).tolist())
    y = np.arange(100) % 3
    model = LorentzianKnnPredictor(feature_names=TWO, spacing=4, max_pool=10)
    model.train(X, y)
    np.testing.assert_array_equal(model.pool_rows_, np.arange(63, 100, 4))  # 10 rows, the newest included
    np.testing.assert_array_equal(model.pool_labels_, y[63:100:4])
    np.testing.assert_array_equal(model.pool_, model._scale(X[63:100:4][:, model.columns_]))

    unbounded = LorentzianKnnPredictor(feature_names=TWO, spacing=4, max_pool=10_000)
    unbounded.train(X, y)
    np.testing.assert_array_equal(unbounded.pool_rows_, np.arange(3, 100, 4))  # 25 rows, never adjacent
    assert np.all(np.diff(unbounded.pool_rows_) == 4)

    # spread: 10 of the 25 spaced rows 3, 7, ..., 99, evenly (positions 0, 2.67, 5.33, ... 24 rounded)
    spread = LorentzianKnnPredictor(feature_names=TWO, spacing=4, max_pool=10, pool_from="spread")
    spread.train(X, y)
    np.testing.assert_array_equal(spread.pool_rows_, 3 + 4 * np.array([0, 3, 5, 8, 11, 13, 16, 19, 21, 24]))
    np.testing.assert_array_equal(spread.pool_labels_, y[spread.pool_rows_])

    tiny = LorentzianKnnPredictor(feature_names=TWO, k=8, spacing=4, max_pool=3)
    tiny.train(X, y)
    assert tiny.k_ == 3 and tiny.predict_proba(X[:5]).shape == (5, 3)  # k shrinks to the pool


def test_scaling_uses_training_rows_only() -> None:
    rng = np.random.default_rng(0)
    X = _rows(rng.normal(size=(500, 2)).tolist())
    y = rng.integers(0, 3, size=500)
    model = LorentzianKnnPredictor(feature_names=TWO, spacing=1)
    model.train(X, y)
    low, high = np.percentile(X[:, model.columns_], [1, 99], axis=0)
    np.testing.assert_allclose(model.clip_low_, low, rtol=1e-6)
    np.testing.assert_allclose(model.clip_high_, high, rtol=1e-6)

    state = {name: np.copy(value) for name, value in vars(model).items() if name.endswith("_")}
    extreme = _rows([[1e6, -1e6], [-1e9, 1e9], [1e6, 1e6]])
    p_extreme = model.predict_proba(extreme)
    for name, value in state.items():
        np.testing.assert_array_equal(getattr(model, name), value, err_msg=name)
    # an extreme row is clipped to the training range: it scores like a row at the bounds
    at_bounds = _rows([[high[0], low[1]], [low[0], high[1]], [high[0], high[1]]])
    np.testing.assert_array_equal(p_extreme, model.predict_proba(at_bounds))
    assert np.all((model.pool_ >= 0) & (model.pool_ <= 1))


# ------------------------------------------------------------ the vote
def test_smoothed_probabilities_by_hand(tmp_path: Path) -> None:
    """One feature, values 0..9, query 4.5, k = 4: neighbours are the rows valued 4, 5 (0.5 away)
    and 3, 6 (1.5 away; 2 and 7 are 2.5 away), labelled up, up, down, up: counts (3, 1, 0).
    Training shares: up 3/10, down 1/10, none 6/10. With smoothing 2:
    ((3 + 2*0.3), (1 + 2*0.1), (0 + 2*0.6)) / (4 + 2) = (3.6, 1.2, 1.2) / 6 = (0.6, 0.2, 0.2)."""
    values = [[float(v)] for v in range(10)]
    y = np.array([NONE, NONE, NONE, UP, UP, DOWN, UP, NONE, NONE, NONE])
    query = _rows([[4.5]], ("rsi_12",))
    model = LorentzianKnnPredictor(feature_names=("rsi_12",), k=4, spacing=1, smoothing=2.0)
    model.train(_rows(values, ("rsi_12",)), y)
    np.testing.assert_allclose(model.prior_, [0.3, 0.1, 0.6], atol=1e-15)
    assert sorted(model.neighbours(query)[0].tolist()) == [3, 4, 5, 6]
    np.testing.assert_allclose(model.predict_proba(query), [[0.6, 0.2, 0.2]], atol=1e-12)
    onnx_p, _ = _run_onnx(model, query, tmp_path / "m.onnx")
    np.testing.assert_allclose(onnx_p, [[0.6, 0.2, 0.2]], atol=1e-6)

    # smoothing 0: the raw vote (3, 1, 0) / 4, an exact zero allowed
    raw = LorentzianKnnPredictor(feature_names=("rsi_12",), k=4, spacing=1, smoothing=0.0)
    raw.train(_rows(values, ("rsi_12",)), y)
    np.testing.assert_allclose(raw.predict_proba(query), [[0.75, 0.25, 0.0]], atol=1e-15)


def test_ties_go_to_the_lower_pool_index_in_numpy_and_onnx(tmp_path: Path) -> None:
    # rows 1, 2, 3 are identical (value 2); the query sits on them: k = 2 must take rows 1 and 2
    values = [[0.0], [2.0], [2.0], [2.0], [4.0], [4.0]]
    y = np.array([NONE, UP, DOWN, NONE, NONE, NONE])
    query = _rows([[2.0]], ("rsi_12",))
    model = LorentzianKnnPredictor(feature_names=("rsi_12",), k=2, spacing=1, smoothing=0.0)
    model.train(_rows(values, ("rsi_12",)), y)
    np.testing.assert_array_equal(model.neighbours(query), [[1, 2]])
    np.testing.assert_allclose(model.predict_proba(query), [[0.5, 0.5, 0.0]])
    onnx_p, nearest = _run_onnx(model, query, tmp_path / "m.onnx")
    np.testing.assert_array_equal(nearest, [[1, 2]])
    np.testing.assert_allclose(onnx_p, [[0.5, 0.5, 0.0]], atol=1e-7)


# ------------------------------------------------------------ the two families
def test_both_families_are_registered_and_differ_only_in_the_metric() -> None:
    lorentzian, euclidean = get_model("lorentzian_knn"), get_model("euclidean_knn")
    assert isinstance(euclidean, EuclideanKnnPredictor) and isinstance(euclidean, LorentzianKnnPredictor)
    hp_l, hp_e = lorentzian.get_hyperparameters(), euclidean.get_hyperparameters()
    assert hp_l.pop("metric") == "lorentzian" and hp_e.pop("metric") == "euclidean" and hp_l == hp_e
    assert set(DEFAULT_FEATURES) <= set(FEATURE_NAMES)
    with pytest.raises(ValueError, match="unknown"):
        LorentzianKnnPredictor(feature_names=("rsi_14",)).train(_rows([[0.0, 0.0]]), np.array([UP]))
    with pytest.raises(ValueError, match="metric"):
        LorentzianKnnPredictor(metric="cosine").train(_rows([[0.0, 0.0]]), np.array([UP]))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sol(futures_series: dict[str, CandleSeries]) -> dict[str, np.ndarray]:
    dataset = build_dataset(futures_series["SOLUSDT"].tail(3000), (2,), 72)
    X, y = LorentzianKnnPredictor().prepare_data(dataset, "2%")
    return {"x_train": X[:2000], "y_train": y[:2000], "x_test": X[2100:]}


@pytest.mark.parametrize("family", ["lorentzian_knn", "euclidean_knn"])
def test_onnx_equals_numpy_on_real_data(family: str, sol: dict[str, np.ndarray], tmp_path: Path) -> None:
    model = get_model(family)  # the defaults: k = 8, spacing 4, pool of 500 (of 2,000 rows)
    model.train(sol["x_train"], sol["y_train"])
    assert len(model.pool_) == 500 and model.k_ == 8
    X = sol["x_test"]
    onnx_p, nearest = _run_onnx(model, X, tmp_path / "m.onnx")
    np.testing.assert_array_equal(nearest, model.neighbours(X))  # the same neighbours, in the same order
    assert float(np.max(np.abs(onnx_p - model.predict_proba(X)))) <= 1e-5
    single, _ = _run_onnx(model, X[:1], tmp_path / "one.onnx")
    assert float(np.max(np.abs(single - model.predict_proba(X[:1])))) <= 1e-5
    seen = model.prior_ > 0  # smoothing keeps every class seen in training possible (SOL always moved 2% in 72 h)
    assert np.all(onnx_p[:, seen] > 0) and np.all(onnx_p[:, ~seen] == 0)
