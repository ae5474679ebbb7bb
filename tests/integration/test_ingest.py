"""`bse-predict ingest` against the local exchange simulator and the real Kafka: real candles from
``../shared/data`` on a fast clock (one hour = 0.2 s), through a disconnect mid-candle, a serverShutdown,
24-hour rotations, duplicate and late closes, a 429 with Retry-After and exchange-side gaps. The candles
topic must then hold exactly the closed candles of the files, once each, and the gaps must be reported."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from configs.settings import Settings
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.ingest.service import Ingest
from bse_predict.stream.replay import candle_payload
from tests.conftest import SHARED_DATA
from tests.support.exchange_sim import HOUR_MS, ExchangeSim, Faults, candles_from_files
from tests.support.kafka_io import read_topic, read_until, send_raw

pytestmark = pytest.mark.integration

HOURS = 60          # candles per symbol in the simulator
IN_TOPIC = 8        # the first candles are in the topic before ingest starts
START = 12          # the exchange clock starts inside candle START: candles IN_TOPIC..START-1 need a backfill
HOUR_S = 0.2

FAULTS = Faults(
    disconnect_at_h=(6.5,), down_for_h=1.5,      # dropped mid-candle; candles close while it is down
    shutdown_at_h=(13.3,), shutdown_grace_h=1.0,
    max_connection_age_h=24.0,                   # the client rotates at 15 exchange hours (3 s), before the cut
    duplicate_every=3, late_every=4,
    rate_limit_requests=(2,), retry_after_s=1,
)

CASES = {
    # futures: two hours removed from BTCUSDT mid-stream and one from ETHUSDT in the start-up backfill
    "futures": (SHARED_DATA / "binance-futures", 1_735_689_600_000, {"BTCUSDT": {30, 31}, "ETHUSDT": {10}}),
    # spot: the real missing hour of Binance's own history on 2023-03-24 (index 20 of this slice)
    "spot": (SHARED_DATA / "binance-spot", 1_679_659_200_000 - 19 * HOUR_MS, {}),
}


def _ingest_settings(isolated: Settings, sim: ExchangeSim) -> Settings:
    market = {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "klines_limit": 5}
    ingest = {sim.market: market, "update_interval_s": 0.03, "rotate_after_s": 15 * HOUR_S, "ping_interval_s": 0.5,
              "ping_timeout_s": 2.0, "backoff_initial_s": 0.05, "backoff_max_s": 0.4, "subscribe_interval_s": 0.02,
              "streams_per_subscribe": 1, "gap_confirm_after_s": 600, "open_timeout_s": 2.0}
    return isolated.model_copy(update={"ingest": isolated.ingest.model_validate(
        {**isolated.ingest.model_dump(), **ingest, sim.market: {**getattr(isolated.ingest, sim.market).model_dump(),
                                                                 **market}})})


@pytest.mark.parametrize("market", ["futures", "spot"])
async def test_the_topic_holds_every_closed_candle_once_and_the_gaps_are_reported(isolated: Settings,
                                                                                 market: str) -> None:
    folder, first_open_ms, removed = CASES[market]
    if not folder.is_dir():
        pytest.fail(f"real candles are missing: {folder}")
    data = candles_from_files(folder, ["BTCUSDT", "ETHUSDT"], first_open_ms, HOURS)
    data = {s: [row for row in rows if (row[0] - first_open_ms) // HOUR_MS not in removed.get(s, set())]
            for s, rows in data.items()}
    sim = ExchangeSim(data, market=market, start_ms=first_open_ms + START * HOUR_MS + HOUR_MS // 10, hour_s=HOUR_S,
                      tick_s=0.01, heartbeat_s=0.5, faults=FAULTS)
    expected = sim.closed_candles()
    gaps = sim.gaps()
    assert sum(map(len, gaps.values())) >= 1

    await sim.start()
    settings = _ingest_settings(isolated, sim)
    await ensure_topics(settings)
    topic = TopicNames.of(settings).candles
    before = [(s.encode(), candle_payload(s, "1h", row[0], row[1:], True))
              for s, rows in data.items() for row in rows if row[0] < first_open_ms + IN_TOPIC * HOUR_MS]
    await send_raw(settings, topic, before + [(b"XRPUSDT", candle_payload("XRPUSDT", "1h", first_open_ms + 40 * HOUR_MS,
                                                                          (1.0, 1.0, 1.0, 1.0, 1.0), True))])

    stop = asyncio.Event()
    ingest = Ingest(settings, market, ["BTCUSDT", "ETHUSDT"])
    running = asyncio.create_task(ingest.run(stop))
    try:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        await asyncio.sleep(max(0.0, (sim.last_close_ms - sim.now_ms()) / HOUR_MS * HOUR_S))
        closed_key = lambda r: (orjson.loads(r.value)["symbol"], orjson.loads(r.value)["open_time"],  # noqa: E731
                                orjson.loads(r.value)["closed"])
        await read_until(settings, topic, len(expected) + 1, 20,
                         identity=lambda r: closed_key(r) if closed_key(r)[2] else None)
        await asyncio.sleep(1.0)  # anything produced twice would arrive now
    finally:
        stop.set()
        report = await asyncio.wait_for(running, 20)
        await sim.stop()

    records = await read_topic(settings, topic)
    messages = [orjson.loads(r.value) for r in records]
    assert all(r.key == m["symbol"].encode() for r, m in zip(records, messages))
    closed = [m for m in messages if m["closed"] and m["symbol"] != "XRPUSDT"]
    counts = Counter((m["symbol"], m["open_time"]) for m in closed)
    assert set(counts) == set(expected), (set(expected) - set(counts), set(counts) - set(expected))
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]  # once each, not only after dedupe
    for m in closed:
        _, o, h, l, c, v = expected[(m["symbol"], m["open_time"])]
        assert (m["open"], m["high"], m["low"], m["close"], m["volume"], m["timeframe"]) == (o, h, l, c, v, "1h")
    assert report.closed == len(expected) - len(before)

    # the exchange's gaps: reported (log and metric), never invented
    reported = defaultdict(list)
    for gap in report.gaps:
        reported[gap.symbol].extend(range(gap.first_open_ms, gap.last_open_ms + HOUR_MS, HOUR_MS))
    assert {s: sorted(t) for s, t in reported.items()} == {s: t for s, t in gaps.items() if t}
    for symbol, missing in gaps.items():
        assert ingest.metrics.value("bse_ingest_gap_candles", symbol=symbol) == len(missing)

    # in-progress updates: throttled (the simulator sends one every 0.01 s, 20 a candle), never after their close
    updates = [m for m in messages if not m["closed"]]
    per_candle = Counter((m["symbol"], m["open_time"]) for m in updates)
    assert updates and max(per_candle.values()) <= HOUR_S / 0.03 + 2
    closed_at = {}
    for index, m in enumerate(messages):
        key = (m["symbol"], m["open_time"])
        if m["closed"]:
            closed_at.setdefault(key, index)
        else:
            assert key not in closed_at, f"an update of {key} after its close"

    # the faults really happened, and were handled as Binance asks
    log = sim.log
    assert log.rate_limited == 1 and log.rate_limit_violations == 0
    assert log.max_weight_per_minute <= settings.ingest.endpoints(market).weight_per_minute // 2
    assert any(c.closed_by == "disconnect" for c in log.connections) and log.refused_connections >= 1
    shut = [c for c in log.connections if c.got_shutdown]
    assert shut and all(c.closed_by == "client" and c.successor_ready for c in shut)
    rotated = [c for c in log.connections if c.closed_by == "client" and not c.got_shutdown and c.closed_at_ms
               and c.closed_at_ms < sim.last_close_ms]
    assert rotated and all(c.successor_ready for c in rotated)
    assert not [c for c in log.connections if c.closed_by == "age"]
    assert report.duplicates > 0 and report.rate_limited == 1
