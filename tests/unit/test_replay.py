"""Replayed candles: merged by time, in-progress updates inside the final candle, all valid."""

from __future__ import annotations

import numpy as np
import orjson

from configs.settings import CandleRules
from bse_predict.candles.files import CandleSeries
from bse_predict.candles.schema import parse_candle
from bse_predict.stream.replay import candle_records


def test_updates_precede_their_close_and_stay_inside_it(futures_series: dict[str, CandleSeries]) -> None:
    series = [futures_series["BTCUSDT"].tail(50), futures_series["SOLUSDT"].tail(50)]
    records = list(candle_records(series, updates=3))
    assert len(records) == 2 * 50 * 4
    times = [r.open_time_ms for r in records]
    assert times == sorted(times)
    for index in range(0, len(records), 4):
        group = records[index:index + 4]
        assert [r.closed for r in group] == [False, False, False, True]
        assert len({(r.symbol, r.open_time_ms) for r in group}) == 1
        final = parse_candle(group[-1].payload, CandleRules(), 2**62, group[-1].symbol.encode())
        for update in group[:-1]:
            candle = parse_candle(update.payload, CandleRules(), 2**62, update.symbol.encode())
            assert not candle.closed and candle.open == final.open
            assert final.low <= candle.low <= candle.high <= final.high
            assert candle.volume <= final.volume


def test_closed_candles_carry_the_file_values(futures_series: dict[str, CandleSeries]) -> None:
    eth = futures_series["ETHUSDT"].tail(10)
    closed = [orjson.loads(r.payload) for r in candle_records([eth]) if r.closed]
    got = np.array([[m["open"], m["high"], m["low"], m["close"], m["volume"]] for m in closed])
    assert np.array_equal(got, eth.ohlcv) and [m["open_time"] for m in closed] == eth.open_time_ms.tolist()
