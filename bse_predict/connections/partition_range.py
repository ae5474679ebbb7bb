"""Reading one partition of a topic between two offsets: the look-backs into a topic (the ingest's tail scan,
a window's rebuild, a symbol's recent predictions) read this way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord, TopicPartition

__all__ = ["read_offsets"]


async def read_offsets(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int,
                       timeout_ms: int) -> AsyncIterator[ConsumerRecord]:
    """The records of ``tp`` (assigned to ``consumer``) at offsets ``start`` to ``stop - 1``, in offset order.
    The records before ``stop`` exist, so a fetch that brings nothing within ``timeout_ms`` is a fault:
    :class:`KafkaTimeoutError`."""
    consumer.seek(tp, start)
    position = start
    while position < stop:
        records = (await consumer.getmany(tp, timeout_ms=timeout_ms)).get(tp, [])
        if not records:
            raise KafkaTimeoutError(f"reading {tp.topic}[{tp.partition}] stopped at offset {position} of {stop}: "
                                    f"nothing within {timeout_ms} ms")
        for record in records:
            position = record.offset + 1
            if record.offset < stop:
                yield record
