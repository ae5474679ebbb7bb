"""The contract's topics: their names (with the configured prefix) and their creation.

Topics are created explicitly, with the partition count of the config, before
anything produces to them: relying on broker auto-creation would give the
broker's default partitioning, and candles keyed by symbol must hash the same
way for every producer and worker.
"""

from __future__ import annotations

import asyncio

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from configs.settings import Settings

__all__ = ["TopicNames", "ensure_topics"]

_WEEK_MS = 7 * 24 * 3_600_000


@dataclass(frozen=True)
class TopicNames:
    candles: str
    candles_dlq: str
    predictions: str
    predictions_shadow: str
    outcomes: str
    control: str
    control_events: str

    @classmethod
    def of(cls, settings: Settings) -> TopicNames:
        return cls(
            candles=settings.topic("candles"),
            candles_dlq=settings.topic("candles.dlq"),
            predictions=settings.topic("predictions"),
            predictions_shadow=settings.topic("predictions.shadow"),
            outcomes=settings.topic("outcomes"),
            control=settings.topic("control"),
            control_events=settings.topic("control.events"),
        )


def _topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    names = TopicNames.of(settings)
    # Candles are kept five weeks, long enough to rebuild a window that Redis lost.
    return {
        names.candles: {"retention.ms": str(5 * _WEEK_MS)},
        names.candles_dlq: {"retention.ms": str(4 * _WEEK_MS)},
        names.predictions: {"retention.ms": str(4 * _WEEK_MS)},
        names.predictions_shadow: {"retention.ms": str(_WEEK_MS)},
        names.outcomes: {"retention.ms": str(4 * _WEEK_MS)},
        names.control: {"retention.ms": str(4 * _WEEK_MS)},
        names.control_events: {"retention.ms": str(4 * _WEEK_MS)},
    }


async def ensure_topics(settings: Settings, extra: tuple[str, ...] = ()) -> None:
    """Create every contract topic (and ``extra`` ones) that does not exist yet; leave existing ones alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bse-predict-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # One partition for control: its messages are applied in the order they were sent.
        single = {settings.topic("control")}
        wanted = [
            NewTopic(name, 1 if name in single else settings.topics.partitions, settings.topics.replication_factor,
                     topic_configs=configs)
            for name, configs in (_topic_configs(settings) | {name: {} for name in extra}).items()
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another worker created them between our list and create: the goal is met
            await _wait_until_visible(admin, [t.name for t in wanted])
    finally:
        await admin.close()


async def _wait_until_visible(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float = 15.0) -> None:
    """Return once the broker's metadata lists every topic with a leader for each partition.

    A consumer that fetches metadata before that sees the topic missing, is assigned nothing,
    and only notices the topic at its next metadata refresh (minutes): seen on a freshly
    started broker, where a worker started right after the topics were created read nothing."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(topics)
        if len(described) == len(topics) and all(
                t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics {topics} not visible in the broker's metadata after {timeout_s} s")
        await asyncio.sleep(0.1)
