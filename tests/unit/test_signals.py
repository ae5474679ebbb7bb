from __future__ import annotations

import numpy as np
import pytest

from configs.settings import SignalThresholds
from models.signals import target_label, target_prediction

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
