"""The operations page's reads against the real Kafka and Redis: the worker group's lag per partition of
``candles`` (offsets committed here by a consumer of that group), and the drift per feature family from
the drift monitor's counts in Redis (written here in the layout the monitor writes), each PSI computed here
by hand with numpy from the same counts and the version's training bins."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from configs.settings import Settings
from bse_predict.connections.clients import connect_redis_sync, kafka_options
from bse_predict.connections.topics import TopicNames, ensure_topics, worker_group_id
from bse_predict.control.state_machine import ControlState
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.consumer_lag import KafkaLag
from bse_predict.dashboard.errors import SourceUnavailable
from bse_predict.dashboard.run import operations_section, redis_reads
from bse_predict.features.definitions import FEATURE_FAMILY_OF
from bse_predict.serving.manifest import load_manifest
from tests.support.worker_process import free_port
from tests.unit.test_dashboard_board import prediction

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


async def _fill_and_commit(settings: Settings, per_partition: dict[int, int], committed: dict[int, int]) -> None:
    topic = TopicNames.of(settings).candles
    producer = AIOKafkaProducer(**kafka_options(settings))
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for n in range(count):
                await producer.send_and_wait(topic, b"{}", key=b"k", partition=partition)
    finally:
        await producer.stop()
    group = AIOKafkaConsumer(**kafka_options(settings), group_id=worker_group_id(settings), enable_auto_commit=False)
    await group.start()
    try:
        offsets = {TopicPartition(topic, p): offset for p, offset in committed.items()}
        group.assign(list(offsets))
        await group.commit(offsets)
    finally:
        await group.stop()


def test_the_lag_is_each_partitions_end_past_the_worker_groups_commit(isolated: Settings) -> None:
    settings = isolated
    asyncio.run(ensure_topics(settings))
    asyncio.run(_fill_and_commit(settings, {0: 5, 1: 3, 2: 4}, {0: 2, 1: 3}))

    async def read() -> list:
        lag = KafkaLag(settings, timeout_s=10)
        try:
            return await lag.read()
        finally:
            await lag.close()

    partitions = asyncio.run(read())
    assert len(partitions) == settings.topics.partitions
    by_partition = {p.partition: (p.committed, p.end, p.lag) for p in partitions}
    assert by_partition[0] == (2, 5, 3) and by_partition[1] == (3, 3, 0) and by_partition[2] == (None, 4, 4)
    assert all(by_partition[p] == (None, 0, 0) for p in range(3, settings.topics.partitions))


def test_with_kafka_down_the_lag_says_so_within_its_timeout(isolated: Settings) -> None:
    settings = isolated.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})

    async def read() -> str:
        lag = KafkaLag(settings, timeout_s=2)
        try:
            with pytest.raises(SourceUnavailable) as caught:
                await asyncio.wait_for(lag.read(), 10)
            return str(caught.value)
        finally:
            await lag.close()

    assert f"Kafka at {settings.kafka_bootstrap} did not answer for the consumer lag" in asyncio.run(read())


def _psi_by_hand(expected: tuple[float, ...], counts: np.ndarray) -> float:
    e = np.maximum(np.array(expected), 1e-4)
    a = np.maximum(counts / counts.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def test_drift_per_family_from_the_monitors_counts_in_redis(isolated: Settings, trained_version: Settings) -> None:
    settings = isolated.model_copy(update={
        "models_dir": trained_version.models_dir,
        "drift": isolated.drift.model_copy(update={"min_rows": 50, "window_days": 2, "psi_threshold": 0.25})})
    bins = load_manifest(settings.models_dir / "v-test").feature_bins
    assert bins
    rng = np.random.default_rng(5)
    board = Board(settings.dashboard, settings.signals.round_trip_cost_pct)
    call = prediction("BTCUSDT", 0, version="v-test")
    board.add_prediction(call)
    newest_day = call.open_time // DAY_MS
    redis = connect_redis_sync(settings)
    counted: dict[str, np.ndarray] = {}
    for day in (newest_day - 2, newest_day - 1, newest_day):  # the first is outside the two-day window
        fields = {}
        for name, b in bins.items():
            counts = rng.integers(0, 40, len(b.expected))
            fields |= {f"{name}|{i}": int(c) for i, c in enumerate(counts)}
            if day > newest_day - 2:
                counted[name] = counted.get(name, 0) + counts
        redis.hset(f"{settings.topic_prefix}bse:drift:{{v-test}}:{day}", mapping=fields)
    expected = {name: _psi_by_hand(bins[name].expected, counts) for name, counts in counted.items()
                if counts.sum() >= 50}

    async def parts() -> dict:
        client, _ = redis_reads(settings)
        section, lag = operations_section(settings, client)
        try:
            return await section.parts(board, ControlState(live="v-test", shadow="v-none"), 0)
        finally:
            await lag.close()
            await client.aclose()

    drift = {row["version"]: row for row in asyncio.run(parts())["drift"]}
    assert drift["v-none"]["groups"] is None  # not in the models folder: no bins
    groups = {g.family: g for g in drift["v-test"]["groups"]}
    families = {FEATURE_FAMILY_OF.get(name, "other") for name in expected}
    assert groups.keys() == families
    for family, group in groups.items():
        values = {name: v for name, v in expected.items() if FEATURE_FAMILY_OF.get(name, "other") == family}
        assert group.features == len(values)
        assert group.max_psi == pytest.approx(max(values.values()), rel=1e-9)
        assert group.mean_psi == pytest.approx(sum(values.values()) / len(values), rel=1e-9)
        assert group.over == sum(v > 0.25 for v in values.values())
    assert drift["v-test"]["rows"] == max(int(c.sum()) for c in counted.values())
