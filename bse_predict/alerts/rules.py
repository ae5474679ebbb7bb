"""What deserves a Telegram alert: thresholds per target, the degraded policy, the cooldown.

Pure: the time of a decision is the prediction's candle ``open_time``, never
the wall clock, so a replay decides exactly as the live stream did. The
service asks :func:`wanted_calls` which targets of a prediction pass their
thresholds, then :func:`cooldown_allows` with the last alerted ``open_time``
of the same symbol, target and direction, and stores the verdict before it
sends anything (docs/alerts.md explains why the verdict is stored).
:func:`is_stale` is the one rule that takes the present: the caller passes it in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from configs.settings import TIMEFRAME_MS, AlertsConfig
from bse_predict.candles.schema import Prediction, Signal

__all__ = ["AlertCall", "wanted_calls", "cooldown_allows", "cooldown_key", "target_sort_key",
           "is_stale"]


class AlertCall(BaseModel):
    """One target of one prediction that passed its thresholds: what the alert and its follow-up say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prediction_id: str
    symbol: str
    timeframe: str
    open_time: int
    close: float
    horizon_hours: int
    target: str
    direction: Literal["up", "down"]
    probability: float
    confidence: float
    signal: Signal
    p_up: float
    p_down: float
    p_none: float
    model_name: str
    model_version: str
    variant: str
    degraded: bool

    @property
    def decided_at_ms(self) -> int:
        """When the call was made: the close of its candle."""
        return self.open_time + TIMEFRAME_MS.get(self.timeframe, 0)


def target_sort_key(target: str) -> tuple[float, str]:
    """"1%" < "2%" < "5%" < "10%", numerically; anything odd sorts last by name."""
    try:
        return float(target.rstrip("%")), target
    except ValueError:
        return float("inf"), target


def wanted_calls(prediction: Prediction, config: AlertsConfig) -> list[AlertCall]:
    """The targets of ``prediction`` whose call clears the configured thresholds.

    A target without a threshold in the config is never alerted; a degraded
    prediction gives nothing under ``degraded: hold``.
    """
    if prediction.degraded and config.degraded == "hold":
        return []
    calls = []
    for target in sorted(prediction.targets, key=target_sort_key):
        threshold = config.thresholds.get(target)
        if threshold is None:
            continue
        part = prediction.targets[target]
        probability = part.p_up if part.direction == "up" else part.p_down
        if part.confidence < threshold.min_confidence or probability < threshold.min_probability:
            continue
        calls.append(AlertCall(
            prediction_id=prediction.id, symbol=prediction.symbol, timeframe=prediction.timeframe,
            open_time=prediction.open_time, close=prediction.close, horizon_hours=prediction.horizon_hours,
            target=target, direction=part.direction, probability=probability, confidence=part.confidence,
            signal=part.signal, p_up=part.p_up, p_down=part.p_down, p_none=part.p_none,
            model_name=prediction.model.name, model_version=prediction.model.version,
            variant=prediction.variant, degraded=prediction.degraded,
        ))
    return calls


def cooldown_key(symbol: str, target: str, direction: str) -> str:
    return f"{symbol}|{target}|{direction}"


def cooldown_allows(last_alert_open_time_ms: int | None, open_time_ms: int, cooldown_hours: float) -> bool:
    """True when no alert of the same key lies within ``cooldown_hours`` of this candle, either side.

    Either side: a late prediction older than the last alert is held back too,
    so an out-of-order delivery cannot produce two alerts an hour apart.
    """
    if last_alert_open_time_ms is None:
        return True
    return abs(open_time_ms - last_alert_open_time_ms) >= cooldown_hours * 3_600_000


def is_stale(call: AlertCall, now_ms: int, stale_after_hours: float) -> bool:
    """True when the call's candle closed more than ``stale_after_hours`` before ``now_ms``:
    too late to be sent as a live alert (it goes into a catch-up note instead)."""
    return now_ms - call.decided_at_ms > stale_after_hours * 3_600_000
