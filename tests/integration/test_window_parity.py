"""Features from the worker's Redis window equal the trainer's on the same history (<= 1e-9 relative)."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from configs.settings import Settings
from bse_predict.candles.files import read_candle_files
from bse_predict.features.definitions import LOOKBACK_CANDLES, compute_features, feature_matrix
from bse_predict.candles.grid import fill_gaps
from bse_predict.candles.schema import Candle
from bse_predict.candles.window import window_ending_at
from tests.conftest import SHARED_DATA
from bse_predict.stream.window_store import RedisWindowStore
from bse_predict.connections.clients import connect_redis

pytestmark = pytest.mark.integration

STEP_MS = 3_600_000
OUTAGE_MS = 1_703_894_400_000  # 2023-12-30, BTCUSDT spot: about 30 hours missing


def test_redis_window_features_equal_the_trainers_across_a_real_outage(services: Settings) -> None:
    (series,) = [s for s in read_candle_files([SHARED_DATA / "binance-spot"]) if s.symbol == "BTCUSDT"]
    around = np.flatnonzero((series.open_time_ms > OUTAGE_MS - 400 * STEP_MS) & (series.open_time_ms < OUTAGE_MS + 400 * STEP_MS))
    times, ohlcv = series.open_time_ms[around], series.ohlcv[around]
    assert np.any(np.diff(times) > STEP_MS), "the slice must hold the real outage"
    grid = fill_gaps(times, ohlcv, STEP_MS)
    trainer = feature_matrix(grid.open_time_ms, grid.ohlcv)
    trainer_row = {int(t): row for t, row, real in zip(grid.open_time_ms, trainer, grid.is_real, strict=True) if real}

    async def worker_features() -> tuple[list[int], np.ndarray]:
        client = connect_redis(services)
        store = RedisWindowStore(client, 400, key_prefix=f"parity-{uuid.uuid4().hex[:8]}:")
        candles = [Candle(symbol="BTCUSDT", timeframe="1h", open_time=int(t), open=o, high=h, low=l, close=c, volume=v)
                   for t, (o, h, l, c, v) in zip(times.tolist(), ohlcv.tolist(), strict=True)]
        done: list[int] = []
        windows = []
        try:
            for start in range(0, len(candles), 37):  # batches, as the stream delivers them
                for write in await store.write_closed(candles[start:start + 37], read_count=LOOKBACK_CANDLES + 1):
                    window = window_ending_at(write.open_time_ms, write.ohlcv, write.candle.open_time,
                                              LOOKBACK_CANDLES, STEP_MS)
                    if window is not None:
                        done.append(write.candle.open_time)
                        windows.append(window)
        finally:
            keys = [k async for k in client.scan_iter(match="parity-*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        return done, compute_features(np.stack(windows), np.array(done, dtype=np.int64))

    done, online = asyncio.run(worker_features())
    offline = np.stack([trainer_row[t] for t in done])
    assert len(done) == sum(1 for t in trainer_row if np.isfinite(trainer_row[t]).all())
    np.testing.assert_allclose(online, offline, rtol=1e-9, atol=1e-12)
