"""From calibrated class probabilities to the contract's per-target call.

``direction`` is the larger of p_up and p_down; ``confidence`` is that one over
(p_up + p_down): how sure the model is about the side, given that a barrier is
touched at all. The signal comes from per-config thresholds on confidence.
"""

from __future__ import annotations

import numpy as np

from configs.settings import SignalThresholds
from models.schema import Signal, TargetPrediction

__all__ = ["target_prediction", "target_predictions", "signal_for", "target_label"]


def target_label(target_pct: float) -> str:
    """The contract's target key: 1 -> "1%", 2.5 -> "2.5%"."""
    return f"{target_pct:g}%"


def signal_for(direction: str, confidence: float, thresholds: SignalThresholds) -> Signal:
    if confidence >= thresholds.strong:
        return "STRONG_BUY" if direction == "up" else "STRONG_SELL"
    if confidence >= thresholds.normal:
        return "LONG" if direction == "up" else "SHORT"
    return "NEUTRAL"


def target_predictions(probabilities: np.ndarray, thresholds: SignalThresholds) -> list[TargetPrediction]:
    """Rows of class probabilities (up, down, none) to the message part of one target, batched.

    Rows are clipped at 0 and renormalised, so what is built is valid by
    construction and skips pydantic's per-object validation on the hot path.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    p = p / p.sum(axis=1, keepdims=True)
    touched = p[:, 0] + p[:, 1]
    up = p[:, 0] >= p[:, 1]
    confidence = np.where(touched > 0, np.maximum(p[:, 0], p[:, 1]) / np.where(touched > 0, touched, 1.0), 0.5)
    parts = []
    for (p_up, p_down, p_none), is_up, conf in zip(p.tolist(), up.tolist(), confidence.tolist(), strict=True):
        direction = "up" if is_up else "down"
        parts.append(TargetPrediction.model_construct(
            p_up=p_up, p_down=p_down, p_none=p_none, direction=direction, confidence=conf,
            signal=signal_for(direction, conf, thresholds)))
    return parts


def target_prediction(probabilities: np.ndarray, thresholds: SignalThresholds) -> TargetPrediction:
    """One row of class probabilities (up, down, none) to the message part of one target."""
    (part,) = target_predictions(np.asarray(probabilities, dtype=np.float64).reshape(1, 3), thresholds)
    return TargetPrediction.model_validate(part.model_dump())
