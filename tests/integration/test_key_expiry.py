"""Every Redis key the stream writes for a symbol has an owner that expires it once the symbol goes silent."""

from __future__ import annotations

import redis.asyncio as aioredis
import pytest

from configs.settings import Settings
from bse_predict.candles.schema import Candle
from tests.contract.test_outcome_store import item
from bse_predict.monitoring.outcome_store import RedisOutcomeStore
from bse_predict.stream.window_store import RedisWindowStore
from tests.support.store_pair import prefixed_redis

pytestmark = pytest.mark.integration

EXPIRE_MS = 3_600_000


async def _ttls_ms(client: aioredis.Redis, prefix: str) -> dict[str, int]:
    return {key.decode(): await client.pttl(key) async for key in client.scan_iter(match=f"{prefix}*")}


async def test_window_and_outcome_keys_expire_after_the_symbol_goes_silent(services: Settings) -> None:
    async with prefixed_redis(services, "expiry") as (client, prefix):
        windows = RedisWindowStore(client, 50, key_prefix=prefix, expire_after_ms=EXPIRE_MS)
        candles = [Candle(symbol="BTCUSDT", timeframe="1h", open_time=1_700_000_000_000 + i * 3_600_000, open=1.0,
                          high=2.0, low=0.5, close=1.5, volume=1.0, closed=i < 3) for i in range(4)]
        await windows.write_closed(candles[:3], read_count=10)
        await windows.write_forming([candles[3]])
        await windows.mark_predicted(candles[:3])
        await windows.write_closed([], read_count=10)  # the marks travel with the next write
        outcomes = RedisOutcomeStore(client, 10 * EXPIRE_MS, key_prefix=prefix, expire_after_ms=EXPIRE_MS)
        pending = [item(i) for i in range(3)]
        await outcomes.register(pending)
        await outcomes.settle(pending[:1])
        ttls = await _ttls_ms(client, prefix)
        suffixes = {key.rsplit(":", 1)[-1] for key in ttls}
        assert {"win", "forming", "predicted", "generation", "pending", "settled"} <= suffixes, ttls
        assert all(0 < ttl <= EXPIRE_MS for ttl in ttls.values()), ttls
