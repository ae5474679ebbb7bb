"""``bse-predict archive``: the consumer group that writes closed candles to the Parquet dataset.

A plain aiokafka consumer with manual commits (auto-commit off), like ``alerts``: the guarantee is
"commit an offset only after every closed candle before it is in a durable file", which aiokafka states
directly (``commit({tp: offset})`` after the work); a Faust agent acknowledges on its own schedule and
after an exception (../shared/PITFALLS.md). Each record of ``candles`` is validated exactly as the worker
validates it (:func:`~bse_predict.candles.schema.parse_candle`, the configured timeframe only): an invalid
one is skipped, counted by kind and logged with its reason (the worker sends it to ``candles.dlq``); an
in-progress update (``closed: false``) is skipped; a closed candle waits in the
:class:`~bse_predict.archive.buffer.ArchiveBuffer`. A flush (size or age, ``archive.flush_*``, a
rebalance, a stop) writes the files (in a thread: the event loop keeps the group's heartbeats), and only
then commits. A write that fails is retried in place with backoff; past ``archive.write_deadline_s``
the process exits 75 with nothing committed, and a restart reads again from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition

from configs.settings import Settings
from bse_predict.archive.buffer import ArchiveBuffer, FlushPlan, flush_due
from bse_predict.archive.errors import ArchiveWriteFailed
from bse_predict.archive.writer import DatasetStore, WrittenFile, write_plan
from bse_predict.candles.schema import parse_candle
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.log_repeats import RepeatFilter
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.errors import InvalidCandle

__all__ = ["Archiver", "ArchiveStats", "run_archive", "READY_MESSAGE", "CRASH_HOOK_EXIT_CODE", "WRITE_FAILED_EXIT_CODE"]

log = logging.getLogger(__name__)
_invalid_log = logging.getLogger(f"{__name__}.invalid")  # its own logger: a flood of them is thinned out alone

READY_MESSAGE = "archive ready"
CRASH_HOOK_EXIT_CODE = 70
WRITE_FAILED_EXIT_CODE = 75
_FILES_NAMED_PER_FLUSH = 5


@dataclass
class ArchiveStats:
    records: int = 0
    candles: int = 0  # closed candles taken (before dedupe)
    forming: int = 0  # closed=false updates skipped
    invalid: Counter[str] = field(default_factory=Counter)
    flushes: int = 0
    files: int = 0
    commits: int = 0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, archiver: Archiver, consumer: AIOKafkaConsumer) -> None:
        self._archiver = archiver
        self._consumer = consumer
        self.announced = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Write and commit what was read of them before they move; the new owner starts from that commit.
        # Not after a failure (a write past its deadline, a cancel): the process stops with nothing more
        # written or committed, and whoever reads next starts from the last commit.
        if revoked and not self._archiver.failed:
            await self._archiver.flush(self._consumer, reason="rebalance")
            self._archiver.buffer.forget(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not self.announced:
            log.info("%s: %d partitions of %s assigned", READY_MESSAGE, len(assigned), self._archiver.topic)
            self.announced = True


class Archiver:
    """Reads ``candles`` in one consumer group and writes closed candles through ``store``."""

    def __init__(self, settings: Settings, store: DatasetStore) -> None:
        self._settings = settings
        self._config = settings.archive
        self._store = store
        self.topic = TopicNames.of(settings).candles
        self.buffer = ArchiveBuffer(self.topic)
        self.stats = ArchiveStats()
        self._timeframes = frozenset({settings.market.timeframe})
        self._lock = asyncio.Lock()
        self._invalid_since_flush: Counter[str] = Counter()
        self.failed = False

    def _consumer(self) -> AIOKafkaConsumer:
        config = self._config
        return AIOKafkaConsumer(
            **kafka_options(self._settings),
            group_id=f"{self._settings.topic_prefix}{config.group_id}",
            enable_auto_commit=False,
            auto_offset_reset=config.start_from,
            session_timeout_ms=int(config.session_timeout_s * 1000),
            heartbeat_interval_ms=int(config.session_timeout_s * 1000 / 3),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    def take(self, record: ConsumerRecord, now_ms: int, now_s: float) -> None:
        """One record: a closed candle into the buffer; anything else skipped (and counted)."""
        self.stats.records += 1
        try:
            candle = parse_candle(record.value, self._settings.candles, now_ms, record.key, self._timeframes)
        except InvalidCandle as error:
            self.stats.invalid[error.kind] += 1
            self._invalid_since_flush[error.kind] += 1
            _invalid_log.warning("skipped an invalid record at %s[%d]@%d: %s: %s", record.topic, record.partition,
                        record.offset, error.kind, error.reason)
            self.buffer.skip(record.partition, record.offset)
            return
        if not candle.closed:
            self.stats.forming += 1
            self.buffer.skip(record.partition, record.offset)
            return
        self.stats.candles += 1
        self.buffer.add(record.partition, record.offset, candle, now_s)

    async def run(self, stop: asyncio.Event) -> ArchiveStats:
        """Consume until ``stop`` is set, then flush what is held and commit it."""
        await ensure_topics(self._settings)
        consumer = self._consumer()
        consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
        await consumer.start()
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=self._config.poll_timeout_ms,
                                               max_records=self._config.max_poll_records)
                now_ms, now_s = int(time.time() * 1000), loop.time()
                owned = consumer.assignment()
                for tp, records in batch.items():
                    if tp not in owned:  # revoked while this batch was in hand: the new owner reads it
                        continue
                    for record in records:
                        self.take(record, now_ms, now_s)
                if flush_due(self.buffer.held, self.buffer.oldest_read_s, loop.time(),
                             self._config.flush_max_candles, self._config.flush_interval_s):
                    await self.flush(consumer, reason="due")
                elif not batch and self.buffer.idle_commits():
                    await self.flush(consumer, reason="idle")  # only skipped records: commit their offsets
        except BaseException:
            self.failed = True
            raise
        finally:
            try:
                if not self.failed:
                    await self.flush(consumer, reason="stop")
            finally:
                await consumer.stop()
        return self.stats

    async def flush(self, consumer: AIOKafkaConsumer, reason: str) -> list[WrittenFile]:
        """Write every held candle, make it durable, then commit; one flush at a time."""
        async with self._lock:
            plan = self.buffer.plan(self._config.market)
            written: list[WrittenFile] = []
            if plan.writes:
                started = time.perf_counter()
                written = await self._write(plan)
                self.buffer.flushed(plan)
                self.stats.flushes += 1
                self.stats.files += len(written)
                self._log_flush(plan, written, reason, time.perf_counter() - started)
                hook = self._config.exit_after_durable_writes
                if hook and self.stats.flushes >= hook:
                    log.error("archive.exit_after_durable_writes=%d: exiting after a durable write, before its "
                              "commit (test hook)", hook)
                    logging.shutdown()
                    os._exit(CRASH_HOOK_EXIT_CODE)
            await self._commit(consumer, plan.commits)
            return written

    async def _write(self, plan: FlushPlan) -> list[WrittenFile]:
        config = self._config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.write_deadline_s
        delay = config.retry_initial_s
        failures = 0
        while True:
            try:
                written = await asyncio.to_thread(write_plan, self._store, plan)
            except (OSError, pa.ArrowException) as error:
                failures += 1
                if loop.time() + delay > deadline:
                    raise ArchiveWriteFailed(f"writing to {self._store.describe()} failed for "
                                             f"{config.write_deadline_s:g} s ({failures} tries): {error}") from error
                log.warning("writing %d candles to %s failed (%s: %s); trying again in %.1f s", plan.candles,
                            self._store.describe(), type(error).__name__, str(error).splitlines()[0], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, config.retry_max_s)
                continue
            if failures:
                log.info("writing to %s works again after %d failed tries", self._store.describe(), failures)
            return written

    async def _commit(self, consumer: AIOKafkaConsumer, commits: dict[int, int]) -> None:
        owned = {tp.partition for tp in consumer.assignment() if tp.topic == self.topic}
        offsets = {TopicPartition(self.topic, p): o for p, o in commits.items() if p in owned}
        if not offsets:
            return
        for tp, offset in offsets.items():  # the invariant, checked where it matters
            safe = self.buffer.safe_commit(tp.partition)
            if safe is None or offset > safe:
                raise AssertionError(f"commit of {tp} at {offset} would pass an unwritten candle (safe: {safe})")
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved in a rebalance; their files are durable and the new owner's merge
            # rewrites the same rows from the same offsets.
            log.warning("offsets of %s not committed (%s); the new owner reads them again",
                        ", ".join(f"{tp.partition}@{o}" for tp, o in offsets.items()), type(error).__name__)
            return
        self.buffer.committed({tp.partition: o for tp, o in offsets.items()})
        self.stats.commits += 1

    def _log_flush(self, plan: FlushPlan, written: list[WrittenFile], reason: str, seconds: float) -> None:
        added = sum(w.added for w in written)
        named = ", ".join(f"{w.path} ({w.rows} rows)" for w in written[:_FILES_NAMED_PER_FLUSH])
        more = f" and {len(written) - _FILES_NAMED_PER_FLUSH} more" if len(written) > _FILES_NAMED_PER_FLUSH else ""
        invalid = (f"; skipped since the last flush: " + ", ".join(f"{k} {n}" for k, n in
                                                                  sorted(self._invalid_since_flush.items()))
                   if self._invalid_since_flush else "")
        log.info("flush (%s): %d candles (%d new open times) in %d files in %.2f s, then committed %s: %s%s%s",
                 reason, plan.candles, added, len(written), seconds,
                 ", ".join(f"{p}@{o}" for p, o in sorted(plan.commits.items())), named, more, invalid)
        for file in written:
            log.debug("wrote %s: %d rows, %d from this flush, replaced %s", file.path, file.rows, file.candles,
                      ", ".join(file.replaced) or "nothing")
        self._invalid_since_flush.clear()


async def _serve(settings: Settings, store: DatasetStore) -> ArchiveStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    archiver = Archiver(settings, store)
    log.info("archive: closed candles of %s (group %s%s) to %s, market=%s; flush at %d candles or %g s",
             archiver.topic, settings.topic_prefix, settings.archive.group_id, store.describe(),
             settings.archive.market, settings.archive.flush_max_candles, settings.archive.flush_interval_s)
    stats = await archiver.run(stop)
    log.info("archive stopped: %d records read, %d closed candles, %d in-progress updates skipped, %d invalid "
             "skipped, %d files written in %d flushes", stats.records, stats.candles, stats.forming,
             sum(stats.invalid.values()), stats.files, stats.flushes)
    return stats


def run_archive(settings: Settings, store: DatasetStore, loglevel: str = "info") -> None:
    """Blocks until SIGTERM/SIGINT (then flushes and commits); exits 75 when writes keep failing."""
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    _invalid_log.addFilter(RepeatFilter(10.0))  # a flood of invalid records: one line per 10 s, the rest counted
    try:
        asyncio.run(_serve(settings, store))
    except ArchiveWriteFailed as error:
        log.error("%s; exiting %d with nothing committed past the last durable file", error, WRITE_FAILED_EXIT_CODE)
        raise SystemExit(WRITE_FAILED_EXIT_CODE) from None
