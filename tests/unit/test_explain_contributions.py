"""Per-feature contributions: a forest's path decomposition by hand, the softmax path's exactness, and
every tree family and the ensemble adding up to their own ``predict_proba`` on generated candles."""

from __future__ import annotations

import copy

from typing import Any

import numpy as np
import pytest

from bse_predict.candles.synthetic import synthetic_series
from bse_predict.explain.contributions import Contributions, weighted_sum
from bse_predict.explain.errors import NotExplainable
from bse_predict.explain.link import softmax, softmax_path
from bse_predict.explain.trees import forest_contributions
from bse_predict.ensembles.combiners import StackingCombiner
from bse_predict.families import BasePredictor, get_model
from bse_predict.families.ensemble import EnsemblePredictor
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.training.dataset import SymbolDataset, build_dataset

ADDS_UP = 1e-6  # XGBoost's contributions and probabilities are float32; a forest's add up to ~1e-16
RF = {"n_estimators": 12, "max_depth": 5, "min_samples_leaf": 40}
XGB = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.1, "early_stopping_rounds": 10, "n_jobs": 1}
LGB = {"n_estimators": 30, "num_leaves": 7, "learning_rate": 0.1, "early_stopping_rounds": 10, "n_jobs": 1}
HMM = {"n_states": 3, "n_iter": 10}


