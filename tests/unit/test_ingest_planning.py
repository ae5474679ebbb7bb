"""Backfill ranges by the exchange's clock, request weights, the weight budget, Retry-After, backoff, shards."""

from __future__ import annotations

import pytest

from bse_predict.ingest.backfill import (KlineRequest, gap_requests, initial_floor_ms, klines_weight,
                                         last_closed_open_ms, plan_backfill)
from bse_predict.ingest.errors import BadExchangeMessage
from bse_predict.ingest.pacing import WeightBudget, backoff_delay_s, parse_retry_after_s
from bse_predict.ingest.shards import rotation_due, shard_streams, subscribe_requests
from bse_predict.ingest.symbols import trading_usdt_symbols

H = 3_600_000
T0 = 500_000 * H


def test_the_newest_closed_candle_is_decided_by_the_server_time() -> None:
    assert last_closed_open_ms(T0 + 10 * H, H) == T0 + 9 * H  # closed at 59:59.999 < server time
    assert last_closed_open_ms(T0 + 10 * H - 1, H) == T0 + 8 * H  # T0+9H closes at exactly this ms: not before
    assert last_closed_open_ms(T0 + 10 * H + 1234, H) == T0 + 9 * H
    assert initial_floor_ms(T0 + 10 * H, H, 5) == T0 + 4 * H


def test_a_backfill_covers_every_slot_after_the_floor_in_pages() -> None:
    requests = plan_backfill(T0, T0 + 12 * H + 5, H, limit=5)
    assert requests == [KlineRequest(T0 + H, T0 + 5 * H, 5), KlineRequest(T0 + 6 * H, T0 + 10 * H, 5),
                        KlineRequest(T0 + 11 * H, T0 + 11 * H, 5)]
    assert plan_backfill(T0 + 11 * H, T0 + 12 * H + 5, H, limit=5) == []  # nothing closed since


def test_reported_gaps_are_asked_for_again_in_runs_of_neighbouring_slots() -> None:
    slots = [T0 + H, T0 + 2 * H, T0 + 3 * H, T0 + 7 * H]
    assert gap_requests(slots, H, limit=2) == [KlineRequest(T0 + H, T0 + 2 * H, 2), KlineRequest(T0 + 3 * H, T0 + 3 * H, 2),
                                               KlineRequest(T0 + 7 * H, T0 + 7 * H, 2)]
    assert gap_requests([], H, limit=2) == []


def test_request_weights_follow_the_documented_tables() -> None:
    assert klines_weight("spot", 1000) == 2
    assert [klines_weight("futures", n) for n in (99, 100, 499, 500, 1000, 1001, 1500)] == [1, 2, 2, 5, 5, 10, 10]


def test_the_weight_budget_waits_for_the_next_minute() -> None:
    budget = WeightBudget(10)
    for now in (0.0, 1.0, 2.0, 3.0, 4.0):
        assert budget.delay_s(2, now) == 0
        budget.spend(2, now)
    assert budget.delay_s(2, 5.0) == pytest.approx(55.0)
    assert budget.delay_s(2, 60.0) == 0  # a new minute


def test_the_exchanges_count_raises_ours() -> None:
    budget = WeightBudget(100)
    budget.spend(2, 0.0)
    budget.observe_used(99, 1.0)  # another process on the same IP spent the rest
    assert budget.delay_s(2, 1.0) == pytest.approx(59.0)
    budget.observe_used(10, 2.0)
    assert budget.used == 99  # never lowered


def test_retry_after_blocks_every_request() -> None:
    budget = WeightBudget(1000)
    budget.block_for(parse_retry_after_s("7") or 0, now_s=10.0)
    assert budget.delay_s(1, 12.0) == pytest.approx(5.0)
    assert budget.delay_s(1, 17.0) == 0
    assert parse_retry_after_s(None) is None and parse_retry_after_s("soon") is None


def test_backoff_doubles_to_the_cap_and_never_gives_up() -> None:
    full = [backoff_delay_s(n, 1.0, 60.0, jitter_draw=1.0) for n in range(10)]
    assert full == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert backoff_delay_s(3, 1.0, 60.0, jitter_draw=0.0) == 4.0  # half of 8: the jitter's floor
    assert backoff_delay_s(10_000, 1.0, 60.0, 0.5) == 45.0  # no overflow, no last attempt


def test_streams_are_split_evenly_under_the_cap() -> None:
    streams = [f"s{i}@kline_1h" for i in range(450)]
    shards = shard_streams(streams + streams[:3], 200)
    assert [len(s) for s in shards] == [150, 150, 150]
    assert sum(shards, ()) == tuple(streams)
    assert shard_streams([], 200) == [] and len(shard_streams(streams[:200], 200)) == 1


def test_subscribe_messages_carry_at_most_n_streams() -> None:
    messages = subscribe_requests([f"s{i}" for i in range(5)], 2, first_id=7)
    assert messages == [{"method": "SUBSCRIBE", "params": ["s0", "s1"], "id": 7},
                        {"method": "SUBSCRIBE", "params": ["s2", "s3"], "id": 8},
                        {"method": "SUBSCRIBE", "params": ["s4"], "id": 9}]


def test_rotation_is_due_after_the_configured_age() -> None:
    assert not rotation_due(100.0, 100.0 + 82_799, 82_800) and rotation_due(100.0, 100.0 + 82_800, 82_800)


INFO = {"symbols": [
    {"symbol": "BTCUSDT", "status": "TRADING", "quoteAsset": "USDT", "contractType": "PERPETUAL"},
    {"symbol": "BTCUSDT_260626", "status": "TRADING", "quoteAsset": "USDT", "contractType": "CURRENT_QUARTER"},
    {"symbol": "ETHBTC", "status": "TRADING", "quoteAsset": "BTC", "contractType": "PERPETUAL"},
    {"symbol": "LUNAUSDT", "status": "BREAK", "quoteAsset": "USDT", "contractType": "PERPETUAL"},
    {"symbol": "ADAUSDT", "status": "TRADING", "quoteAsset": "USDT"},
]}


def test_every_trading_usdt_market_of_exchange_info() -> None:
    assert trading_usdt_symbols(INFO, "futures") == ["BTCUSDT"]
    assert trading_usdt_symbols(INFO, "spot") == ["ADAUSDT", "BTCUSDT", "BTCUSDT_260626"]
    with pytest.raises(BadExchangeMessage):
        trading_usdt_symbols({}, "spot")
