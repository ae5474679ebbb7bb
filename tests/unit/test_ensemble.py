"""The ensemble: combiners step by step, the one-graph export against the native ensemble,
failure handling in both, and adaptive weights that never drop a member or look ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import build_dataset
from bse_predict.ensembles.combiners import (
    CombinerSpec,
    StackingCombiner,
    adaptive_predictions,
    hedge_update,
    stacking_predict,
    weighted_average,
)
from bse_predict.ensembles.weight_fit import fit_weights
from bse_predict.ensembles.graph import ensemble_graph
from bse_predict.families import get_model
from bse_predict.families.ensemble import EnsemblePredictor
from bse_predict.families.onnx_limits import TARGET_OPSET
from bse_predict.features.inputs import InputRows

RF = {"n_estimators": 12, "max_depth": 4, "min_samples_leaf": 40}
HMM = {"n_states": 3, "n_iter": 10}


@pytest.fixture(scope="module")
def mixed(futures_series: dict[str, CandleSeries]) -> tuple[EnsemblePredictor, InputRows, np.ndarray]:
    """RandomForest + Euclidean k-NN + HMM regimes on real BTC hours: two input kinds, all strategies."""
    dataset = build_dataset(futures_series["BTCUSDT"].tail(3400), (2,), 72)
    model = get_model("ensemble", members=["random_forest", "euclidean_knn", "hmm_regime"], strategy="regime",
                      member_params={"random_forest": RF, "euclidean_knn": {"k": 16, "max_pool": 400},
                                     "hmm_regime": HMM}, regime_min_rows=100)
    X, y = model.prepare_data(dataset, "2%")
    assert isinstance(X, InputRows) and model.input_kinds == ("features", "sequence")
    model.train(X[:2400], y[:2400])
    given = np.concatenate([y[:2400 - 600 - 72], y[2400 - 600:2400]])  # its members' fit rows and its validation rows
    return model, X[2500:], y[2500:], given  # type: ignore[return-value]


def test_weighted_average_drops_failed_members_and_renormalises() -> None:
    a = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    b = np.array([[0.2, 0.5, 0.3], [np.nan, np.nan, np.nan]])
    p, degraded = weighted_average(np.stack([a, b]), np.array([0.25, 0.75]))
    np.testing.assert_allclose(p[0], 0.25 * a[0] + 0.75 * b[0])
    np.testing.assert_allclose(p[1], a[1])  # b failed on row 1: a alone, weight renormalised to 1
    assert degraded.tolist() == [False, True]


def test_fitted_weights_favour_the_better_member_and_may_drop_the_other() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    good = np.full((2000, 3), 0.1)
    good[np.arange(2000), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 2000)
    w = fit_weights(np.stack([good, noise]), y, penalty=0.01)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.9 and w[1] >= 0.0


def test_stacking_learns_from_out_of_fold_rows_and_imputes_a_failed_member() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 1500)
    informative = rng.dirichlet(np.ones(3), 1500) * 0.5
    informative[np.arange(1500), y] += 0.5
    probs = np.stack([informative, rng.dirichlet(np.ones(3), 1500)])
    combiner = StackingCombiner.fit(probs, y, c=1.0, seed=0)
    p, degraded = stacking_predict(probs, combiner)
    assert np.allclose(p.sum(axis=1), 1.0) and (p.argmax(axis=1) == y).mean() > 0.6 and not degraded.any()
    broken = probs.copy()
    broken[1, :10] = np.nan
    p2, degraded2 = stacking_predict(broken, combiner)
    assert degraded2[:10].all() and not degraded2[10:].any() and np.isfinite(p2).all()


def test_hedge_update_moves_weight_to_the_right_member_and_never_below_the_floor() -> None:
    w = np.array([0.5, 0.5])
    for _ in range(200):
        w = hedge_update(w, np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]]), outcome=0, rate=1.0, floor=0.05)
    assert w[0] > w[1] and w[1] >= 0.05 * 0.95 and w.sum() == pytest.approx(1.0)


def test_adaptive_weights_use_an_outcome_only_after_its_horizon() -> None:
    """Changing the outcome of row t changes nothing before t + horizon."""
    rng = np.random.default_rng(2)
    n, horizon = 300, 72
    probs = rng.dirichlet(np.ones(3), (2, n))
    y = rng.integers(0, 3, n)
    times = np.arange(n) * 3_600_000
    base = adaptive_predictions(probs, y, times, horizon * 3_600_000, np.array([0.5, 0.5]), 0.5, 0.05)
    flipped = y.copy()
    flipped[100] = (y[100] + 1) % 3
    other = adaptive_predictions(probs, flipped, times, horizon * 3_600_000, np.array([0.5, 0.5]), 0.5, 0.05)
    np.testing.assert_array_equal(base[: 100 + horizon], other[: 100 + horizon])
    assert not np.array_equal(base[100 + horizon:], other[100 + horizon:])


def _softmax_member(columns: list[int]) -> object:
    """A tiny member graph: softmax of three chosen feature columns (NaN in, NaN out)."""
    nodes = [helper.make_node("Gather", ["features", "cols"], ["picked"], axis=1),
             helper.make_node("Softmax", ["picked"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "member", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 6])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor("cols", TensorProto.INT64, [3], columns)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)])
    proto.ir_version = 9
    return proto


@pytest.mark.parametrize("climatology", [None, np.array([0.3, 0.25, 0.45])])
@pytest.mark.parametrize("strategy", ["weighted", "dynamic", "stacking"])
def test_the_graph_drops_a_nan_member_in_graph_and_flags_degraded(strategy: str, climatology: np.ndarray | None,
                                                                   tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x[5:9, 3] = np.nan  # member 1 reads column 3: it fails on rows 5..8
    members = [_softmax_member([0, 1, 2]), _softmax_member([3, 4, 5])]
    z = x.astype(np.float64)
    native = np.stack([np.exp(z[:, :3]) / np.exp(z[:, :3]).sum(1, keepdims=True),
                       np.exp(z[:, 3:]) / np.exp(z[:, 3:]).sum(1, keepdims=True)])
    y = rng.integers(0, 3, 40)
    stacking = StackingCombiner.fit(np.nan_to_num(native, nan=1 / 3), y, 1.0, 0)
    weights = np.array([0.3, 0.7]) if climatology is None else np.array([0.2, 0.5, 0.3])
    spec = CombinerSpec(strategy, weights, power=2.0, stacking=stacking, climatology=climatology)
    (tmp_path / "e.onnx").write_bytes(ensemble_graph(members, spec).SerializeToString())
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    p, degraded = session.run(["probabilities", "degraded"], {"features": x})
    assert degraded.tolist() == [5 <= i <= 8 for i in range(40)]
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
    model = EnsemblePredictor()
    model.weights_, model.power_, model.stacking_, model.by_regime_ = spec.weights, 2.0, stacking, None
    model.climatology_ = climatology
    expected, expected_degraded = model.combine(native, strategy)
    np.testing.assert_allclose(p, expected, atol=1e-5)
    assert expected_degraded.tolist() == degraded.tolist()


def test_every_strategy_exports_one_graph_equal_to_the_native_ensemble(mixed, tmp_path: Path) -> None:
    """The climatology member included: a constant node of the graph, as the native mixture has it."""
    model, X, _, y_given = mixed
    assert set(model.variants(include_own=True, members=False)) == {"weighted", "dynamic", "regime", "stacking"}
    assert "member_hmm_regime" in model.variants()
    for strategy in model.variants(include_own=True, members=False):
        model.export_strategy(tmp_path / f"{strategy}.onnx", strategy)
        session = ort.InferenceSession(str(tmp_path / f"{strategy}.onnx"), providers=["CPUExecutionProvider"])
        assert {i.name for i in session.get_inputs()} == {"features", "sequence"}
        p, degraded, regime = session.run(["probabilities", "degraded", "regime_probabilities"], model.onnx_feed(X))
        native, native_degraded = model.predict_with_status(X, strategy)
        assert float(np.max(np.abs(p - native))) <= 1e-5, strategy
        assert not degraded.any() and not native_degraded.any()
        assert regime.shape == (len(X), 3)
        meta = session.get_modelmeta().custom_metadata_map
        served = "weighted" if strategy == "stacking" and model.stacking_ is None else strategy  # dropped stacking
        assert meta["strategy"] == served and len(meta["regime_states"].split(",")) == 3
    np.testing.assert_allclose(model.climatology_, (np.bincount(y_given, minlength=3) + 0.5) / (len(y_given) + 1.5))


def test_regime_weights_differ_by_regime_and_a_failing_member_degrades_natively(mixed) -> None:
    model, X, _, _ = mixed
    assert model.by_regime_.shape == (3, 4)  # three members and the climatology member
    assert np.allclose(model.by_regime_.sum(axis=1), 1.0) and (model.by_regime_ >= 0.0).all()
    rows = X[:20]
    knn = model.members_[1]
    original = knn.predict_proba
    knn.predict_proba = lambda _: (_ for _ in ()).throw(RuntimeError("member down"))  # type: ignore[method-assign]
    try:
        p, degraded = model.predict_with_status(rows, "weighted")
    finally:
        knn.predict_proba = original  # type: ignore[method-assign]
    assert degraded.all() and np.allclose(p.sum(axis=1), 1.0)
    w = model.weights_[[0, 2, 3]] / model.weights_[[0, 2, 3]].sum()  # the k-NN's weight is shared out
    alone = np.stack([model.members_[0].predict_proba(rows.parts["features"]),
                      model.members_[2].predict_proba(rows.parts["sequence"]),
                      np.tile(model.climatology_, (len(rows), 1))])
    np.testing.assert_allclose(p, np.einsum("m,mnc->nc", w, alone), atol=1e-12)
