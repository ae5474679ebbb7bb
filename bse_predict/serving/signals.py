"""From calibrated class probabilities to the contract's per-target call.

``direction`` is the larger of p_up and p_down (up on a tie); ``confidence`` is
that one over (p_up + p_down): how sure the model is about the side, given that
a barrier is touched at all. Both are :mod:`bse_predict.scoring.probabilities`'s.
The signal comes from the target's thresholds on confidence
(``signals.per_target``, else ``signals.strong``/``normal``).

With ``signals.require_positive_ev`` a signal also needs a positive expected
value after costs. A ±X% bracket (take profit at +X%, stop at −X%, exit at the
horizon otherwise) earns, per unit, for a long position

    EV_long  = p_up · X − p_down · X + p_none · E[R | none] − C
    EV_short = p_down · X − p_up · X − p_none · E[R | none] − C

with C = 2 · (taker fee + slippage) the round trip cost in percent. Inside
the bracket the horizon exit R lies in (−X, X); we take E[R | none] = 0 (no
drift claimed), so the rule is (p_side − p_other) · X > C. With p_none = 0
this is the break-even hit rate of the docs: confidence > 0.5 + C / (2X).
"""

from __future__ import annotations

import numpy as np

from configs.settings import SignalThresholds
from bse_predict.candles.schema import Signal, TargetPrediction
from bse_predict.labels.first_touch import UP
from bse_predict.scoring.probabilities import called_side, confidence

__all__ = ["target_prediction", "target_predictions", "signal_for", "target_label", "target_pct",
           "expected_value_pct"]


def target_label(target_pct: float) -> str:
    """The contract's target key: 1 -> "1%", 2.5 -> "2.5%"."""
    return f"{target_pct:g}%"


def target_pct(label: str) -> float:
    """The inverse of :func:`target_label`: "2%" -> 2.0."""
    return float(label.rstrip("%"))


def expected_value_pct(p_up: np.ndarray, p_down: np.ndarray, bracket_pct: float, cost_pct: float,
                       direction_up: np.ndarray) -> np.ndarray:
    """Expected return in percent of a ±``bracket_pct`` bracket taken on the called side, after costs."""
    edge = np.where(direction_up, p_up - p_down, p_down - p_up)
    return edge * bracket_pct - cost_pct


def signal_for(direction: str, confidence: float, thresholds: SignalThresholds, target: str | None = None,
               positive_ev: bool = True) -> Signal:
    levels = thresholds.for_target(target)
    if not positive_ev:
        return "NEUTRAL"
    if confidence >= levels.strong:
        return "STRONG_BUY" if direction == "up" else "STRONG_SELL"
    if confidence >= levels.normal:
        return "LONG" if direction == "up" else "SHORT"
    return "NEUTRAL"


def target_predictions(probabilities: np.ndarray, thresholds: SignalThresholds,
                       target: str | None = None) -> list[TargetPrediction]:
    """Rows of class probabilities (up, down, none) to the message part of one target, batched.

    Rows are clipped at 0 and renormalised first, so every row passes the message's own checks
    (what reaches here passed the breaker's finite-probability check).
    ``target`` ("2%") picks its thresholds and, with the EV rule on, its bracket.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    p = p / p.sum(axis=1, keepdims=True)
    up = called_side(p) == UP
    if thresholds.require_positive_ev and target is not None:
        positive = expected_value_pct(p[:, 0], p[:, 1], target_pct(target), thresholds.round_trip_cost_pct, up) > 0
    else:
        positive = np.ones(len(p), dtype=bool)
    parts = []
    for (p_up, p_down, p_none), is_up, conf, ev_ok in zip(p.tolist(), up.tolist(), confidence(p).tolist(),
                                                          positive.tolist(), strict=True):
        direction = "up" if is_up else "down"
        parts.append(TargetPrediction(
            p_up=p_up, p_down=p_down, p_none=p_none, direction=direction, confidence=conf,
            signal=signal_for(direction, conf, thresholds, target, ev_ok)))
    return parts


def target_prediction(probabilities: np.ndarray, thresholds: SignalThresholds,
                      target: str | None = None) -> TargetPrediction:
    """One row of class probabilities (up, down, none) to the message part of one target."""
    (part,) = target_predictions(np.asarray(probabilities, dtype=np.float64).reshape(1, 3), thresholds, target)
    return part
