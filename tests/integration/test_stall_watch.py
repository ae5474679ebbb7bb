"""The stall watch asks the real broker which partitions are this process's and whether work waits on them."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata

from configs.settings import Settings
from tests.support.kafka_io import send_raw
from bse_predict.connections.clients import kafka_options
from bse_predict.stream.batch_guard import FAULT_EXIT_CODE
from bse_predict.stream.stall_watch import StallWatch
from bse_predict.connections.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_idle_with_records_past_the_committed_offset_leaves_and_caught_up_does_not(isolated: Settings) -> None:
    await ensure_topics(isolated)
    topic = TopicNames.of(isolated).candles
    await send_raw(isolated.kafka_bootstrap, topic, [(b"BTCUSDT", b"{}")] * 5)
    group = f"{isolated.topic_prefix}stall-test"
    # A group member that holds every partition and never processes anything: what a stalled worker looks like.
    member = AIOKafkaConsumer(topic, bootstrap_servers=isolated.kafka_bootstrap, group_id=group,
                              client_id="stalled-worker-1", enable_auto_commit=False)
    await member.start()
    left: list[int] = []
    clock = Clock()
    watch = StallWatch(kafka_options(isolated), group, "stalled-worker-1", topic, stall_s=30.0,
                       leave=left.append, clock=clock)
    other = StallWatch(kafka_options(isolated), group, "another-process", topic, stall_s=30.0,
                       leave=left.append, clock=clock)
    try:
        while not member.assignment():
            await member.getmany(timeout_ms=200, max_records=0)
        clock.now = 29.0
        await watch.check(busy=False)
        assert left == []  # not idle long enough
        clock.now = 31.0
        await watch.check(busy=True)
        assert left == []  # a batch in hand is the batch guard's
        await other.check(busy=False)
        assert left == []  # the broker assigned nothing to that process: not its stall
        await watch.check(busy=False)
        assert left == [FAULT_EXIT_CODE]  # 5 records wait on its partition, nothing was committed

        (filled,) = [tp for tp, end in (await member.end_offsets(sorted(member.assignment()))).items() if end == 5]
        await member.commit({filled: OffsetAndMetadata(5, "")})
        clock.now = 100.0
        await watch.check(busy=False)
        assert left == [FAULT_EXIT_CODE]  # caught up: no second exit
    finally:
        await member.stop()
        await watch.close()
        await other.close()
