"""What ``candles`` already holds of each symbol's recent history: where a (re)start's backfill starts, and which
holes it must fill.

Two passes over each partition, whoever produced its records (an earlier ingest, a replay, another exchange
feed of the same symbols); records that are not a valid candle of the timeframe, and in-progress updates, are
skipped:

1. **The newest closed candle of each symbol**: the tail of the partition, ``tail_scan_messages`` records,
   doubling back from the end while a symbol is still unseen.
2. **Every closed candle of the lookback** (``restart_lookback_candles`` before each symbol's newest): the
   partition is read back to the first record whose timestamp is at or after the oldest window's start, less
   one candle for clock skew. A record is written after its candle closed (its timestamp is at least the close
   time), so no candle of the window lies before that offset. At most ``restart_scan_max_messages`` records
   are read: a cut scan only makes the backfill send again some candles the topic has (duplicates, which the
   contract allows), never miss one.

A crash can leave a hole below the newest candle (a stream close acknowledged, an older backfilled candle not
yet): pass 2 is what finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from configs.settings import Settings
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.partition_range import read_offsets

__all__ = ["TailScan", "recent_closed_open_times"]

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_MS = 2000
_TRIM_ABOVE = 4096  # open times held for a symbol before those older than its lookback are dropped
_UPDATE = b'"closed":false'


@dataclass(frozen=True)
class TailScan:
    """``{symbol: closed open times}`` within ``lookback_candles`` of each symbol's newest (included), for the
    symbols found; and the records read."""

    closed: dict[str, set[int]]
    records_read: int

    def newest(self, symbol: str) -> int:
        return max(self.closed[symbol])


async def recent_closed_open_times(settings: Settings, topic: str, partitions: Iterable[int], symbols: Iterable[str],
                                   timeframe: str, timeframe_ms: int, *, scan_messages: int, lookback_candles: int,
                                   max_messages: int) -> TailScan:
    """The closed candles of ``symbols`` in ``topic``'s ``partitions`` (as a producer sees them:
    ``CandleSink.partitions_for``) over the lookback: see the module's text."""
    wanted = set(symbols)
    lookback_ms = lookback_candles * timeframe_ms
    found: dict[str, set[int]] = {}
    read = 0
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None, enable_auto_commit=False,
                                client_id=f"{settings.ingest.client_id}-tail")
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return TailScan(found, 0)
        consumer.assign(assigned)
        begins = await consumer.beginning_offsets(assigned)
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            here: dict[str, set[int]] = {}
            end, span, stop = ends[tp], scan_messages, ends[tp]
            low = end
            while stop > begins[tp]:  # pass 1: the newest closed candle of each symbol
                low = max(begins[tp], end - span)
                read += await _read(consumer, tp, low, stop, wanted, timeframe, here, lookback_ms)
                if wanted <= (found.keys() | here.keys()) or low == begins[tp]:
                    break
                stop, span = low, span * 2
            if here and low > begins[tp]:  # pass 2: back to the oldest window's start
                window_start = min(max(times) for times in here.values()) - lookback_ms - timeframe_ms
                first = (await consumer.offsets_for_times({tp: max(0, window_start)})).get(tp)
                target = max(begins[tp], first.offset if first is not None else end, end - max_messages)
                if first is not None and first.offset < end - max_messages:
                    log.warning("%s[%d]: the lookback needs %d records, reading the newest %d: candles older "
                                "than those may be sent again", topic, tp.partition, end - first.offset, max_messages)
                if target < low:
                    read += await _read(consumer, tp, target, low, wanted, timeframe, here, lookback_ms)
            for symbol, times in here.items():
                found.setdefault(symbol, set()).update(times)
                _trim(found[symbol], lookback_ms)
    finally:
        await consumer.stop()
    return TailScan(found, read)


async def _read(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int, wanted: set[str],
                timeframe: str, found: dict[str, set[int]], lookback_ms: int) -> int:
    """Offsets ``[start, stop)`` of ``tp`` into ``found``, trimmed to the lookback as it goes."""
    async for record in read_offsets(consumer, tp, start, stop, _FETCH_TIMEOUT_MS):
        _note(record.value, wanted, timeframe, found, lookback_ms)
    return stop - start


def _trim(times: set[int], lookback_ms: int) -> None:
    oldest = max(times) - lookback_ms
    times.difference_update([t for t in times if t < oldest])


def _note(value: bytes | None, wanted: set[str], timeframe: str, found: dict[str, set[int]],
          lookback_ms: int) -> None:
    if not value or _UPDATE in value:  # an in-progress update, as ingest and replay write them: not parsed
        return
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if not isinstance(message, dict):
        return
    symbol, open_time = message.get("symbol"), message.get("open_time")
    if (symbol in wanted and message.get("timeframe") == timeframe and message.get("closed", True) is True
            and isinstance(open_time, int)):
        times = found.setdefault(symbol, set())
        times.add(open_time)
        if len(times) > _TRIM_ABOVE:
            _trim(times, lookback_ms)
