"""What a restart of ``bse-predict ingest`` pays to read its lookback back from ``candles``
(:func:`~bse_predict.ingest.topic_tail.recent_closed_open_times`): a fresh topic gets ``--hours`` hours of
``--symbols`` symbols, each hour ``--updates`` in-progress updates and one close per symbol (what ingest writes
with ``update_interval_s`` = 3600 / updates), and the scan over ``restart_lookback_candles`` (168) is timed.
Prints one JSON object. Run from the repository root:

    .venv/bin/python benchmarks/ingest_tail_scan.py [--symbols 50] [--hours 200] [--updates 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.stream.replay import candle_payload
from configs.settings import load_settings
from bse_predict.ingest.topic_tail import recent_closed_open_times

HOUR_MS = 3_600_000
T0 = 1_735_689_600_000


async def _run(args: argparse.Namespace) -> dict[str, object]:
    settings = load_settings(None).model_copy(update={"topic_prefix": f"bench-tail-{int(time.time())}."})
    await ensure_topics(settings)
    topic = TopicNames.of(settings).candles
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    began = time.perf_counter()
    records = 0
    try:
        for hour in range(args.hours):
            open_ms = T0 + hour * HOUR_MS
            futures = []
            for symbol in symbols:
                for _ in range(args.updates):
                    futures.append(await producer.send(topic, candle_payload(symbol, "1h", open_ms, (1, 1, 1, 1, 1), False),
                                                       key=symbol.encode()))
                futures.append(await producer.send(topic, candle_payload(symbol, "1h", open_ms, (1, 1, 1, 1, 1), True),
                                                   key=symbol.encode()))
            await asyncio.gather(*futures)
            records += len(futures)
        partitions = await producer.partitions_for(topic)
    finally:
        await producer.stop()
    written_s = time.perf_counter() - began
    began = time.perf_counter()
    scan = await recent_closed_open_times(settings, topic, partitions, symbols, "1h", HOUR_MS,
                                          scan_messages=settings.ingest.tail_scan_messages,
                                          lookback_candles=settings.ingest.restart_lookback_candles,
                                          max_messages=settings.ingest.restart_scan_max_messages)
    scan_s = time.perf_counter() - began
    assert all(len(scan.closed[s]) == min(args.hours, settings.ingest.restart_lookback_candles + 1) for s in symbols)
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)])
    finally:
        await admin.close()
    return {"records_in_topic": records, "partitions": len(partitions), "records_read": scan.records_read,
            "scan_s": round(scan_s, 2), "records_per_s": round(scan.records_read / scan_s),
            "write_s": round(written_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--hours", type=int, default=200)
    parser.add_argument("--updates", type=int, default=60)
    print(json.dumps(asyncio.run(_run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
