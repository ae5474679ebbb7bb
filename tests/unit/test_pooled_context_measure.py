"""The cross-asset context columns of benchmarks/pooled_context.py: hand-computed values, no look-ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.pooled_context import BTC, context_columns, context_table
from bse_predict.candles.files import CandleSeries

HOUR = 3_600_000


def _series(symbol: str, closes: list[float], start_hour: int = 0, skip: tuple[int, ...] = ()) -> CandleSeries:
    hours = [h for h in range(start_hour, start_hour + len(closes)) if h not in skip]
    close = np.array([closes[h - start_hour] for h in hours])
    ohlcv = np.column_stack([close, close, close, close, np.ones_like(close)])
    return CandleSeries(symbol, "1h", np.array(hours, dtype=np.int64) * HOUR, ohlcv, Path("x"))


def test_breadth_and_btc_return_by_hand() -> None:
    btc = _series(BTC, [100.0, 110.0, 99.0, 99.0])
    alt = _series("spot:ETHUSDT", [10.0, 9.0, 9.5, 10.0])
    gappy = _series("spot:SOLUSDT", [1.0, 2.0, 3.0, 4.0], skip=(2,))
    hours, table = context_table([btc, alt, gappy])
    assert hours.tolist() == [HOUR, 2 * HOUR, 3 * HOUR]
    np.testing.assert_allclose(table[:, 0], np.log([1.1, 0.9, 1.0]))
    # hour 1: BTC up, ETH down, SOL up -> 2/3; hour 2: BTC down, ETH up, SOL missing -> 1/2;
    # hour 3: BTC flat, ETH up, SOL has no previous hour -> 1/2
    np.testing.assert_allclose(table[:, 2], [2 / 3, 1 / 2, 1 / 2])


def test_context_ignores_every_candle_after_its_hour() -> None:
    rng = np.random.default_rng(3)
    closes = {name: list(np.exp(np.cumsum(rng.normal(0, 0.01, 200)))) for name in (BTC, "spot:A", "spot:B")}
    full = context_table([_series(n, c) for n, c in closes.items()])
    cut = context_table([_series(n, c[:120]) for n, c in closes.items()])
    rows = np.arange(30, 119, dtype=np.int64) * HOUR
    for lag in (0, 1):
        np.testing.assert_array_equal(context_columns(rows, *full, lag), context_columns(rows, *cut, lag))


def test_previous_hour_context_is_the_same_hour_context_one_row_later() -> None:
    rng = np.random.default_rng(5)
    series = [_series(n, list(np.exp(np.cumsum(rng.normal(0, 0.01, 80))))) for n in (BTC, "spot:A")]
    hours, table = context_table(series)
    rows = np.arange(40, 79, dtype=np.int64) * HOUR
    np.testing.assert_array_equal(context_columns(rows, hours, table, 1)[1:], context_columns(rows, hours, table, 0)[:-1])
