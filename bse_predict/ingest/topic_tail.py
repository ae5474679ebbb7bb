"""The newest closed candle of each symbol already in ``candles``: where a backfill starts.

The tail of every partition is read (at most ``tail_scan_messages`` records each, doubling back from the
end while a symbol is still unseen), whoever produced it: an earlier ingest, a replay, another exchange
feed of the same symbols. Records that are not a valid candle of the timeframe, and in-progress updates,
are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from configs.settings import Settings
from bse_predict.connections.clients import kafka_options

__all__ = ["last_closed_open_times"]

_FETCH_TIMEOUT_MS = 2000


async def last_closed_open_times(settings: Settings, topic: str, partitions: Iterable[int], symbols: Iterable[str],
                                 timeframe: str, scan_messages: int) -> dict[str, int]:
    """``{symbol: newest closed open time}`` for the symbols found in the tail of ``topic``'s ``partitions``
    (as a producer sees them: ``CandleSink.partitions_for``)."""
    wanted = set(symbols)
    found: dict[str, int] = {}
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None, enable_auto_commit=False,
                                client_id=f"{settings.ingest.client_id}-tail")
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return found
        consumer.assign(assigned)
        begins = await consumer.beginning_offsets(assigned)
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            end, span = ends[tp], scan_messages
            stop = end
            while stop > begins[tp]:
                start = max(begins[tp], end - span)
                consumer.seek(tp, start)
                position = start
                while position < stop:
                    batch = (await consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS)).get(tp, [])
                    if not batch:
                        raise TimeoutError(f"reading {topic}[{tp.partition}] stopped at offset {position} of {stop}")
                    for record in batch:
                        position = record.offset + 1
                        if record.offset < stop:
                            _note(record.value, wanted, timeframe, found)
                if wanted <= found.keys() or start == begins[tp]:
                    break
                stop, span = start, span * 2
    finally:
        await consumer.stop()
    return found


def _note(value: bytes | None, wanted: set[str], timeframe: str, found: dict[str, int]) -> None:
    try:
        message = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return
    if not isinstance(message, dict):
        return
    symbol, open_time = message.get("symbol"), message.get("open_time")
    if (symbol in wanted and message.get("timeframe") == timeframe and message.get("closed", True) is True
            and isinstance(open_time, int)):
        found[symbol] = max(open_time, found.get(symbol, open_time))
