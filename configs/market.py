"""The market served: the candles' timeframe, the targets (percent moves) and the label horizon."""

from __future__ import annotations

from pydantic import Field, field_validator

from configs.base import FrozenBlock

__all__ = ["TIMEFRAME_MS", "MarketConfig"]

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


class MarketConfig(FrozenBlock):
    timeframe: str = "1h"
    targets_pct: tuple[float, ...] = (1, 2, 5)
    horizon_hours: int = Field(72, gt=0)

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        if value not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {value!r}; known: {sorted(TIMEFRAME_MS)}")
        return value

    @property
    def timeframe_ms(self) -> int:
        return TIMEFRAME_MS[self.timeframe]

    @property
    def horizon_candles(self) -> int:
        return self.horizon_hours * 3_600_000 // self.timeframe_ms

