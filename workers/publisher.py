"""Publish a batch's predictions and dead letters with one Kafka record batch per partition.

Faust's per-message ``send`` cost more than inference at 100 messages a
batch (docs/performance.md), so the worker owns an aiokafka producer and
appends records to partition batches directly. Partitions come from Kafka's
default murmur2 partitioner on the key, as any other keyed producer would
choose them. ``publish`` returns only when the broker acknowledged every
record; the stream acks (and Faust commits) the candles after that.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from models.schema import DeadLetter, Prediction

__all__ = ["KafkaPublisher", "send_record_batches"]


class KafkaPublisher:
    def __init__(self, bootstrap: str, predictions_topic: str, dead_letter_topic: str,
                 shadow_topic: str | None = None) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all",
                                          enable_idempotence=True, client_id="bse-predict-worker")
        self._predictions_topic = predictions_topic
        self._dead_letter_topic = dead_letter_topic
        self._shadow_topic = shadow_topic
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, predictions: Sequence[Prediction], dead_letters: Sequence[DeadLetter],
                      shadow: Sequence[Prediction] = ()) -> None:
        if shadow and self._shadow_topic is None:
            raise ValueError("shadow predictions but no shadow topic: they must never go to predictions")
        pending: list[asyncio.Future] = []
        for topic, records in (
            (self._predictions_topic, [(p.symbol.encode(), p.model_dump_json().encode()) for p in predictions]),
            (self._dead_letter_topic, [((d.key or "").encode(), d.model_dump_json().encode()) for d in dead_letters]),
            (self._shadow_topic or "", [(p.symbol.encode(), p.model_dump_json().encode()) for p in shadow]),
        ):
            if records:
                pending += await self._send_batches(topic, records)
        if pending:
            await asyncio.gather(*pending)

    async def _send_batches(self, topic: str, records: list[tuple[bytes, bytes]]) -> list[asyncio.Future]:
        return await send_record_batches(self._producer, self._partitioner, topic, records)


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
