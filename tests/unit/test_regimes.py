"""The HMM regime model on real BTC hours: the forward filter is hmmlearn's posterior of
each prefix (no look-ahead), states are named from their means and survive refits, and the
ONNX graph computes the same filter."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import SymbolDataset, build_dataset
from bse_predict.families import get_model
from bse_predict.labels.first_touch import UNKNOWN
from bse_predict.families.regimes import (
    FOUR_STATE_NAMES,
    REGIME_FEATURES_OUTPUT,
    TRANSITION_FLOOR,
    RegimeModel,
    align_states,
    filter_graph,
    history_fields,
    match_states,
    raw_observations,
    regime_diagnostics,
    regime_feature_graph,
    regime_feature_names,
    regime_features,
    stitch_windows,
)


@pytest.fixture(scope="module")
def dataset(futures_series: dict[str, CandleSeries]) -> SymbolDataset:
    return build_dataset(futures_series["BTCUSDT"].tail(4000), (2,), 72)


@pytest.fixture(scope="module")
def sequences(dataset: SymbolDataset) -> np.ndarray:
    return dataset.sequences()


@pytest.fixture(scope="module")
def history(sequences: np.ndarray) -> list[np.ndarray]:
    return stitch_windows(sequences)


@pytest.fixture(scope="module")
def model(history: list[np.ndarray]) -> RegimeModel:
    return RegimeModel(n_states=4, seed=1).fit(history)


def test_stitching_rebuilds_the_hourly_history(dataset: SymbolDataset, sequences: np.ndarray,
                                               history: list[np.ndarray]) -> None:
    (stretch,) = history  # the newest 4,000 futures hours have no gap
    assert len(stretch) == len(sequences) + 167
    np.testing.assert_array_equal(stretch[:168], sequences[0])
    np.testing.assert_array_equal(stretch[-168:], sequences[-1])
    whole = history_fields(dataset.grid_ohlcv, end_row=int(dataset.grid_rows[-1]))  # back-to-back windows
    assert len(whole) % 168 == 0 and len(whole) > len(stretch) - 168
    np.testing.assert_array_equal(whole, stretch[-len(whole):])
    dropped = stitch_windows(np.delete(sequences, 1000, axis=0))  # a missing row starts a new stretch
    assert [len(s) for s in dropped] == [1000 + 167, len(sequences) - 1001 + 167]


def test_fit_keeps_hmmlearns_parameters_in_named_order(model: RegimeModel, history: list[np.ndarray]) -> None:
    from hmmlearn.hmm import GaussianHMM
    from threadpoolctl import threadpool_limits

    z = (raw_observations(history[0]) - model.obs_mean_) / model.obs_std_
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-12)
    with threadpool_limits(1):
        hmm = GaussianHMM(n_components=4, covariance_type="diag", min_covar=1e-3, n_iter=100, tol=1e-2,
                          random_state=1).fit(z)
    order = [int(np.argmin(np.linalg.norm(hmm.means_ - mean, axis=1))) for mean in model.means_]
    assert sorted(order) == [0, 1, 2, 3]
    np.testing.assert_allclose(model.means_, hmm.means_[order], atol=1e-8)
    np.testing.assert_allclose(model.covars_, hmm.covars_[order], atol=1e-8)
    floored = np.maximum(hmm.transmat_[np.ix_(order, order)], TRANSITION_FLOOR)
    np.testing.assert_allclose(model.transmat_, floored / floored.sum(axis=1, keepdims=True), atol=1e-8)
    np.testing.assert_allclose(model.start_ @ model.transmat_, model.start_, atol=1e-12)  # stationary


def test_forward_filter_is_hmmlearns_posterior_of_each_prefix(model: RegimeModel,
                                                               history: list[np.ndarray]) -> None:
    """α_t == predict_proba(x[:t+1])[-1]: the filter at t uses hours <= t and nothing else."""
    x = model.observations(history[0][-400:])
    alpha = model.filter(x)
    hmm = model.to_hmmlearn()
    for t in range(0, len(x), 5):
        np.testing.assert_allclose(alpha[t], hmm.predict_proba(x[:t + 1])[-1], rtol=0, atol=1e-10)
    smoothed = hmm.predict_proba(x)  # forward-backward: reads the future, which the filter must not
    assert np.max(np.abs(smoothed - alpha)) > 0.2
    np.testing.assert_allclose(alpha[-1], smoothed[-1], rtol=0, atol=1e-10)  # they agree only at the end


def test_future_hours_never_change_earlier_probabilities(model: RegimeModel, history: list[np.ndarray]) -> None:
    x = model.observations(history[0][:300])
    alpha = model.filter(x)
    rng = np.random.default_rng(0)
    for t in (0, 17, 150, 298):
        changed = x.copy()
        changed[t + 1:] += rng.normal(0, 3, size=changed[t + 1:].shape)
        longer = np.concatenate([changed, rng.normal(0, 1, size=(50, x.shape[1]))])
        np.testing.assert_array_equal(model.filter(changed)[:t + 1], alpha[:t + 1])
        np.testing.assert_array_equal(model.filter(longer)[:t + 1], alpha[:t + 1])


def test_filter_is_vectorised_over_windows(model: RegimeModel, sequences: np.ndarray) -> None:
    rows = sequences[::400]
    batch = model.filter(model.observations(rows))
    assert batch.shape == (len(rows), 168, 4)
    for i, row in enumerate(rows):
        np.testing.assert_allclose(batch[i], model.filter(model.observations(row)), rtol=0, atol=1e-14)
    np.testing.assert_allclose(model.current_probabilities(rows), batch[:, -1], rtol=0, atol=1e-14)
    np.testing.assert_allclose(batch.sum(axis=2), 1.0, atol=1e-12)


def test_states_are_named_from_their_means_and_survive_a_refit(model: RegimeModel,
                                                               history: list[np.ndarray]) -> None:
    other = RegimeModel(n_states=4, seed=2).fit(history)
    for fit in (model, other):
        assert fit.state_names_ == FOUR_STATE_NAMES
        bear, accumulation, distribution, bull = (fit.means_[i] for i in range(4))
        assert bear[0] == fit.means_[:, 0].min() and bull[0] == fit.means_[:, 0].max()
        assert accumulation[1] < distribution[1]  # the calmer of the two middle returns
    perm = match_states(model, other)
    assert [other.state_names_[j] for j in perm] == list(model.state_names_)
    np.testing.assert_array_equal(match_states(model, model), np.arange(4))
    # a refit whose states come out in another order is put back in the previous order and names
    shuffled = other.permuted([2, 0, 3, 1], names=["a", "b", "c", "d"])
    aligned = align_states(model, shuffled)
    assert aligned.state_names_ == model.state_names_
    np.testing.assert_allclose(aligned.means_, other.means_)
    x = model.observations(history[0][-500:])
    np.testing.assert_allclose(shuffled.filter(x), other.filter(x)[:, [2, 0, 3, 1]], atol=1e-12)


def test_other_state_counts_are_numbered_by_mean_return(history: list[np.ndarray]) -> None:
    fit = RegimeModel(n_states=3, n_iter=20, seed=1).fit(history)
    assert fit.state_names_ == ("regime_0", "regime_1", "regime_2")
    assert np.all(np.diff(fit.means_[:, 0]) > 0)


def test_onnx_filter_equals_the_numpy_filter(model: RegimeModel, sequences: np.ndarray) -> None:
    outcome_map = np.random.default_rng(1).dirichlet(np.ones(3), size=4)
    proto = filter_graph(model, outcome_map)
    assert {p.key: p.value for p in proto.metadata_props}["regime_states"] == ",".join(FOUR_STATE_NAMES)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    regimes, probabilities = session.run(["regime_probabilities", "probabilities"], {"sequence": sequences})
    expected = model.current_probabilities(sequences)
    assert float(np.max(np.abs(regimes - expected))) <= 1e-5
    assert float(np.max(np.abs(probabilities - expected @ outcome_map))) <= 1e-5
    (single,) = session.run(["regime_probabilities"], {"sequence": sequences[-1:]})
    assert float(np.max(np.abs(single - expected[-1:]))) <= 1e-5


def test_regime_features_have_their_names_and_ranges(model: RegimeModel, sequences: np.ndarray) -> None:
    values, names = regime_features(model, sequences)
    assert names == regime_feature_names(model) == [
        "regime_p_bear", "regime_p_accumulation", "regime_p_distribution", "regime_p_bull",
        "regime_hours_in_state", "regime_exit_probability", "regime_changed"]
    assert values.shape == (len(sequences), 7) and np.isfinite(values).all()
    p = values[:, :4]
    np.testing.assert_allclose(p, model.current_probabilities(sequences), atol=1e-14)
    hours, leave, changed = values[:, 4], values[:, 5], values[:, 6]
    assert hours.min() >= 1 and hours.max() <= 168 and np.all(hours == np.round(hours))
    assert np.all((leave > 0) & (leave < 1))
    assert set(np.unique(changed)) <= {0.0, 1.0}
    assert np.all(hours[changed == 1] == 1) and np.all(hours[changed == 0] >= 2)
    # consecutive windows: the regime ages by one hour unless it changed
    current = np.argmax(p, axis=1)
    kept = (current[1:] == current[:-1]) & (changed[1:] == 0) & (hours[:-1] < 168)
    np.testing.assert_array_equal(hours[1:][kept], hours[:-1][kept] + 1)


def test_onnx_regime_features_equal_the_numpy_ones(model: RegimeModel, sequences: np.ndarray) -> None:
    """The hybrid's graph computes the same columns as the trainer, every hour filtered in order."""
    session = ort.InferenceSession(regime_feature_graph(model).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (online,) = session.run([REGIME_FEATURES_OUTPUT], {"sequence": sequences})
    offline, _ = regime_features(model, sequences)
    assert float(np.max(np.abs(online - offline))) <= 1e-6
    np.testing.assert_array_equal(online[:, [4, 6]], offline[:, [4, 6]])  # hours in state, changed: exact
    # computed in float64 and rounded once, the columns the trees split are the trainer's float32 values
    assert np.mean(online == offline.astype(np.float32)) >= 0.9999
    assert len(np.unique(offline[:, 4])) > 5  # the check saw regimes of many ages


def test_regime_diagnostics_on_real_hours(model: RegimeModel, history: list[np.ndarray]) -> None:
    train, test = history[0][:3000], history[0][3000:]
    report = regime_diagnostics(model, test, training=[train])
    assert report["states"] == list(FOUR_STATE_NAMES) and report["hours"] == len(test)
    assert np.isclose(sum(report["occupancy"].values()), 1.0)
    persistence = report["persistence"]
    assert set(persistence) == {"transition_diagonal", "expected_dwell_hours", "mean_dwell_hours"}
    assert all(0 < v < 1 for v in persistence["transition_diagonal"].values())
    assert all(v >= 1 for v in persistence["expected_dwell_hours"].values())
    for key in ("forward_return_24h", "forward_volatility_24h"):
        assert set(report[key]["mean"]) == set(FOUR_STATE_NAMES)
        assert 0 <= report[key]["kruskal_p"] <= 1
    assert 0 <= report["stability"]["same_regime_share"] <= 1 and report["stability"]["refit_seed"] == 2


def test_family_maps_filtered_regimes_to_outcomes(dataset: SymbolDataset) -> None:
    family = get_model("hmm_regime", n_states=4, n_iter=30, smoothing=1.0, seed=3)
    X, y = family.prepare_data(dataset, "2%")
    assert X.shape[1:] == (168, 4) and len(X) == int(np.sum(dataset.labels["2%"] != UNKNOWN))
    family.train(X[:2500], y[:2500])
    alpha = family.regimes_.current_probabilities(X[:2500])
    counts = alpha.T @ np.eye(3)[y[:2500]]  # Laplace-smoothed, α-weighted label counts per regime
    np.testing.assert_allclose(family.outcome_map_, (counts + 1) / (counts.sum(axis=1, keepdims=True) + 3))
    p = family.predict_proba(X[2500:])
    np.testing.assert_allclose(p, family.regimes_.current_probabilities(X[2500:]) @ family.outcome_map_)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert family.get_feature_importance() == {}
