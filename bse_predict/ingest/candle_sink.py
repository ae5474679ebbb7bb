"""The ``candles`` topic as ingest writes it: an idempotent ``acks=all`` producer, key = symbol, the contract's
JSON. Candles are queued and sent in batches; a batch that fails is retried in place, after a backoff and on
a fresh producer, for as long as it takes (a broker outage holds the queue, it loses nothing)."""

from __future__ import annotations

import asyncio
import logging
import random

from aiokafka.errors import KafkaError

from configs.settings import Settings
from bse_predict.candles.schema import Candle
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.reliable_producer import ReliableProducer
from bse_predict.ingest.klines import candle_message
from bse_predict.ingest.pacing import backoff_delay_s

__all__ = ["CandleSink"]

log = logging.getLogger(__name__)

_BATCH = 500


class CandleSink:
    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._producer = ReliableProducer(kafka_options(settings), settings.ingest.client_id,
                                          settings.worker.faults.kafka_request_timeout_ms)
        self._queue: asyncio.Queue[Candle] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.sent_closed = 0
        self.sent_updates = 0

    async def start(self) -> None:
        await self._producer.start()
        self._writer = asyncio.create_task(self._write(), name="ingest-candle-sink")

    async def partitions_for(self, topic: str) -> set[int]:
        return await self._producer.partitions_for(topic)

    def put(self, candle: Candle) -> None:
        self._queue.put_nowait(candle)

    async def flush(self) -> None:
        """Returns when every candle put so far is acknowledged by the broker."""
        await self._queue.join()

    async def stop(self) -> None:
        if self._writer is not None:
            await self.flush()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self._producer.stop()

    async def _write(self) -> None:
        faults = self._settings.worker.faults
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = [(c.symbol.encode(), candle_message(c)) for c in batch]
            attempt = 0
            while True:
                try:
                    await self._producer.send_all([(self._topic, records)])
                    break
                except KafkaError as error:
                    wait = backoff_delay_s(attempt, faults.retry_initial_s, faults.retry_max_s, random.random())
                    attempt += 1
                    log.warning("sending %d candles failed (%r): retry in %.1f s", len(records), error, wait)
                    await asyncio.sleep(wait)
                    try:
                        await self._producer.restart()
                    except (KafkaError, OSError) as restart_error:
                        log.warning("restarting the producer failed (%r)", restart_error)
            closed = sum(c.closed for c in batch)
            self.sent_closed += closed
            self.sent_updates += len(batch) - closed
            for _ in batch:
                self._queue.task_done()
