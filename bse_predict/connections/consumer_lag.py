"""A consumer group's progress on a topic, per partition: the group's committed offset against the
partition's end offset. Read with an admin client (the partitions, the committed offsets) and a consumer
of no group (the beginning and end offsets), as anyone may; nothing is committed or joined.

:func:`lag_of` is the one count of what waits: the records from the committed offset (or, with nothing
committed or a committed offset the retention has passed, from the beginning) to the end."""

from __future__ import annotations

from typing import NamedTuple

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.structs import TopicPartition

__all__ = ["PartitionLag", "lag_of", "read_group_lag"]


class PartitionLag(NamedTuple):
    partition: int
    committed: int | None  # None: the group committed nothing on it
    begin: int
    end: int

    @property
    def lag(self) -> int:
        return lag_of(self.committed, self.begin, self.end)


def lag_of(committed: int | None, begin: int, end: int) -> int:
    """Records of a partition past the group's committed offset (None or negative: nothing committed, so
    every record kept, from ``begin``) up to ``end``."""
    done = begin if committed is None or committed < 0 else max(committed, begin)
    return max(end - done, 0)


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    (described,) = await admin.describe_topics([topic])
    if described["error_code"]:
        raise for_code(described["error_code"])(f"describing {topic}")
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


async def read_group_lag(admin: AIOKafkaAdminClient, offsets: AIOKafkaConsumer, group_id: str,
                         topic: str) -> list[PartitionLag]:
    """Every partition of ``topic`` with ``group_id``'s committed offset, its beginning and end offsets.
    ``admin`` and ``offsets`` (a consumer of no group) are started; Kafka's errors are raised
    (:class:`~aiokafka.errors.KafkaError`)."""
    partitions = await _partitions(admin, topic)
    if not partitions:
        raise KafkaError(f"{topic} has no partitions")
    committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
    begin = await offsets.beginning_offsets(partitions)
    end = await offsets.end_offsets(partitions)
    return [PartitionLag(tp.partition, committed[tp].offset if tp in committed and committed[tp].offset >= 0 else None,
                         begin[tp], end[tp]) for tp in partitions]
