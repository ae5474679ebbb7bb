"""Generated candles for a first run on a machine without real data.

A driftless geometric random walk with hourly volatility close to BTC's, each
candle built from 12 sub-steps so high and low are real extremes of its path.
Only ``demo`` uses it, and it says so loudly: these candles carry no signal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bse_predict.candles.files import CandleSeries

__all__ = ["synthetic_series"]

_SUBSTEPS = 12
_HOUR_MS = 3_600_000


def synthetic_series(symbol: str, hours: int, seed: int, end_ms: int, start_price: float = 100.0,
                     hourly_volatility: float = 0.007) -> CandleSeries:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, hourly_volatility / np.sqrt(_SUBSTEPS), size=(hours, _SUBSTEPS))
    path = start_price * np.exp(np.cumsum(steps.ravel())).reshape(hours, _SUBSTEPS)
    opens = np.concatenate([[start_price], path[:-1, -1]])
    closes = path[:, -1]
    highs = np.maximum(path.max(axis=1), opens)
    lows = np.minimum(path.min(axis=1), opens)
    volume = rng.gamma(2.0, 50.0, size=hours)
    first_ms = end_ms - (end_ms % _HOUR_MS) - (hours - 1) * _HOUR_MS
    times = first_ms + _HOUR_MS * np.arange(hours, dtype=np.int64)
    ohlcv = np.column_stack([opens, highs, lows, closes, volume])
    return CandleSeries(symbol, "1h", times, ohlcv, Path(f"<generated {symbol}>"))
