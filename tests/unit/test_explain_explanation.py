"""A call's explanation: labels, high and low, the human line, and the explainer of a published prediction
against a real version (an ensemble served member by member, as the worker serves it) on generated candles."""

from __future__ import annotations

import numpy as np
import pytest

from configs.settings import Settings, load_settings
from bse_predict.candles.files import CandleSeries
from bse_predict.candles.schema import ModelRef, Prediction, prediction_id
from bse_predict.candles.synthetic import synthetic_series
from bse_predict.candles.window import window_ending_at
from bse_predict.ensembles.member_runner import load_model_set
from bse_predict.explain.contributions import Contributions
from bse_predict.explain.errors import ExplanationUnavailable
from bse_predict.explain.explainer import MATCH_TOLERANCE, Explainer
from bse_predict.explain.explanation import explain_row, explanation_line, feature_label, training_level
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.features.labels import FEATURE_LABELS
from bse_predict.monitoring.drift import FeatureBins
from bse_predict.serving.model_set import predict_windows
from bse_predict.serving.signals import target_predictions

HOUR = 3_600_000
QUARTILES = FeatureBins(edges=(0.1, 0.2, 0.3), expected=(0.25, 0.25, 0.25, 0.25))


def test_every_feature_has_its_own_readable_label() -> None:
    assert tuple(FEATURE_LABELS) == FEATURE_NAMES
    assert len(set(FEATURE_LABELS.values())) == len(FEATURE_NAMES)
    assert FEATURE_LABELS["range_position_168"] == "168 h range position"
    assert FEATURE_LABELS["volatility_ratio_24_168"] == "24 h / 168 h volatility ratio"
    assert FEATURE_LABELS["return_lag_1"] == "this hour's return" and FEATURE_LABELS["return_lag_3"] == "return 2 h ago"
    assert feature_label("regime_p_bull") == "HMM bull regime probability"
    assert feature_label("xgboost_regimes:regime_changed") == "HMM regime just changed (xgboost_regimes)"
    assert feature_label("f7") == "f7"


def test_high_and_low_say_which_side_of_the_training_median_a_value_lies() -> None:
    assert [training_level(v, QUARTILES) for v in (0.05, 0.15, 0.2, 0.35)] == ["low", "low", "high", "high"]
    straddling = FeatureBins(edges=(0.0, 1.0), expected=(0.1, 0.8, 0.1))  # merged edges: a bin across the median
    assert training_level(0.5, straddling) is None
    assert training_level(0.5, None) is None and training_level(float("nan"), QUARTILES) is None


def _hand_made() -> Contributions:
    names = ("range_position_168", "volatility_24", "rsi_6", "regime_p_bull", "hour_sin")
    values = np.array([[[0.05, -0.03, -0.02], [0.02, 0.0, -0.02], [-0.01, 0.03, -0.02], [0.0, 0.01, -0.01],
                        [0.0, 0.0, 0.0]]])
    return Contributions(names, np.array([[0.9, 0.05, 0.8, 0.7, 0.5]]), values, np.array([[0.35, 0.3, 0.25]]),
                         np.array([[0.05, 0.05, 0.0]]), "by hand")


def test_the_line_names_the_two_largest_pushes_each_way_with_their_level() -> None:
    bins = {"range_position_168": QUARTILES, "volatility_24": QUARTILES, "rsi_6": QUARTILES}
    explanation = explain_row(_hand_made(), 0, "BTCUSDT|1h|0", "2%", ModelRef(name="m", version="v"), bins)
    assert [c.name for c in explanation.contributions] == [
        "range_position_168", "rsi_6", "volatility_24", "regime_p_bull", "hour_sin"]  # by |p_up - p_down|
    assert explanation.output.model_dump() == pytest.approx({"p_up": 0.46, "p_down": 0.36, "p_none": 0.18})
    assert explanation_line(explanation) == ("pushing up: 168 h range position high, 24 h volatility low; "
                                             "pushing down: 6 h RSI high, HMM bull regime probability")
    assert explanation_line(explanation, per_side=1) == ("pushing up: 168 h range position high; "
                                                         "pushing down: 6 h RSI high")
    down_only = explanation.model_copy(update={"contributions": explanation.contributions[1:2]})
    assert explanation_line(down_only) == "pushing down: 6 h RSI high"
    assert explanation_line(explanation.model_copy(update={"contributions": explanation.contributions[4:]})) is None


# ------------------------------------------------------------------ the explainer on a real version

VERSION = "v-explain"
END_MS = 1_767_225_600_000


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, CandleSeries]:
    """An ensemble (RandomForest, XGBoost, HMM regimes; regime weights) for 1%, on 1,900 generated hours."""
    from bse_predict.training.train import train_version

    series = synthetic_series("GENUSDT", 1900, 5, END_MS)
    models_dir = tmp_path_factory.mktemp("explain-models")
    families = {name: {"enabled": False} for name in load_settings().models.families}
    families["ensemble"] = {"enabled": True, "params": {
        "members": ["random_forest", "xgboost", "hmm_regime"], "strategy": "regime", "regime_min_rows": 50,
        "member_params": {"random_forest": {"n_estimators": 12, "max_depth": 5, "min_samples_leaf": 40},
                          "xgboost": {"n_estimators": 30, "learning_rate": 0.1, "early_stopping_rounds": 10},
                          "hmm_regime": {"n_states": 3, "n_iter": 10}}}}
    settings = load_settings(models_dir=str(models_dir), market={"targets_pct": [1]},
                             models={"served": "ensemble", "families": families})
    train_version([series.tail(1750)], settings, VERSION, show_progress=False)
    return settings, series


