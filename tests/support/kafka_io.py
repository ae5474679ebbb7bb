"""Real Kafka helpers for integration tests: read a topic to the end, send raw records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from configs.settings import Settings
from bse_predict.connections.clients import kafka_options

__all__ = ["read_topic", "send_raw", "read_until"]

Brokers = str | Settings  # a plain bootstrap, or settings whose security the clients use


def _options(brokers: Brokers) -> dict[str, Any]:
    return kafka_options(brokers) if isinstance(brokers, Settings) else {"bootstrap_servers": brokers}


async def read_topic(bootstrap: Brokers, topic: str, idle_ms: int = 2000) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, stopping after ``idle_ms`` without news."""
    consumer = AIOKafkaConsumer(topic, **_options(bootstrap), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms)
            if not batch:
                return records
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()


async def read_until(bootstrap: Brokers, topic: str, count: int, timeout_s: float,
                     identity: Callable[[ConsumerRecord], object] = lambda r: (r.partition, r.offset)) -> list[ConsumerRecord]:
    """Read ``topic`` from the beginning until ``count`` distinct records (by ``identity``)
    arrived or ``timeout_s`` passed. Duplicates are kept in the result."""
    consumer = AIOKafkaConsumer(topic, **_options(bootstrap), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[ConsumerRecord] = []
    seen: set[object] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
                seen.update(identity(m) for m in messages)
        return records
    finally:
        await consumer.stop()


async def send_raw(bootstrap: Brokers, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(**_options(bootstrap), linger_ms=0, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
