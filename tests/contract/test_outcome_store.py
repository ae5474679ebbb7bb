"""One contract, two pending-outcome stores: Redis (the real server) and the in-memory twin."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from bse_predict.monitoring.outcomes import PendingBook, PendingOutcome
from bse_predict.candles.schema import ModelRef
from bse_predict.monitoring.outcome_store import MemoryOutcomeStore, OutcomeStore, RedisOutcomeStore
from tests.support import store_pair
from tests.support.store_pair import run_with_store, store_factory

HOUR = 3_600_000
RETAIN_MS = 10 * HOUR


def item(index: int, symbol: str = "BTCUSDT", target: str = "2%", version: str = "v1",
         stream: str = "live") -> PendingOutcome:
    return PendingOutcome(
        prediction_id=f"{symbol}|1h|{index * HOUR}", symbol=symbol, timeframe="1h", open_time=index * HOUR,
        entry_close=100.0 + index, target=target, target_frac=0.02, horizon_candles=72, step_ms=HOUR,
        model=ModelRef(name="random_forest", version=version), variant="control", stream=stream,
        p_up=0.25, p_down=0.25, p_none=0.5,
    )


StoreFactory = store_pair.StoreFactory[OutcomeStore]
Handles = Callable[[OutcomeStore], OutcomeStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    """A store and its cleanup; ``another_handle(store)`` is a second worker's view of the same data."""
    def redis_store(client: aioredis.Redis, prefix: str) -> OutcomeStore:
        store = RedisOutcomeStore(client, RETAIN_MS, key_prefix=prefix)
        HANDLES[id(store)] = RedisOutcomeStore(client, RETAIN_MS, key_prefix=prefix)
        return store
    return store_factory(request, lambda: MemoryOutcomeStore(RETAIN_MS), redis_store)


HANDLES: dict[int, OutcomeStore] = {}


def another_handle(store: OutcomeStore) -> OutcomeStore:
    """The memory twin is one process: itself; a Redis store: a second store object on the same keys."""
    return HANDLES.get(id(store), store)


def keys_of(found: dict[tuple[str, str], PendingBook], symbol: str = "BTCUSDT") -> set[str]:
    return {p.key for p in found[(symbol, "1h")]}


def test_register_is_idempotent_and_keeps_every_version_target_and_stream(make_store: StoreFactory) -> None:
    async def body(store: OutcomeStore) -> None:
        batch = [item(1), item(1, target="5%"), item(1, version="v2"), item(1, stream="shadow"), item(2)]
        assert await store.register(batch) == 5
        assert await store.register(batch + [item(1)]) == 0
        found = await store.pending([("BTCUSDT", "1h"), ("ETHUSDT", "1h")])
        assert keys_of(found) == {p.key for p in batch}
        assert len(found[("ETHUSDT", "1h")]) == 0
        assert sorted(found[("BTCUSDT", "1h")], key=lambda p: p.key) == sorted(batch, key=lambda p: p.key)
    run_with_store(make_store, body)


def test_settled_outcomes_leave_pending_and_cannot_come_back(make_store: StoreFactory) -> None:
    async def body(store: OutcomeStore) -> None:
        await store.register([item(1), item(2), item(1, symbol="ETHUSDT")])
        await store.settle([item(1), item(1, symbol="ETHUSDT")])
        found = await store.pending([("BTCUSDT", "1h"), ("ETHUSDT", "1h")])
        assert keys_of(found) == {item(2).key}
        assert keys_of(found, "ETHUSDT") == set()
        assert await store.register([item(1)]) == 0  # a replayed prediction after its answer
        assert keys_of(await store.pending([("BTCUSDT", "1h")])) == {item(2).key}
    run_with_store(make_store, body)


def test_settled_marks_are_forgotten_after_the_retention(make_store: StoreFactory) -> None:
    async def body(store: OutcomeStore) -> None:
        await store.register([item(1)])
        await store.settle([item(1)])
        await store.register([item(30)])
        await store.settle([item(30)])  # 29 h later: the mark of item(1) is past the 10 h retention
        assert await store.register([item(1)]) == 1
        assert await store.register([item(30)]) == 0
    run_with_store(make_store, body)


@pytest.mark.parametrize("count", [1, 300])
def test_many_symbols_in_one_call(make_store: StoreFactory, count: int) -> None:
    async def body(store: OutcomeStore) -> None:
        batch = [item(i % 7, symbol=f"S{i}USDT") for i in range(count)]
        assert await store.register(batch) == count
        found = await store.pending([(f"S{i}USDT", "1h") for i in range(count)])
        assert sum(len(v) for v in found.values()) == count
        await store.settle(batch)
        found = await store.pending([(f"S{i}USDT", "1h") for i in range(count)])
        assert sum(len(v) for v in found.values()) == 0
    run_with_store(make_store, body)


def test_every_handle_sees_the_others_changes(make_store: StoreFactory) -> None:
    """A worker's cached copy must follow what another worker did (a rebalance moved the symbol)."""
    async def body(store: OutcomeStore) -> None:
        other = another_handle(store)
        await store.register([item(1), item(2)])
        assert keys_of(await store.pending([("BTCUSDT", "1h")])) == {item(1).key, item(2).key}  # cached now
        await other.register([item(3)])
        await other.settle([item(1)])
        assert keys_of(await store.pending([("BTCUSDT", "1h")])) == {item(2).key, item(3).key}
        await store.settle([item(2)])
        await store.register([item(4)])
        assert keys_of(await other.pending([("BTCUSDT", "1h")])) == {item(3).key, item(4).key}
        assert keys_of(await store.pending([("BTCUSDT", "1h")])) == {item(3).key, item(4).key}
        await other.register([item(6)])
        await store.register([item(5)])  # its reply says where the symbol is now; the copy was one change behind
        assert keys_of(await store.pending([("BTCUSDT", "1h")])) == {item(k).key for k in (3, 4, 5, 6)}
    run_with_store(make_store, body)


@pytest.mark.parametrize("make_store", ["redis"], indirect=True)
def test_redis_keeps_each_item_as_it_writes_itself(make_store: StoreFactory) -> None:
    """The items travel to the script as one JSON argument: what lands in Redis is still each item's own
    JSON, byte for byte, and each settled mark's score its open time."""
    odd = item(3, symbol='QUOTE"\\ÉUSDT')

    async def body(store: OutcomeStore) -> None:
        assert isinstance(store, RedisOutcomeStore)
        batch = [item(1), item(2, target="5%"), odd]
        assert await store.register(batch) == 3
        for one in batch:
            pending, settled, _ = store._keys(one.symbol, one.timeframe)
            assert await store._client.hget(pending, one.key) == one.model_dump_json().encode()
        await store.settle([odd])
        pending, settled, _ = store._keys(odd.symbol, odd.timeframe)
        assert await store._client.hget(pending, odd.key) is None
        assert await store._client.zscore(settled, odd.key) == odd.open_time

    run_with_store(make_store, body)
