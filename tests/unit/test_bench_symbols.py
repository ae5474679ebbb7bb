"""The benchmark's fleet: distinct prices, every symbol ticking in step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bse_predict.candles.files import read_candle_files
from bse_predict.stream.bench_load import bench_symbols

GOLDEN_CANDLES = Path(__file__).parents[1] / "data" / "golden" / "candles"


def test_every_symbol_ticks_in_step_on_distinct_prices() -> None:
    sources = {s.symbol: s for s in read_candle_files([GOLDEN_CANDLES])}
    fleet = bench_symbols([GOLDEN_CANDLES], count=2 * len(sources), rows=100)
    assert len({s.symbol for s in fleet}) == len(fleet)
    assert all(np.array_equal(s.open_time_ms, fleet[0].open_time_ms) for s in fleet)  # one hour per tick
    assert np.all(np.diff(fleet[0].open_time_ms) == 3_600_000)
    assert len({s.ohlcv.tobytes() for s in fleet}) == len(fleet)  # no two replay the same prices
    for s in fleet[:len(sources)]:  # the first round: each real series' newest stretch, its own times
        real = sources[s.symbol]
        assert np.array_equal(s.ohlcv, real.ohlcv[-100:])
