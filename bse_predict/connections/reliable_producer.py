"""An idempotent ``acks=all`` Kafka producer whose every record's delivery is checked.

Shared by every writer that must not lose a record (the worker's publisher, the
outcome resolver): records go out as one record batch per partition, partitions
from Kafka's default murmur2 partitioner on the key.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

__all__ = ["ReliableProducer", "ReliableWriter", "send_record_batches"]

log = logging.getLogger(__name__)


class ReliableProducer:
    """An idempotent ``acks=all`` producer whose every record's delivery is checked.

    ``send_all`` returns only when the broker acknowledged every record and raises the first
    failure otherwise (aiokafka's ``flush`` does not raise for a failed send; the futures do).
    After a failure ``restart`` replaces the producer: an idempotent producer whose batch expired
    may refuse the next sequence numbers, and a fresh producer id costs only duplicates, which
    consumers drop by id.
    """

    def __init__(self, kafka: Mapping[str, Any], client_id: str, request_timeout_ms: int = 30_000) -> None:
        """``kafka``: :func:`bse_predict.connections.clients.kafka_options`."""
        self._options = {**kafka, "linger_ms": 0, "acks": "all", "enable_idempotence": True,
                         "client_id": client_id, "request_timeout_ms": request_timeout_ms}
        self._producer = AIOKafkaProducer(**self._options)
        self._partitioner = DefaultPartitioner()
        self._started = False

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def restart(self) -> None:
        old, self._producer = self._producer, AIOKafkaProducer(**self._options)
        if self._started:
            self._started = False
            try:
                await asyncio.wait_for(old.stop(), self._options["request_timeout_ms"] / 1000)
            except (KafkaError, OSError, asyncio.TimeoutError) as error:  # the old one is dropped either way
                log.info("stopping the failed producer: %r", error)
        await self.start()

    async def send_all(self, by_topic: Sequence[tuple[str, Sequence[tuple[bytes, bytes]]]]) -> None:
        """(topic, [(key, value)]) pairs sent as one record batch per partition; see the class docstring."""
        pending: list[asyncio.Future] = []
        for topic, records in by_topic:
            if records:
                pending += await send_record_batches(self._producer, self._partitioner, topic, records)
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    async def partitions_for(self, topic: str) -> set[int]:
        return set(await self._producer.partitions_for(topic))

    async def send_one(self, topic: str, key: bytes, value: bytes) -> None:
        await self.send_all([(topic, [(key, value)])])


class ReliableWriter:
    """A writer that owns one :class:`ReliableProducer` (as ``_producer``) and hands its life cycle
    through: ``start``, ``stop`` and ``restart``."""

    def __init__(self, kafka: Mapping[str, Any], client_id: str, request_timeout_ms: int = 30_000) -> None:
        self._producer = ReliableProducer(kafka, client_id, request_timeout_ms)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def restart(self) -> None:
        """A fresh producer (after a broker fault)."""
        await self._producer.restart()


async def send_record_batches(producer: AIOKafkaProducer, partitioner: DefaultPartitioner, topic: str,
                              records: Sequence[tuple[bytes, bytes]]) -> list[asyncio.Future]:
    """(key, value) records appended to one record batch per partition (more when one fills up)
    and handed to the producer; await the returned futures for the broker's acks."""
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for key, value in records:
        by_partition[partitioner(key, partitions, partitions)].append((key, value))
    futures = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # the batch is full
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
