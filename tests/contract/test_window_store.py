"""One contract, two stores: the Redis store (on the real server) and the in-memory twin.

Whatever the arrival order, duplicates and late candles included, a store
ends holding exactly what a clean, in-order run leaves: the newest
``retain`` candles by open time, each with its last-written values.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.settings import Settings
from bse_predict.candles.schema import Candle
from bse_predict.stream.window_store import MemoryWindowStore, RedisWindowStore, WindowStore
from tests.support import store_pair
from tests.support.store_pair import prefixed_redis, run_with_store, store_factory

HOUR = 3_600_000
T0 = 1_735_689_600_000
RETAIN = 12


def candle(index: int, price: float = 100.0, closed: bool = True, symbol: str = "BTCUSDT") -> Candle:
    return Candle(symbol=symbol, timeframe="1h", open_time=T0 + index * HOUR, open=price, high=price * 1.01,
                  low=price * 0.99, close=price * 1.001, volume=float(index), closed=closed)


StoreFactory = store_pair.StoreFactory[WindowStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    return store_factory(request, lambda: MemoryWindowStore(RETAIN),
                         lambda client, prefix: RedisWindowStore(client, RETAIN, key_prefix=prefix))


def test_write_returns_history_up_to_the_candle(make_store: StoreFactory) -> None:
    async def scenario(store: WindowStore) -> None:
        await store.write_closed([candle(i) for i in range(8)], read_count=5)
        (late,) = await store.write_closed([candle(3, price=101.0)], read_count=5)
        assert late.open_time_ms.tolist() == [T0 + i * HOUR for i in range(4)]
        assert late.ohlcv[-1, 0] == 101.0
        (newest,) = await store.write_closed([candle(8)], read_count=5)
        assert newest.open_time_ms.tolist() == [T0 + i * HOUR for i in range(4, 9)]
        assert np.array_equal(newest.ohlcv[0], [100.0, 101.0, 99.0, 100.1, 4.0])
    run_with_store(make_store, scenario)


def test_retain_keeps_the_newest(make_store: StoreFactory) -> None:
    async def scenario(store: WindowStore) -> None:
        await store.write_closed([candle(i) for i in range(30)], read_count=100)
        times, _ = await store.closed_candles("BTCUSDT", "1h")
        assert times.tolist() == [T0 + i * HOUR for i in range(30 - RETAIN, 30)]
    run_with_store(make_store, scenario)


def test_predicted_marks_survive_and_report(make_store: StoreFactory) -> None:
    async def scenario(store: WindowStore) -> None:
        (first,) = await store.write_closed([candle(1)], read_count=3)
        assert not first.already_predicted
        await store.mark_predicted([candle(1)])
        (again,) = await store.write_closed([candle(1)], read_count=3)
        assert again.already_predicted
        (other,) = await store.write_closed([candle(1, symbol="ETHUSDT")], read_count=3)
        assert not other.already_predicted
    run_with_store(make_store, scenario)


def test_forming_candle_lifecycle(make_store: StoreFactory) -> None:
    async def scenario(store: WindowStore) -> None:
        await store.write_closed([candle(4)], read_count=3)
        await store.write_forming([candle(5, 100.0, closed=False), candle(5, 102.0, closed=False)])
        assert (await store.forming("BTCUSDT", "1h")).open == 102.0
        await store.write_forming([candle(4, 90.0, closed=False)])  # older than the last close: ignored
        assert (await store.forming("BTCUSDT", "1h")).open_time == T0 + 5 * HOUR
        await store.write_closed([candle(5)], read_count=3)
        assert await store.forming("BTCUSDT", "1h") is None
        await store.write_forming([candle(5, 99.0, closed=False)])  # a stale update after the close
        assert await store.forming("BTCUSDT", "1h") is None
    run_with_store(make_store, scenario)


def test_last_closes_are_the_newest_candles_whatever_the_order(make_store: StoreFactory) -> None:
    """What the stream checks a price jump against (bse_predict/candles/plausibility.py)."""
    async def scenario(store: WindowStore) -> None:
        assert await store.last_closes({("BTCUSDT", "1h")}) == {}
        await store.write_closed([candle(i, 100.0 + i) for i in (3, 5, 4)], read_count=3)  # 4 arrives late
        await store.write_closed([candle(2, 50.0, symbol="ETHUSDT")], read_count=3)
        await store.write_forming([candle(6, 900.0, closed=False)])
        found = await store.last_closes({("BTCUSDT", "1h"), ("ETHUSDT", "1h"), ("SOLUSDT", "1h")})
        # the newest candle, and the close of the one before it (none for a one-candle window)
        assert found == {("BTCUSDT", "1h"): (T0 + 5 * HOUR, 105.0 * 1.001, 104.0 * 1.001),
                         ("ETHUSDT", "1h"): (T0 + 2 * HOUR, 50.0 * 1.001, None)}
        await store.write_closed([candle(6, 106.0)], read_count=3)  # in order: the Redis store's own copy answers
        assert await store.last_closes([("BTCUSDT", "1h")]) == {
            ("BTCUSDT", "1h"): (T0 + 6 * HOUR, 106.0 * 1.001, 105.0 * 1.001)}
    run_with_store(make_store, scenario)


arrival_orders = st.lists(st.integers(0, 24), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=arrival_orders, corrections=st.lists(st.integers(0, 24), max_size=5))
def test_any_arrival_order_ends_as_a_clean_run(make_store: StoreFactory, order: list[int], corrections: list[int]) -> None:
    """Duplicates, replays and late candles: the final window equals the in-order run's."""
    def value(i: int) -> float:
        return 100.0 + i + (0.5 if i in corrections else 0.0)

    messy = [candle(i, 100.0 + i) for i in order] + [candle(i, value(i)) for i in corrections]
    clean = [candle(i, value(i)) for i in sorted(set(order) | set(corrections))]

    async def final(store: WindowStore, candles: list[Candle]) -> tuple[list[int], list[list[float]]]:
        for one in candles:  # one at a time, as separate batches would arrive
            await store.write_closed([one], read_count=RETAIN + 1)
        times, ohlcv = await store.closed_candles("BTCUSDT", "1h")
        return times.tolist(), ohlcv.tolist()

    assert run_with_store(make_store, lambda s: final(s, messy)) == run_with_store(make_store, lambda s: final(s, clean))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["BTCUSDT", "ETHUSDT"])), min_size=1, max_size=80),
       cuts=st.lists(st.integers(1, 6), min_size=1, max_size=30), workers=st.integers(1, 2))
