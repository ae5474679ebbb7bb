"""From calibrated class probabilities to the contract's per-target call.

``direction`` is the larger of p_up and p_down; ``confidence`` is that one over
(p_up + p_down): how sure the model is about the side, given that a barrier is
touched at all. The signal comes from per-config thresholds on confidence.
"""

from __future__ import annotations

import numpy as np

from configs.settings import SignalThresholds
from models.schema import Signal, TargetPrediction

__all__ = ["target_prediction", "signal_for", "target_label"]


def target_label(target_pct: float) -> str:
    """The contract's target key: 1 -> "1%", 2.5 -> "2.5%"."""
    return f"{target_pct:g}%"


def signal_for(direction: str, confidence: float, thresholds: SignalThresholds) -> Signal:
    if confidence >= thresholds.strong:
        return "STRONG_BUY" if direction == "up" else "STRONG_SELL"
    if confidence >= thresholds.normal:
        return "LONG" if direction == "up" else "SHORT"
    return "NEUTRAL"


def target_prediction(probabilities: np.ndarray, thresholds: SignalThresholds) -> TargetPrediction:
    """One row of class probabilities (up, down, none) to the message part of one target."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    p = p / p.sum()
    p_up, p_down, p_none = (float(v) for v in p)
    direction = "up" if p_up >= p_down else "down"
    touched = p_up + p_down
    confidence = (max(p_up, p_down) / touched) if touched > 0 else 0.5
    return TargetPrediction(
        p_up=p_up,
        p_down=p_down,
        p_none=p_none,
        direction=direction,
        confidence=confidence,
        signal=signal_for(direction, confidence, thresholds),
    )
