"""The contract's topics: their names (with the configured prefix) and their creation.

Topics are created explicitly, with the partition count of the config, before
anything produces to them: relying on broker auto-creation would give the
broker's default partitioning, and candles keyed by symbol must hash the same
way for every producer and worker. Replication follows the config, or the
cluster's own defaults where the config leaves it unset (3 replicas and
``min.insync.replicas`` 2 on the local three-broker cluster, 1 on the single
node).
"""

from __future__ import annotations

import asyncio

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from configs.settings import Settings
from bse_predict.connections.clients import kafka_options

__all__ = ["TopicNames", "ensure_topics", "delete_topics_under", "worker_group_id"]

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
    control_state: str

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
            control_state=settings.topic("control.state"),
        )


def worker_group_id(settings: Settings, app_id: str | None = None) -> str:
    """The worker's Faust app id, which is its consumer group on ``candles`` (``worker.app_id``, prefixed)."""
    return f"{settings.topic_prefix}{app_id if app_id is not None else settings.worker.app_id}"


def _topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    names = TopicNames.of(settings)
    # Candles are kept five weeks, long enough to rebuild a window that Redis lost.
    retention = {
        names.candles: {"retention.ms": str(5 * _WEEK_MS)},
        names.candles_dlq: {"retention.ms": str(4 * _WEEK_MS)},
        names.predictions: {"retention.ms": str(4 * _WEEK_MS)},
        names.predictions_shadow: {"retention.ms": str(_WEEK_MS)},
        names.outcomes: {"retention.ms": str(4 * _WEEK_MS)},
        names.control: {"retention.ms": str(4 * _WEEK_MS)},
        names.control_events: {"retention.ms": str(4 * _WEEK_MS)},
        # Signed copies of the stored control state (bse_predict/control/state_log.py): each writer's last record kept.
        names.control_state: {"cleanup.policy": "compact"},
    }
    return {name: configs | _replication_configs(settings) for name, configs in retention.items()}


def _replication_configs(settings: Settings) -> dict[str, str]:
    """Topic configs from the settings' replication rules (none: the brokers' min.insync.replicas)."""
    min_isr = settings.topics.min_insync_replicas
    return {} if min_isr is None else {"min.insync.replicas": str(min_isr)}


async def ensure_topics(settings: Settings, extra: tuple[str, ...] = ()) -> None:
    """Create every contract topic (and ``extra`` ones) that does not exist yet; leave existing ones alone."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), client_id="bse-predict-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # One partition for control: its messages are applied in the order they were sent; and for
        # control.state, which a worker reads whole.
        single = {settings.topic("control"), settings.topic("control.state")}
        configured = _topic_configs(settings) | {name: _replication_configs(settings) for name in extra}
        missing = {name: configs for name, configs in configured.items() if name not in existing}
        if missing:
            replicas = settings.topics.replication_factor or await _default_replication_factor(admin)
            wanted = [
                NewTopic(name, 1 if name in single else settings.topics.partitions, replicas, topic_configs=configs)
                for name, configs in missing.items()
            ]
            try:
                response = await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another worker created them between our list and create: the goal is met
            else:
                _raise_refusal(response.to_object()["topic_errors"])
            await _wait_until_visible(admin, [t.name for t in wanted])
    finally:
        await admin.close()


async def delete_topics_under(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a bench phase's or a test's own); their names."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), client_id="bse-predict-admin")
    await admin.start()
    try:
        ours = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
        return ours
    finally:
        await admin.close()


def _raise_refusal(topic_errors: list[dict]) -> None:
    """Raise the Kafka error of the first topic the broker refused to create (one that exists is no refusal),
    e.g. a replication factor above the number of brokers."""
    for refused in topic_errors:
        if refused["error_code"] not in (0, TopicAlreadyExistsError.errno):
            raise for_code(refused["error_code"])(f"creating topic {refused['topic']}: {refused['error_message']}")


async def _default_replication_factor(admin: AIOKafkaAdminClient) -> int:
    """The cluster's ``default.replication.factor``, read from a live broker's configuration.

    aiokafka's CreateTopics (v3 at most) cannot ask the broker to apply its default (-1
    needs v4), so it is read here and sent as a number."""
    broker = (await admin.describe_cluster())["brokers"][0]["node_id"]
    resource = ConfigResource(ConfigResourceType.BROKER, str(broker), {"default.replication.factor": None})
    (response,) = await admin.describe_configs([resource])
    (described,) = response.to_object()["resources"]
    if described["error_code"] != 0:
        raise for_code(described["error_code"])(f"describing broker {broker}: {described['error_message']}")
    return int(described["config_entries"][0]["config_value"])


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