def test_redis_windows_equal_the_reference_in_any_order_and_batching(
    services: Settings, order: list[tuple[int, str]], cuts: list[int], workers: int
) -> None:
    """Every returned window, through one or two Redis stores sharing the keys (two workers
    after a rebalance), equals the in-memory reference: the in-process copies never go stale."""
    candles = [candle(i, 100.0 + i + 0.25 * (n % 3), symbol=symbol) for n, (i, symbol) in enumerate(order)]
    batches, start = [], 0
    for size in cuts * (len(candles) // max(1, sum(cuts)) + 1):
        if start >= len(candles):
            break
        batches.append(candles[start:start + size])
        start += size

    async def histories() -> tuple[list[tuple[list[int], list[list[float]], bool]], ...]:
        reference = MemoryWindowStore(RETAIN)
        got, want = [], []
        async with prefixed_redis(services) as (client, prefix):
            stores = [RedisWindowStore(client, RETAIN, key_prefix=prefix) for _ in range(workers)]
            for number, batch in enumerate(batches):
                store = stores[number % workers]
                for result, writes in ((got, await store.write_closed(batch, read_count=6)),
                                       (want, await reference.write_closed(batch, read_count=6))):
                    result.extend((w.open_time_ms.tolist(), w.ohlcv.tolist(), w.already_predicted) for w in writes)
                await store.mark_predicted(batch[:1])
                await reference.mark_predicted(batch[:1])
        return got, want

    got, want = asyncio.run(histories())
    assert [(t, o) for t, o, _ in got] == [(t, o) for t, o, _ in want]
    if workers == 1:  # marks travel with the next batch of the store that made them
        assert [d for _, _, d in got] == [d for _, _, d in want]