def _published(settings: Settings, series: CandleSeries, open_time: int, model: str = "ensemble") -> Prediction:
    """The prediction the worker publishes for the candle at ``open_time``: the served model (an ensemble member
    by member, in ONNX) on the window of the candles up to it."""
    served = load_model_set(settings.models_dir / VERSION, settings.worker.ensemble, model_name=model)
    window = window_ending_at(series.open_time_ms, series.ohlcv, open_time, served.min_history, HOUR)
    assert window is not None
    p = predict_windows(served, window[None], np.array([open_time]))["1%"]
    row = int(np.searchsorted(series.open_time_ms, open_time))
    return Prediction(id=prediction_id(series.symbol, "1h", open_time), symbol=series.symbol, timeframe="1h",
                      open_time=open_time, close=float(series.ohlcv[row, 3]), horizon_hours=72,
                      targets={"1%": target_predictions(p, settings.signals, "1%")[0]},
                      model=ModelRef(name=model, version=VERSION), latency_ms=1.0)


def test_a_published_ensemble_call_is_explained_and_adds_up_to_what_was_published(
        version: tuple[Settings, CandleSeries]) -> None:
    settings, series = version
    explainer = Explainer(settings.models_dir)
    for open_time in series.open_time_ms[-3:]:  # candles the version never trained on
        prediction = _published(settings, series, int(open_time))
        # the store holds candles after the call's too (a late alert): they are ignored
        explanation = explainer.explain(prediction, "1%", series.open_time_ms, series.ohlcv)
        published = prediction.targets["1%"]
        for cls in ("p_up", "p_down", "p_none"):
            assert abs(getattr(explanation.output, cls) - getattr(published, cls)) <= MATCH_TOLERANCE
            parts = getattr(explanation.base, cls) + getattr(explanation.unexplained, cls)
            assert parts + sum(getattr(c, cls) for c in explanation.contributions) == pytest.approx(
                getattr(explanation.output, cls), abs=1e-12)
        assert {c.name for c in explanation.contributions} == set(FEATURE_NAMES)
        assert explanation.unexplained.p_up > 0 and "hmm_regime" in explanation.method  # the HMM member's part
        assert any(c.level is not None for c in explanation.contributions)  # the manifest's training bins
        line = explanation_line(explanation)
        assert line is not None and line.startswith("pushing ")


def test_a_member_alone_is_explained_and_what_is_no_tree_sum_is_not(version: tuple[Settings, CandleSeries]) -> None:
    settings, series = version
    explainer = Explainer(settings.models_dir)
    open_time = int(series.open_time_ms[-1])
    alone = explainer.explain(_published(settings, series, open_time, "ensemble_member_xgboost"), "1%",
                              series.open_time_ms, series.ohlcv)
    assert alone.unexplained.model_dump() == {"p_up": 0.0, "p_down": 0.0, "p_none": 0.0}
    assert "TreeSHAP" in alone.method
    for model, reason in (("ensemble_member_hmm_regime", "not a tree family"),
                          ("ensemble_stacking", "stacking combiner")):
        with pytest.raises(ExplanationUnavailable, match=reason):
            explainer.explain(_published(settings, series, open_time, model), "1%", series.open_time_ms,
                              series.ohlcv)


def test_nothing_false_is_said_when_the_window_or_the_answer_is_not_the_published_ones(
        version: tuple[Settings, CandleSeries]) -> None:
    settings, series = version
    explainer = Explainer(settings.models_dir)
    open_time = int(series.open_time_ms[-2])
    prediction = _published(settings, series, open_time)
    times, ohlcv = series.open_time_ms, series.ohlcv
    late = ohlcv.copy()
    late[-10, 1:4] *= 1.05  # a candle inside the window changed after the prediction (a late correction)
    with pytest.raises(ExplanationUnavailable, match="differs from the published one"):
        explainer.explain(prediction, "1%", times, late)
    part = prediction.targets["1%"]
    moved = part.model_copy(update={"p_up": part.p_up - 0.01, "p_none": part.p_none + 0.01})
    with pytest.raises(ExplanationUnavailable, match="differs from the published one"):
        explainer.explain(prediction.model_copy(update={"targets": {"1%": moved}}), "1%", times, ohlcv)
    with pytest.raises(ExplanationUnavailable, match="no longer hold"):
        explainer.explain(prediction, "1%", times[-100:], ohlcv[-100:])
    with pytest.raises(ExplanationUnavailable, match="no target 2%"):
        explainer.explain(prediction, "2%", times, ohlcv)
    for model, reason in ((ModelRef(name="ensemble", version="../" + VERSION), "not a version name"),
                          (ModelRef(name="ensemble", version="v-gone"), "cannot be loaded"),
                          (ModelRef(name="lstm", version=VERSION), "cannot be loaded.*has no model 'lstm'")):
        with pytest.raises(ExplanationUnavailable, match=reason):
            explainer.explain(prediction.model_copy(update={"model": model}), "1%", times, ohlcv)
    assert explainer.explain(prediction, "1%", times, ohlcv).prediction_id == prediction.id
