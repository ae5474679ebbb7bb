"""A small generated market: a driftless random walk with clustered volatility that closes at weekends.

Hourly returns follow a GARCH(1, 1) around ``hourly_volatility`` (calm weeks
and violent ones, as on a real small market), each candle built from 12
sub-steps so high and low are real extremes of its path; Saturday and Sunday
(UTC) hours are dropped, so Monday opens with a gap. The walk carries no
signal: an honest model's up-vs-down AUC is 0.5 up to noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bse_predict.candles.files import CandleSeries

__all__ = ["small_market_series"]

_SUBSTEPS = 12
_HOUR_MS = 3_600_000
_START_MS = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a Wednesday
_ALPHA, _BETA = 0.10, 0.85


def _garch_volatility(rng: np.random.Generator, hours: int, hourly_volatility: float) -> np.ndarray:
    """Per-hour volatility of a GARCH(1, 1) whose long-run hourly volatility is ``hourly_volatility``."""
    omega = hourly_volatility**2 * (1.0 - _ALPHA - _BETA)
    shocks = rng.standard_normal(hours)
    variance = np.empty(hours)
    current = hourly_volatility**2
    for hour in range(hours):
        variance[hour] = current
        current = omega + _ALPHA * current * shocks[hour] ** 2 + _BETA * current
    return np.sqrt(variance)


def small_market_series(symbol: str, hours: int, seed: int, hourly_volatility: float = 0.008) -> CandleSeries:
    """``hours`` hours of the walk from a fixed Wednesday, weekend hours left out (about 5/7 of them remain)."""
    rng = np.random.default_rng(seed)
    volatility = _garch_volatility(rng, hours, hourly_volatility)
    steps = rng.standard_normal((hours, _SUBSTEPS)) * (volatility / np.sqrt(_SUBSTEPS))[:, None]
    path = 100.0 * np.exp(np.cumsum(steps.ravel())).reshape(hours, _SUBSTEPS)
    opens = np.concatenate([[100.0], path[:-1, -1]])
    closes = path[:, -1]
    ohlcv = np.column_stack([opens, np.maximum(path.max(axis=1), opens), np.minimum(path.min(axis=1), opens),
                             closes, rng.gamma(2.0, 50.0, size=hours)])
    times = _START_MS + _HOUR_MS * np.arange(hours, dtype=np.int64)
    weekday = (times // (24 * _HOUR_MS) + 3) % 7  # 1970-01-01 was a Thursday: Monday = 0
    open_hours = weekday < 5
    return CandleSeries(symbol, "1h", times[open_hours], ohlcv[open_hours], Path(f"<generated {symbol}>"))
