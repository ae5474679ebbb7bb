"""Rebuild a symbol's window that Redis no longer holds.

When a closed candle arrives and the store holds too little history for its
window, the stream asks once per symbol and process: the candles topic still
holds the history (five weeks of retention), so the rebuilder reads the
candle's partition backwards from that candle's offset (bounded), keeps this
symbol's valid closed candles, and writes them back. Configured candle files
are the second source. A genuinely new symbol costs one short scan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from configs.settings import Settings
from bse_predict.candles.files import read_candle_files
from bse_predict.candles.plausibility import price_jump_refusals
from bse_predict.errors import InvalidCandle
from bse_predict.candles.schema import Candle, parse_candle
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.partition_range import read_offsets
from bse_predict.stream.window_store import WindowStore

__all__ = ["WindowRebuilder"]

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_MS = 5000


class WindowRebuilder:
    """Restores lost windows from Kafka history, then from candle files."""

    def __init__(self, settings: Settings, store: WindowStore, read_count: int) -> None:
        self._settings = settings
        self._store = store
        self._read_count = read_count
        self._consumer: AIOKafkaConsumer | None = None
        self._files: Sequence[Path] = settings.worker.rebuild_from_files

    async def _kafka_history(self, symbol: str, timeframe: str, topic: str, partition: int, offset: int) -> list[Candle]:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(**kafka_options(self._settings), group_id=None,
                                              enable_auto_commit=False)
            await self._consumer.start()
        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        first = (await self._consumer.beginning_offsets([tp]))[tp]
        start = max(first, offset - self._settings.window.rebuild_scan_messages)
        if start >= offset:
            return []
        arrived: list[Candle] = []
        now_ms = time.time_ns() // 1_000_000
        async for record in read_offsets(self._consumer, tp, start, offset, _FETCH_TIMEOUT_MS):
            if record.key != symbol.encode():
                continue
            try:
                candle = parse_candle(record.value, self._settings.candles, now_ms, record.key)
            except InvalidCandle:
                continue  # it went to the dead-letter topic when it first arrived
            if candle.closed and candle.timeframe == timeframe:
                arrived.append(candle)
        # in arrival order, as the stream checked them: a close it refused against the last close stays out
        jumps = price_jump_refusals(arrived, {}, self._settings.candles)
        found = {c.open_time: c for c, jump in zip(arrived, jumps, strict=True) if jump is None}
        return [found[t] for t in sorted(found)]

    def _file_history(self, symbol: str, timeframe: str, before_ms: int) -> list[Candle]:
        candles: list[Candle] = []
        for series in read_candle_files(self._files, timeframe) if self._files else []:
            if series.symbol != symbol or series.timeframe != timeframe:
                continue
            for t, (o, h, l, c, v) in zip(series.open_time_ms.tolist(), series.ohlcv.tolist(), strict=True):
                if t < before_ms:
                    candles.append(Candle(symbol=symbol, timeframe=timeframe, open_time=t, open=o, high=h, low=l,
                                          close=c, volume=v))
        return candles[-self._settings.window.retain_candles:]

    async def rebuild(self, candle: Candle, topic: str, partition: int, offset: int) -> int:
        """Write back what history can be found for ``candle``'s symbol; returns how many candles."""
        history = await self._kafka_history(candle.symbol, candle.timeframe, topic, partition, offset)
        source = "Kafka history"
        if len(history) < self._read_count and self._files:
            history = self._file_history(candle.symbol, candle.timeframe, candle.open_time)
            source = "candle files"
        history = [c for c in history if c.open_time < candle.open_time][-self._settings.window.retain_candles:]
        if history:
            await self._store.write_closed(history, read_count=1)
            log.warning("window of %s %s was short in Redis: rebuilt %d candles from %s",
                        candle.symbol, candle.timeframe, len(history), source)
        return len(history)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
