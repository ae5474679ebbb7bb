"""``read_offsets`` on the real Kafka: one partition's records between two offsets, in order, and a fault when
records before the stop offset do not come."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition

from bse_predict.connections.clients import kafka_options
from bse_predict.connections.partition_range import read_offsets
from bse_predict.connections.topics import TopicNames, ensure_topics
from configs.settings import Settings

pytestmark = pytest.mark.integration

RECORDS = 10


async def test_read_offsets_yields_the_range_in_order_and_fails_on_missing_records(isolated: Settings) -> None:
    await ensure_topics(isolated)
    tp = TopicPartition(TopicNames.of(isolated).candles, 1)
    producer = AIOKafkaProducer(**kafka_options(isolated), acks="all")
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send_and_wait(tp.topic, b"record %d" % i, partition=tp.partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**kafka_options(isolated), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        middle = [(r.offset, r.value) async for r in read_offsets(consumer, tp, 3, 8, 5000)]
        assert middle == [(i, b"record %d" % i) for i in range(3, 8)]
        assert [r.offset async for r in read_offsets(consumer, tp, 0, RECORDS, 5000)] == list(range(RECORDS))
        assert [r async for r in read_offsets(consumer, tp, 4, 4, 5000)] == []

        seen: list[int] = []
        with pytest.raises(KafkaTimeoutError, match=rf"stopped at offset {RECORDS} of {RECORDS + 2}"):
            async for record in read_offsets(consumer, tp, RECORDS - 2, RECORDS + 2, 300):
                seen.append(record.offset)
        assert seen == [RECORDS - 2, RECORDS - 1]
    finally:
        await consumer.stop()
