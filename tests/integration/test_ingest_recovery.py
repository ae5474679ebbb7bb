"""`bse-predict ingest` as a subprocess, killed with SIGKILL and started again, against the exchange simulator and
the real Kafka.

1. **A crash loses nothing.** The first run is killed after newer stream closes were acknowledged while the
   older candles of its start-up backfill were still on their way (the simulator holds its klines answers
   back): the topic then has a hole below its newest candle. The next run must fill it: it reads the
   closed candles of the last ``restart_lookback_candles`` back from the topic and backfills every missing
   hour the exchange has. A start from the newest candle alone leaves the hole for good.
2. **A late candle after a gap report is produced.** One hour is missing at the exchange; the second run
   reports it as the exchange's gap, then the exchange publishes it: it is produced (late) and
   ``bse_ingest_gap_filled_candles_total`` says the report was corrected.

At the end the topic holds exactly the closed candles of the files, once each after dedupe (duplicates are
allowed by the contract: a restart may send some again; the worker dedupes by id).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from configs.settings import Settings
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.stream.replay import candle_payload
from tests.conftest import SHARED_DATA
from tests.support.exchange_sim import HOUR_MS, ExchangeSim, candles_from_files
from tests.support.kafka_io import read_topic, send_raw
from tests.support.worker_process import free_port, service_env

pytestmark = pytest.mark.integration

FIRST_OPEN_MS = 1_735_689_600_000
HOURS = 50
IN_TOPIC = 8          # candles 0..7 are in the topic before the first run
START = 12            # the exchange clock starts inside candle 12
GAP = ("BTCUSDT", 10)  # missing at the exchange, published after the second run reported it
HOUR_S = 0.2
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _env(settings: Settings, sim: ExchangeSim, metrics_port: int) -> dict[str, str]:
    return {**os.environ, **service_env(settings),
            "BSE_INGEST__FUTURES__REST_URL": sim.rest_url, "BSE_INGEST__FUTURES__WS_URL": sim.ws_url,
            "BSE_INGEST__FUTURES__KLINES_LIMIT": "5", "BSE_INGEST__UPDATE_INTERVAL_S": "0.1",
            "BSE_INGEST__BACKOFF_INITIAL_S": "0.05", "BSE_INGEST__BACKOFF_MAX_S": "0.4",
            "BSE_INGEST__SUBSCRIBE_INTERVAL_S": "0.02",
            "BSE_INGEST__ROTATE_AFTER_S": str(15 * HOUR_S), "BSE_INGEST__GAP_CONFIRM_AFTER_S": "600",
            "BSE_INGEST__GAP_RECHECK_INTERVAL_S": "0.3", "BSE_INGEST__METRICS_PORT": str(metrics_port)}


def hour(index: int) -> int:
    return FIRST_OPEN_MS + index * HOUR_MS


async def _start_ingest(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    log = log_path.open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bse_predict.cli", "ingest", "--market", "futures", "--symbols", ",".join(SYMBOLS),
        env=env, stdout=log, stderr=log, start_new_session=True)


async def _closed(settings: Settings, topic: str) -> list[tuple[str, int]]:
    return [(m["symbol"], m["open_time"]) for m in
            (orjson.loads(r.value) for r in await read_topic(settings, topic, idle_ms=300)) if m["closed"]]


def _metric(port: int, name: str, **labels: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except (urllib.error.URLError, OSError):
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def _until(what: str, check, timeout_s: float, log_path: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout_s} s\n" + "\n".join(
        log_path.read_text(errors="replace").splitlines()[-30:]))


async def test_a_killed_ingest_loses_no_candle_and_a_late_published_gap_candle_is_produced(
        isolated: Settings, tmp_path: Path) -> None:
    folder = SHARED_DATA / "binance-futures"
    if not folder.is_dir():
        pytest.fail(f"real candles are missing: {folder}")
    data = candles_from_files(folder, list(SYMBOLS), FIRST_OPEN_MS, HOURS)
    gap_symbol, gap_index = GAP
    gap_row = next(r for r in data[gap_symbol] if r[0] == FIRST_OPEN_MS + gap_index * HOUR_MS)
    data[gap_symbol].remove(gap_row)
    sim = ExchangeSim(data, market="futures", start_ms=FIRST_OPEN_MS + START * HOUR_MS + HOUR_MS // 10,
                      hour_s=HOUR_S, tick_s=0.01, heartbeat_s=0.5)
    expected = set(sim.closed_candles()) | {(gap_symbol, gap_row[0])}

    settings = isolated
    await ensure_topics(settings)
    topic = TopicNames.of(settings).candles
    await send_raw(settings, topic, [(s.encode(), candle_payload(s, "1h", row[0], row[1:], True))
                                     for s, rows in data.items() for row in rows if row[0] < hour(IN_TOPIC)])
    await sim.start()
    log_path = tmp_path / "ingest.log"
    port = free_port()
    env = _env(settings, sim, port)
    process: asyncio.subprocess.Process | None = None
    try:
        # the first run: its start-up backfill (candles IN_TOPIC..) is held back; the stream's closes are not
        sim.klines_delay_s = 30.0
        process = await _start_ingest(env, log_path)

        async def stream_close_in_topic() -> bool:
            return any(t >= hour(START) for _, t in await _closed(settings, topic))

        await _until("a stream close in the topic", stream_close_in_topic, 60, log_path)
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        process = None
        crashed = set(await _closed(settings, topic))
        newest = max(t for _, t in crashed)
        hole = {(s, t) for s, t in sim.closed_candles() if t < newest} - crashed
        assert hole, "the kill did not leave a hole below the newest candle: the test shows nothing"
        assert all(hour(IN_TOPIC) <= t for _, t in hole)

        # the second run: the exchange answers at once; it must fill the hole and report the gap
        sim.klines_delay_s = 0.0
        process = await _start_ingest(env, log_path)

        async def hole_filled() -> bool:
            return hole <= set(await _closed(settings, topic))

        await _until(f"the {len(hole)} candles the kill lost", hole_filled, 30, log_path)

        async def gap_reported() -> bool:
            return (await asyncio.to_thread(_metric, port, "bse_ingest_gap_candles_total", symbol=gap_symbol)) == 1

        await _until("the gap reported", gap_reported, 60, log_path)
        assert (gap_symbol, gap_row[0]) not in set(await _closed(settings, topic))
        sim.publish(gap_symbol, gap_row)  # the exchange publishes the missing hour after all

        async def gap_filled() -> bool:
            return (await asyncio.to_thread(_metric, port, "bse_ingest_gap_filled_candles_total",
                                            symbol=gap_symbol)) == 1

        await _until("the late candle produced", gap_filled, 30, log_path)
        await asyncio.sleep(max(0.0, (sim.last_close_ms - sim.now_ms()) / HOUR_MS * HOUR_S))

        async def everything() -> bool:
            return set(await _closed(settings, topic)) >= expected

        await _until("every closed candle of the files", everything, 30, log_path)
    finally:
        if process is not None and process.returncode is None:
            os.killpg(process.pid, signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
        await sim.stop()

    records = await read_topic(settings, topic)
    messages = [orjson.loads(r.value) for r in records]
    closed = {(m["symbol"], m["open_time"]): m for m in messages if m["closed"]}
    assert set(closed) == expected, (expected - set(closed), set(closed) - expected)  # once each after dedupe
    rows = {(s, r[0]): r for s, rs in sim.candles.items() for r in rs.values()}
    for key, m in closed.items():
        _, o, h, l, c, v = rows[key]
        assert (m["open"], m["high"], m["low"], m["close"], m["volume"]) == (o, h, l, c, v)
    assert "reported, not filled" in log_path.read_text() and "after it was reported as a gap" in log_path.read_text()
