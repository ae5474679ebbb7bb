"""Every Lua script the worker runs is safe to run twice, and a script Redis forgot is loaded again.

redis-py sends a command again when its connection breaks, also when Redis had
already run it and only the reply was lost. A proxy in front of the real Redis
loses exactly that reply; the stores must end as if the call had run once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from configs.settings import FaultConfig, Settings
from bse_predict.candles.schema import Candle
from bse_predict.monitoring.sequential import BETS, Evidence
from tests.support.reply_dropping_proxy import ReplyDroppingProxy
from bse_predict.monitoring.challenger import ChallengerWatch, _Pair
from bse_predict.monitoring.hash_sums import HashSums, UnsentSums
from bse_predict.connections.clients import connect_redis
from bse_predict.stream.window_store import RedisWindowStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def through_proxy(services: Settings) -> AsyncIterator[tuple[aioredis.Redis, ReplyDroppingProxy, aioredis.Redis]]:
    """(a client through the proxy, the proxy, a direct client) on the real Redis; keys deleted after."""
    url = urlsplit(services.redis_url.get_secret_value())
    async with ReplyDroppingProxy(url.hostname or "localhost", url.port or 6379) as proxy:
        flaky = connect_redis(services, FaultConfig(retry_initial_s=0.01), url=f"redis://127.0.0.1:{proxy.port}/0")
        direct = connect_redis(services)
        yield flaky, proxy, direct
        keys = [k async for k in direct.scan_iter(match="resend-*")]
        if keys:
            await direct.delete(*keys)
        await flaky.aclose()
        await direct.aclose()


async def test_sums_added_once_when_the_reply_is_lost(through_proxy) -> None:  # type: ignore[no-untyped-def]
    flaky, proxy, direct = through_proxy
    prefix = f"resend-{uuid.uuid4().hex[:8]}"
    sums = HashSums(flaky, floats=True, token_prefix=prefix)
    await sums.add({f"{prefix}:h": {"n": 1.0, "loss": 0.25}}, ttl_s=600)  # the script is loaded now
    proxy.drop_next_reply()
    await sums.add({f"{prefix}:h": {"n": 1.0, "loss": 0.25}}, ttl_s=600)
    assert proxy.dropped == 1  # the script ran, its reply was lost, redis-py sent it again
    stored = await direct.hgetall(f"{prefix}:h")
    assert {k.decode(): float(v) for k, v in stored.items()} == {"n": 2.0, "loss": 0.5}
    await sums.add({f"{prefix}:h": {"n": 1.0, "loss": 0.25}}, ttl_s=600)
    assert float(await direct.hget(f"{prefix}:h", "n")) == 3.0


async def test_buffered_sums_lost_with_their_reply_are_sent_again_and_count_once(through_proxy, services: Settings) -> None:  # type: ignore[no-untyped-def]
    _, proxy, direct = through_proxy
    prefix = f"resend-{uuid.uuid4().hex[:8]}"
    no_retries = connect_redis(services, url=f"redis://127.0.0.1:{proxy.port}/0", retry=Retry(NoBackoff(), 0))
    try:
        unsent = UnsentSums(HashSums(no_retries, floats=True, token_prefix=prefix), ttl_s=600,
                            field_names=["n", "loss"])
        unsent.add({f"{prefix}:h": np.array([1.0, 0.0])})
        await unsent.flush()  # the script is loaded now
        unsent.add({f"{prefix}:h": np.array([1.0, 0.25])})
        unsent.add({f"{prefix}:h": np.array([1.0, 0.0])})
        proxy.drop_next_reply()
        with pytest.raises(RedisConnectionError):
            await unsent.flush()  # Redis added them; the reply was lost and this client does not resend
        unsent.add({f"{prefix}:h": np.array([0.0, 1.0])})  # added while the failed flush waits
        await unsent.flush()  # the failed call again (refused: it had run), then the new sums
        stored = await direct.hgetall(f"{prefix}:h")
        assert {k.decode(): float(v) for k, v in stored.items()} == {"n": 3.0, "loss": 1.25}
        await unsent.flush()  # nothing left to send
        assert float(await direct.hget(f"{prefix}:h", "n")) == 3.0
    finally:
        await no_retries.aclose()


def _watch_through(client: aioredis.Redis, services: Settings) -> tuple[ChallengerWatch, str]:
    """A challenger watch on ``client`` under a fresh prefix, and its v1/v2 evidence key."""
    prefix = f"resend-{uuid.uuid4().hex[:8]}."
    settings = services.model_copy(update={"topic_prefix": prefix})
    watch = ChallengerWatch(client, settings, sender=None, is_newer=lambda a, b: a > b,  # type: ignore[arg-type]
                            control_topic="unused", events_topic="unused")
    return watch, f"{prefix}bse:challenger:{{v1|v2}}"


async def test_challenger_evidence_added_once_when_the_reply_is_lost(through_proxy, services: Settings) -> None:  # type: ignore[no-untyped-def]
    flaky, proxy, direct = through_proxy
    watch, key = _watch_through(flaky, services)
    batch = Evidence(pairs=3, sum_x=0.5, log_wealth_better=tuple(0.1 for _ in BETS),
                     log_wealth_worse=tuple(-0.1 for _ in BETS))
    assert (await watch._add(key, batch)).pairs == 3  # the script is loaded now
    proxy.drop_next_reply()
    totals = await watch._add(key, batch)
    assert proxy.dropped == 1
    assert totals.pairs == 6 and totals.sum_x == pytest.approx(1.0)
    assert (await watch._add(key, batch)).pairs == 9
    assert 0 < await direct.ttl(key) <= services.challenger.retain_hours * 3600


def _candle(open_time: int, close: float) -> Candle:
    return Candle(symbol="RESENDUSDT", timeframe="1h", open_time=open_time, open=close, high=close + 1,
                  low=close - 1, close=close, volume=1.0)


async def test_a_window_written_twice_is_written_once(through_proxy) -> None:  # type: ignore[no-untyped-def]
    flaky, proxy, direct = through_proxy
    prefix = f"resend-{uuid.uuid4().hex[:8]}:"
    store = RedisWindowStore(flaky, retain_candles=50, key_prefix=prefix)
    first = [_candle(1_700_000_000_000 + i * 3_600_000, 100.0 + i) for i in range(10)]
    await store.write_closed(first, read_count=20)  # the script is loaded now
    proxy.drop_next_reply()
    written = await store.write_closed([_candle(first[-1].open_time + 3_600_000, 200.0)], read_count=20)
    assert proxy.dropped == 1
    assert written[0].open_time_ms.tolist() == [c.open_time for c in first] + [first[-1].open_time + 3_600_000]
    times, ohlcv = await RedisWindowStore(direct, 50, key_prefix=prefix).closed_candles("RESENDUSDT", "1h")
    assert len(times) == 11 and np.all(np.diff(times) == 3_600_000) and ohlcv[-1, 3] == 200.0


async def test_a_script_redis_forgot_is_loaded_again(through_proxy) -> None:  # type: ignore[no-untyped-def]
    flaky, _, direct = through_proxy
    prefix = f"resend-{uuid.uuid4().hex[:8]}:"
    store = RedisWindowStore(flaky, retain_candles=50, key_prefix=prefix)
    await store.write_closed([_candle(1_700_000_000_000, 100.0)], read_count=5)
    await direct.script_flush()  # what a Redis restart does to the script cache
    written = await store.write_closed([_candle(1_700_003_600_000, 101.0)], read_count=5)
    assert written[0].open_time_ms.tolist() == [1_700_000_000_000, 1_700_003_600_000]


async def test_staged_challenger_pairs_are_released_once_when_the_reply_is_lost(through_proxy, services: Settings) -> None:  # type: ignore[no-untyped-def]
    flaky, proxy, direct = through_proxy
    watch, key = _watch_through(flaky, services)
    pairs = [_Pair(hour * 3_600_000, f"BTCUSDT|1h|{hour * 3_600_000}", "1%", 0.5, 0.6) for hour in range(3)]
    assert await watch._stage_and_release(key, {"BTCUSDT": pairs[:1]}, {"BTCUSDT": -1}) == []  # staged; script loaded
    proxy.drop_next_reply()
    released = await watch._stage_and_release(key, {"BTCUSDT": pairs[1:]}, {"BTCUSDT": 3_600_000})  # sent again
    assert proxy.dropped == 1
    # the first run released hours 0 and 1 (its reply lost), the resend released nothing: never counted twice
    assert released == []
    assert await direct.zrange(f"{key}:staged:BTCUSDT", 0, -1) == [orjson.dumps(["BTCUSDT|1h|7200000", "1%", 0.5, 0.6])]