def test_a_forest_credits_each_split_with_the_move_of_the_class_shares() -> None:
    """x0 = 0 is always up; x0 = 1 is down when x1 = 0 and neither when x1 = 1. The root (shares 1/2, 1/4,
    1/4) splits on x0, its right child (0, 1/2, 1/2) on x1."""
    from sklearn.ensemble import RandomForestClassifier

    X = np.array([[0, 0], [0, 1], [0, 0], [0, 1], [1, 0], [1, 0], [1, 1], [1, 1]], dtype=np.float32)
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    forest = RandomForestClassifier(n_estimators=2, bootstrap=False, max_features=None, random_state=0).fit(X, y)
    values, bias = forest_contributions(forest, np.array([[1, 0], [0, 1]], dtype=np.float32))
    np.testing.assert_allclose(bias, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(values[0], [[-0.5, 0.25, 0.25], [0.0, 0.5, -0.5]])  # (1, 0): down
    np.testing.assert_allclose(values[1], [[0.5, -0.25, -0.25], [0.0, 0.0, 0.0]])  # (0, 1): up; x1 never asked
    np.testing.assert_allclose(bias + values.sum(axis=1), forest.predict_proba([[1, 0], [0, 1]]), atol=1e-15)


def test_one_feature_carries_the_whole_move_of_the_softmax() -> None:
    bias = np.array([[0.2, -0.1, 0.4]])
    values = np.zeros((1, 3, 3))
    values[0, 1] = [1.5, -2.0, 0.3]
    probability, base = softmax_path(values, bias)
    np.testing.assert_allclose(base, softmax(bias), atol=1e-15)
    np.testing.assert_allclose(probability[0, 1], softmax(bias + values[0, 1])[0] - softmax(bias)[0], atol=1e-14)
    assert not probability[0, [0, 2]].any()


def test_the_softmax_path_is_additive_and_fair_to_equal_features() -> None:
    rng = np.random.default_rng(3)
    for scale in (0.1, 1.0, 5.0, 20.0):  # margin moves between two classes past ±100
        values = rng.normal(size=(200, 6, 3)) * scale
        values[:, 5] = values[:, 4]  # two features with the same margin contributions
        bias = rng.normal(size=(200, 3))
        probability, base = softmax_path(values, bias)
        np.testing.assert_allclose(base + probability.sum(axis=1), softmax(bias + values.sum(axis=1)), rtol=0,
                                   atol=1e-12)
        np.testing.assert_allclose(probability.sum(axis=2), 0.0, atol=1e-12)  # probabilities still sum to 1
        np.testing.assert_allclose(probability[:, 4], probability[:, 5], atol=0)


def test_an_ensembles_sum_weights_members_merges_shared_columns_and_keeps_the_rest_unexplained() -> None:
    def part(names: tuple[str, ...], inputs: list[float], values: list[list[float]], bias: list[float]) -> Contributions:
        return Contributions(names, np.array([inputs]), np.array([values]), np.array([bias]), np.zeros((1, 3)), "m")

    a = part(("f", "r"), [1.0, 0.3], [[0.1, -0.1, 0.0], [0.2, 0.0, -0.2]], [0.4, 0.4, 0.2])
    b = part(("f", "r"), [1.0, 0.9], [[0.3, -0.2, -0.1], [-0.1, 0.1, 0.0]], [0.3, 0.3, 0.4])
    other = np.array([[0.2, 0.5, 0.3]])
    total = weighted_sum([("a", a), ("b", b), ("hmm", other)], np.array([[0.5, 0.25, 0.25]]))
    assert total.names == ("f", "r", "b:r")  # same f in both; each its own r (say two HMMs)
    np.testing.assert_allclose(total.inputs, [[1.0, 0.3, 0.9]])
    np.testing.assert_allclose(total.values[0], [[0.125, -0.1, -0.025], [0.1, 0.0, -0.1], [-0.025, 0.025, 0.0]])
    np.testing.assert_allclose(total.bias[0], [0.275, 0.275, 0.2])
    np.testing.assert_allclose(total.unexplained[0], 0.25 * other[0])
    expected = 0.5 * a.output() + 0.25 * b.output() + 0.25 * other
    np.testing.assert_allclose(total.output(), expected, atol=1e-15)
    assert "hmm: no per-feature contributions" in total.method


@pytest.fixture(scope="module")
def generated() -> SymbolDataset:
    """2,400 generated hours: a random walk carries no signal, but the trees split all the same."""
    return build_dataset(synthetic_series("GENUSDT", 2400, 11, 1_767_225_600_000), (1,), 72)


def _fitted(family: str, dataset: SymbolDataset, **params: Any) -> tuple[BasePredictor, Any]:
    model = get_model(family, **params)
    X, y = model.prepare_data(dataset, "1%")
    model.train(X[:1600], y[:1600])
    return model, X[1700:1900]


@pytest.mark.parametrize(("family", "params"), [
    ("random_forest", RF), ("xgboost", XGB), ("lightgbm", LGB),
    ("random_forest_regimes", {"base_params": RF, **HMM}), ("xgboost_regimes", {"base_params": XGB, **HMM}),
])
def test_a_tree_familys_contributions_add_up_to_its_probabilities(family: str, params: dict[str, Any],
                                                                   generated: SymbolDataset) -> None:
    model, rows = _fitted(family, generated, **params)
    c = model.contributions(rows)
    np.testing.assert_allclose(c.output(), model.predict_proba(rows), rtol=0, atol=ADDS_UP)
    assert c.names[:len(FEATURE_NAMES)] == FEATURE_NAMES and len(c.names) == c.inputs.shape[1] == c.values.shape[1]
    if family.endswith("_regimes"):
        assert c.names[len(FEATURE_NAMES)] == "regime_p_" + model.regimes_.state_names_[0]  # type: ignore[attr-defined]
    np.testing.assert_allclose(c.values.sum(axis=2), 0.0, atol=1e-12)
    assert not c.unexplained.any() and np.abs(c.values).sum(axis=(0, 2)).max() > 0.01


@pytest.fixture(scope="module")
def ensemble(generated: SymbolDataset) -> tuple[EnsemblePredictor, Any]:
    model, rows = _fitted("ensemble", generated, members=["random_forest", "xgboost", "hmm_regime"],
                          strategy="regime", regime_min_rows=50, purge_rows=24,
                          member_params={"random_forest": RF, "xgboost": XGB, "hmm_regime": HMM})
    assert isinstance(model, EnsemblePredictor)
    return model, rows


@pytest.mark.parametrize("strategy", ["regime", "weighted", "dynamic", "member_xgboost"])
def test_the_ensembles_contributions_add_up_to_each_strategys_probabilities(
        strategy: str, ensemble: tuple[EnsemblePredictor, Any]) -> None:
    model, rows = ensemble
    c = model.strategy_contributions(rows, strategy)
    np.testing.assert_allclose(c.output(), model.predict_strategy(rows, strategy), rtol=0, atol=ADDS_UP)
    assert c.names == FEATURE_NAMES
    if strategy == "member_xgboost":
        assert not c.unexplained.any()
    else:  # the HMM and climatology members are no trees: their weighted answer is what no feature explains
        assert c.unexplained.min() > 0 and "hmm_regime, climatology: no per-feature contributions" in c.method
    if strategy == "regime":
        np.testing.assert_allclose(model.contributions(rows).output(), c.output(), atol=0)


def test_the_stacking_combiner_and_a_non_tree_family_are_not_explained(
        ensemble: tuple[EnsemblePredictor, Any]) -> None:
    model, rows = ensemble
    if model.stacking_ is None:  # dropped on its inner folds: "stacking" serves the weighted mixture, explainable
        np.testing.assert_allclose(model.strategy_contributions(rows, "stacking").output(),
                                   model.predict_strategy(rows, "weighted"), rtol=0, atol=ADDS_UP)
        model = copy.copy(model)
        model.stacking_ = StackingCombiner.fit(model._member_probabilities(rows), np.arange(len(rows)) % 3, 1.0, 0)
    with pytest.raises(NotExplainable, match="stacking"):
        model.strategy_contributions(rows, "stacking")
    with pytest.raises(NotExplainable, match="not a tree family"):
        model.members_[2].contributions(rows.parts["sequence"])
