"""The REST client and one stream connection against the local exchange simulator (no Kafka, no internet)."""

from __future__ import annotations

import asyncio
import time

import pytest

from configs.settings import Settings, load_settings
from bse_predict.ingest.backfill import KlineRequest, last_closed_open_ms
from bse_predict.ingest.klines import KlineUpdate, rest_row_update, stream_name
from bse_predict.ingest.rest_client import ExchangeRest
from bse_predict.ingest.stream_connection import StreamConnection
from tests.support.exchange_sim import HOUR_MS, ExchangeSim, Faults

T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS


def _rows(count: int, gap: set[int] = frozenset()) -> list[tuple[int, float, float, float, float, float]]:
    return [(T0 + i * HOUR_MS, 100.0 + i, 102.0 + i, 99.0 + i, 101.0 + i, 10.0 + i) for i in range(count)
            if i not in gap]


def _settings(sim: ExchangeSim, **ingest: object) -> Settings:
    block = {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "klines_limit": 5}
    return load_settings(ingest={sim.market: block, "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
                                 "subscribe_interval_s": 0.05, "streams_per_subscribe": 1, **ingest})


def test_the_shipped_futures_streams_are_on_the_market_route() -> None:
    endpoints = Settings().ingest.futures
    assert endpoints.ws_url == "wss://fstream.binance.com/market" and endpoints.klines_path == "/fapi/v1/klines"
    assert Settings().ingest.spot.time_path == "/api/v3/time"


async def test_rest_honours_retry_after_and_never_reads_the_forming_candle_as_closed() -> None:
    sim = ExchangeSim({"BTCUSDT": _rows(40, gap={3})}, market="futures", start_ms=T0 + 20 * HOUR_MS + 1000,
                      hour_s=60.0, faults=Faults(rate_limit_requests=(1,), retry_after_s=1))
    await sim.start()
    try:
        settings = _settings(sim)
        async with ExchangeRest(settings.ingest, "futures") as rest:
            server_ms = await rest.server_time_ms()
            started = time.monotonic()
            rows = await rest.klines("BTCUSDT", "1h", KlineRequest(T0, T0 + 30 * HOUR_MS, 30))
            waited = time.monotonic() - started
            assert rest.rate_limited == 1 and waited >= 1.0
            updates = [rest_row_update("BTCUSDT", "1h", row, server_ms) for row in rows]
        assert sim.log.rate_limited == 1 and sim.log.rate_limit_violations == 0
        assert [u.open_time_ms for u in updates] == [T0 + i * HOUR_MS for i in range(21) if i != 3]
        assert [u.closed for u in updates] == [True] * 19 + [False]  # the forming candle, by the server's clock
        assert last_closed_open_ms(server_ms, HOUR_MS) == T0 + 19 * HOUR_MS
    finally:
        await sim.stop()


@pytest.mark.parametrize(("market", "path", "delivers"), [("futures", "/market", True), ("futures", "", False),
                                                         ("spot", "", True)])
async def test_klines_arrive_on_the_routed_stream_only(market: str, path: str, delivers: bool) -> None:
    sim = ExchangeSim({"BTCUSDT": _rows(40), "ETHUSDT": _rows(40)}, market=market,
                      start_ms=T0 + 10 * HOUR_MS + 1000, hour_s=0.2)
    await sim.start()
    got: list[KlineUpdate] = []
    settings = _settings(sim)
    url = f"ws://127.0.0.1:{sim.port}{path}/stream"
    streams = [stream_name(s, "1h") for s in ("BTCUSDT", "ETHUSDT")]
    connection = StreamConnection(url, streams, settings.ingest, got.append, lambda reason: None, "test")
    try:
        await connection.open()  # both SUBSCRIBE messages answered, one every subscribe_interval_s
        await asyncio.sleep(0.5)
        assert (len(got) > 0) is delivers
        if delivers:
            assert {u.symbol for u in got} == {"BTCUSDT", "ETHUSDT"} and any(u.closed for u in got)
        incoming = sim.log.connections[0].incoming_at_s
        assert len(incoming) == 2 and incoming[1] - incoming[0] >= 0.04
    finally:
        await connection.close()
        await sim.stop()
