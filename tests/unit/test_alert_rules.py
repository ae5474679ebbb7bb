"""What deserves an alert: per-target thresholds from the config, degraded policy, cooldown."""

from __future__ import annotations

import pytest

from configs.settings import AlertsConfig, AlertThreshold, load_settings
from bse_predict.alerts.rules import cooldown_allows, target_sort_key, wanted_calls
from bse_predict.candles.schema import ModelRef, Prediction, TargetPrediction

HOUR = 3_600_000


def _part(p_up: float, p_down: float) -> TargetPrediction:
    p_none = 1 - p_up - p_down
    direction = "up" if p_up >= p_down else "down"
    confidence = max(p_up, p_down) / (p_up + p_down)
    return TargetPrediction(p_up=p_up, p_down=p_down, p_none=p_none, direction=direction, confidence=confidence,
                            signal="NEUTRAL")


def _prediction(degraded: bool = False, **targets: TargetPrediction) -> Prediction:
    return Prediction(id="BTCUSDT|1h|0", symbol="BTCUSDT", timeframe="1h", open_time=0, close=100.0,
                      horizon_hours=72, targets={k.replace("p", "%").lstrip("t"): v for k, v in targets.items()},
                      model=ModelRef(name="rf", version="v1"), degraded=degraded, latency_ms=1.0)


CONFIG = AlertsConfig(thresholds={"1%": AlertThreshold(min_confidence=0.6, min_probability=0.5),
                                  "5%": AlertThreshold(min_confidence=0.7, min_probability=0.2)})


def test_thresholds_are_per_target_and_both_must_hold() -> None:
    p = _prediction(t1p=_part(0.55, 0.35), t2p=_part(0.9, 0.05), t5p=_part(0.15, 0.3))
    calls = wanted_calls(p, CONFIG)
    # 1%: confidence 0.611 >= 0.6 and p_up 0.55 >= 0.5; 2%: no threshold configured; 5%: down 0.3/0.45 = 0.667 < 0.7
    assert [(c.target, c.direction, round(c.probability, 2)) for c in calls] == [("1%", "up", 0.55)]


def test_probability_threshold_alone_can_block() -> None:
    p = _prediction(t1p=_part(0.45, 0.05))  # confidence 0.9, but p_up 0.45 < 0.5
    assert wanted_calls(p, CONFIG) == []


def test_the_called_side_is_what_is_measured() -> None:
    p = _prediction(t5p=_part(0.05, 0.25))  # down: confidence 0.833, p_down 0.25
    (call,) = wanted_calls(p, CONFIG)
    assert call.direction == "down" and call.probability == pytest.approx(0.25)


def test_degraded_predictions_are_flagged_or_held_by_config() -> None:
    p = _prediction(degraded=True, t1p=_part(0.7, 0.2))
    (flagged,) = wanted_calls(p, CONFIG)
    assert flagged.degraded
    assert wanted_calls(p, CONFIG.model_copy(update={"degraded": "hold"})) == []


def test_cooldown_in_candle_time_either_side() -> None:
    assert cooldown_allows(None, 5 * HOUR, 6)
    assert not cooldown_allows(0, 5 * HOUR, 6)
    assert cooldown_allows(0, 6 * HOUR, 6)
    assert not cooldown_allows(10 * HOUR, 5 * HOUR, 6)  # a late, older prediction is held back too
    assert cooldown_allows(0, 0, 0)


def test_default_config_has_a_threshold_for_every_default_target() -> None:
    settings = load_settings()
    assert set(settings.alerts.thresholds) == {f"{t:g}%" for t in settings.market.targets_pct}


def test_targets_sort_numerically() -> None:
    assert sorted(["10%", "2%", "1%", "5%", "x"], key=target_sort_key) == ["1%", "2%", "5%", "10%", "x"]


def test_chat_ids_from_env_and_config_without_duplicates() -> None:
    config = AlertsConfig(chats=("-100", "7"))
    assert config.chat_ids(" 5, -100 ,,") == ("5", "-100", "7")
    assert config.chat_ids(None) == ("-100", "7")
