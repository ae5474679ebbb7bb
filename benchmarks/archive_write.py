"""Write throughput of ``bse-predict archive``, in closed candles per second.

Two figures over the same real candles (``../shared/data/candles/binance-futures`` by default):

- ``writer``: the archive's own path without Kafka: candles into the buffer, flushed every
  ``--flush-max-candles`` through the local store (merge with the folder's file, temporary file,
  fsync, rename, fsync of the folder);
- ``end_to_end``: the candles replayed into a fresh ``candles`` topic first (not timed), then the
  real :class:`~bse_predict.archive.run.Archiver` in one consumer group from the group join to the
  last commit: decode and validate every record, buffer, write, fsync, commit.

Prints one JSON object. Needs Kafka for ``end_to_end`` (``--no-kafka`` skips it); its topics are
deleted afterwards. Run from the repository root:

    .venv/bin/python benchmarks/archive_write.py [--data DIR] [--flush-max-candles 50000] [--no-kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from configs.settings import Settings, load_settings
from bse_predict.archive.buffer import ArchiveBuffer
from bse_predict.archive.run import Archiver
from bse_predict.archive.store import LocalStore
from bse_predict.archive.writer import write_plan
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.candles.schema import Candle
from bse_predict.connections.clients import kafka_options
from bse_predict.stream.replay import candle_records, replay

ROOT = Path(__file__).resolve().parents[1]


def _writer(series: list[CandleSeries], settings: Settings, out: Path) -> dict[str, float]:
    store = LocalStore(out, settings.archive)
    buffer = ArchiveBuffer("candles")
    offset, files = 0, 0
    started = time.perf_counter()
    for partition, one in enumerate(series):
        for t, (o, h, lo, c, v) in zip(one.open_time_ms.tolist(), one.ohlcv.tolist(), strict=True):
            buffer.add(partition, offset, Candle(symbol=one.symbol, timeframe=one.timeframe, open_time=t, open=o,
                                                 high=h, low=lo, close=c, volume=v), now_s=0.0)
            offset += 1
            if buffer.held >= settings.archive.flush_max_candles:
                plan = buffer.plan(settings.archive.market)
                files += len(write_plan(store, plan))
                buffer.flushed(plan)
    plan = buffer.plan(settings.archive.market)
    files += len(write_plan(store, plan))
    buffer.flushed(plan)
    seconds = time.perf_counter() - started
    return {"candles": offset, "seconds": round(seconds, 2), "candles_per_s": round(offset / seconds),
            "files_written": files, "dataset_files": sum(1 for _ in out.rglob("*.parquet"))}


async def _end_to_end(series: list[CandleSeries], settings: Settings, out: Path) -> dict[str, float]:
    records = list(candle_records(series))
    await replay(settings, records)
    archiver = Archiver(settings, LocalStore(out, settings.archive))
    stop = asyncio.Event()

    async def stop_when_done() -> None:
        while archiver.stats.candles < len(records):
            await asyncio.sleep(0.05)
        stop.set()  # the stop's flush writes and commits what is still held

    started = time.perf_counter()
    watcher = asyncio.create_task(stop_when_done())
    stats = await archiver.run(stop)
    seconds = time.perf_counter() - started
    await watcher
    return {"candles": stats.candles, "seconds": round(seconds, 2), "candles_per_s": round(stats.candles / seconds),
            "flushes": stats.flushes, "files_written": stats.files, "commits": stats.commits}


async def _delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "candles" / "binance-futures")
    parser.add_argument("--flush-max-candles", type=int, default=None)
    parser.add_argument("--no-kafka", action="store_true")
    args = parser.parse_args()
    archive = {"flush_interval_s": 3600.0}  # flushes by size only: the figure does not depend on timing
    if args.flush_max_candles:
        archive["flush_max_candles"] = args.flush_max_candles
    settings = load_settings(archive=archive, topic_prefix=f"bench-archive-{uuid.uuid4().hex[:8]}.")
    series = read_candle_files([args.data], settings.market.timeframe)
    result: dict[str, object] = {"data": str(args.data), "symbols": len(series),
                                 "flush_max_candles": settings.archive.flush_max_candles,
                                 "compression": settings.archive.compression}
    with tempfile.TemporaryDirectory() as folder:
        result["writer"] = _writer(series, settings, Path(folder) / "writer")
        if not args.no_kafka:
            try:
                result["end_to_end"] = asyncio.run(_end_to_end(series, settings, Path(folder) / "end_to_end"))
            finally:
                asyncio.run(_delete_topics(settings))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
