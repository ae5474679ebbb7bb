from __future__ import annotations

import numpy as np
import pytest

from configs.settings import SignalThresholds
from bse_predict.serving.signals import expected_value_pct, target_label, target_prediction

THRESHOLDS = SignalThresholds(strong=0.65, normal=0.56)


@pytest.mark.parametrize(
    ("probabilities", "direction", "signal"),
    [
        ((0.41, 0.44, 0.15), "down", "NEUTRAL"),
        ((0.60, 0.30, 0.10), "up", "STRONG_BUY"),
        ((0.50, 0.39, 0.11), "up", "LONG"),
        ((0.20, 0.30, 0.50), "down", "SHORT"),
        ((0.05, 0.45, 0.50), "down", "STRONG_SELL"),
    ],
)
def test_direction_confidence_and_signal(probabilities: tuple[float, float, float], direction: str, signal: str) -> None:
    part = target_prediction(np.array(probabilities), THRESHOLDS)
    p_up, p_down, _ = probabilities
    assert part.direction == direction
    assert part.confidence == pytest.approx(max(p_up, p_down) / (p_up + p_down))
    assert part.signal == signal


def test_contract_example_confidence() -> None:
    part = target_prediction(np.array([0.41, 0.44, 0.15]), THRESHOLDS)
    assert part.confidence == pytest.approx(0.5176, abs=1e-4)


def test_target_labels() -> None:
    assert [target_label(x) for x in (1, 2.0, 5, 2.5)] == ["1%", "2%", "5%", "2.5%"]


def test_per_target_thresholds_override_the_shared_pair() -> None:
    thresholds = SignalThresholds(strong=0.65, normal=0.56, per_target={"5%": {"strong": 0.9, "normal": 0.8}})
    p = np.array([0.50, 0.39, 0.11])  # confidence 0.562
    assert target_prediction(p, thresholds, "1%").signal == "LONG"
    assert target_prediction(p, thresholds, "5%").signal == "NEUTRAL"
    assert target_prediction(np.array([0.6, 0.1, 0.3]), thresholds, "5%").signal == "LONG"  # 0.857: normal, not strong
    assert target_prediction(np.array([0.6, 0.05, 0.35]), thresholds, "5%").signal == "STRONG_BUY"  # 0.923


def test_expected_value_rule_after_costs() -> None:
    """Round trip cost 2 x (0.05 + 0.02) = 0.14 %: a long at 1 % needs (p_up - p_down) x 1 > 0.14."""
    thresholds = SignalThresholds(require_positive_ev=True, taker_fee_pct=0.05, slippage_pct=0.02)
    assert thresholds.round_trip_cost_pct == pytest.approx(0.14)
    assert expected_value_pct(np.array([0.5]), np.array([0.4]), 1.0, 0.14, np.array([True]))[0] == pytest.approx(-0.04)
    confident_but_thin = np.array([0.30, 0.20, 0.50])  # confidence 0.6 -> LONG without the rule; edge 0.10 x 1 % < 0.14
    assert target_prediction(confident_but_thin, thresholds.model_copy(update={"require_positive_ev": False}),
                             "1%").signal == "LONG"
    assert target_prediction(confident_but_thin, thresholds, "1%").signal == "NEUTRAL"
    assert target_prediction(confident_but_thin, thresholds, "2%").signal == "LONG"  # 0.10 x 2 % = 0.2 > 0.14
    assert target_prediction(np.array([0.10, 0.30, 0.60]), thresholds, "5%").signal == "STRONG_SELL"


def test_break_even_confidence_is_half_plus_cost_over_twice_the_bracket() -> None:
    """With p_none = 0 the EV rule is exactly confidence > 0.5 + C / 2X."""
    for bracket, cost in ((1.0, 0.2), (2.0, 0.2), (5.0, 0.14)):
        edge = 0.5 + cost / (2 * bracket)
        above, below = edge + 1e-6, edge - 1e-6
        up = np.array([above, below])
        ev = expected_value_pct(up, 1 - up, bracket, cost, np.array([True, True]))
        assert ev[0] > 0 > ev[1]
