"""Produce candles from files to the ``candles`` topic, at a rate or as fast as possible.

Series are merged by open time so every symbol advances together, as a live
feed would. With ``updates=K`` each closed candle is preceded by K
in-progress updates (``closed: false``) that walk from the open towards the
close and stay inside the final candle's range, as an exchange's forming
candle does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import TopicNames, ensure_topics

__all__ = ["CandleRecord", "candle_records", "replay", "ReplayReport", "candle_payload"]

_SEND_WINDOW = 2000


@dataclass(frozen=True)
class CandleRecord:
    symbol: str
    open_time_ms: int
    closed: bool
    payload: bytes


@dataclass(frozen=True)
class ReplayReport:
    closed: int
    updates: int
    seconds: float


def candle_payload(symbol: str, timeframe: str, open_time_ms: int, ohlcv: Sequence[float], closed: bool) -> bytes:
    o, h, l, c, v = (float(x) for x in ohlcv)
    return orjson.dumps({"symbol": symbol, "timeframe": timeframe, "open_time": int(open_time_ms), "open": o,
                         "high": h, "low": l, "close": c, "volume": v, "closed": closed})


def _updates_before(ohlcv: np.ndarray, count: int) -> Iterator[np.ndarray]:
    o, h, l, c, v = ohlcv
    for step in range(1, count + 1):
        share = step / (count + 1)
        price = o + share * (c - o)
        yield np.array([o, min(h, max(o, price)), max(l, min(o, price)), price, v * share])


def candle_records(series: Sequence[CandleSeries], updates: int = 0) -> Iterator[CandleRecord]:
    """Every candle of every series, merged by open time (ties in symbol order)."""
    times = np.concatenate([s.open_time_ms for s in series])
    owner = np.concatenate([np.full(len(s.open_time_ms), i) for i, s in enumerate(series)])
    row = np.concatenate([np.arange(len(s.open_time_ms)) for s in series])
    for index in np.lexsort((owner, times)):
        one = series[owner[index]]
        t, ohlcv = int(times[index]), one.ohlcv[row[index]]
        for partial in _updates_before(ohlcv, updates):
            yield CandleRecord(one.symbol, t, False, candle_payload(one.symbol, one.timeframe, t, partial, False))
        yield CandleRecord(one.symbol, t, True, candle_payload(one.symbol, one.timeframe, t, ohlcv, True))


async def replay(
    settings: Settings,
    records: Sequence[CandleRecord],
    rate_per_s: float | None = None,
    on_sent: Callable[[CandleRecord, float], None] | None = None,
) -> ReplayReport:
    """Send ``records`` in order; ``rate_per_s`` paces closed candles (updates ride along)."""
    await ensure_topics(settings)
    topic = TopicNames.of(settings).candles
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=0, acks="all",
                                enable_idempotence=True)
    await producer.start()
    started = time.perf_counter()
    closed = partial_updates = 0
    pending: list[asyncio.Future] = []
    try:
        for record in records:
            if rate_per_s and record.closed:
                delay = started + closed / rate_per_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, record.payload, key=record.symbol.encode()))
            if on_sent is not None:
                on_sent(record, time.perf_counter())
            closed += record.closed
            partial_updates += not record.closed
            if len(pending) >= _SEND_WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ReplayReport(closed=closed, updates=partial_updates, seconds=time.perf_counter() - started)
