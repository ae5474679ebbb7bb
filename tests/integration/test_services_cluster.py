"""The three-broker local Kafka cluster of ``bse-predict services up --brokers 3``, started for real.

The cluster runs on ports found free at run time, in a temporary
BSE_SERVICES_DIR, so it never touches a stack already running on this machine.
``up``, ``status`` and ``down`` are the real command in a subprocess; the
kill, restart and in-sync checks are the calls fault tests make
(bse_predict.services.local_cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bse_predict.services.local_cluster import (
    broker_pid,
    cluster_bootstrap,
    kill_broker,
    start_broker,
    wait_for_full_isr,
)
from bse_predict.services.stack import ServicesError, services_status, services_up
from configs.settings import Settings, load_settings
from bse_predict.connections.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

_BROKER_PORTS = 6  # three brokers and their three controllers, from the bootstrap port up


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 now.

    Drawn below Linux's ephemeral range (32768-60999), where an outgoing
    connection could take one between this check and the broker's own bind."""
    rng = random.Random()
    while True:
        first = rng.randrange(20000, 32000 - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A cluster and a Redis on free ports, started with the real command; stopped at the end."""
    services_dir = tmp_path_factory.mktemp("cluster")
    base = _free_ports(_BROKER_PORTS)
    redis_port = next(port for port in iter(lambda: _free_ports(1), None) if not base <= port < base + _BROKER_PORTS)
    env = {
        "BSE_SERVICES_DIR": str(services_dir),
        "BSE_KAFKA_BOOTSTRAP": f"localhost:{base}",
        "BSE_REDIS_URL": f"redis://localhost:{redis_port}/0",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        up = _command("up", "--brokers", "3")
        try:
            assert up.returncode == 0, up.stderr
            yield load_settings()
        finally:
            if _command("down").returncode != 0:
                _terminate_leftovers(services_dir)


def _terminate_leftovers(services_dir: Path) -> None:
    """SIGTERM whatever the pid files name: the last resort when ``down`` itself failed."""
    for pid_file in services_dir.glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def _command(*args: str) -> subprocess.CompletedProcess[str]:
    """``bse-predict services ARGS`` in a subprocess with this environment."""
    return subprocess.run(
        [sys.executable, "-m", "bse_predict.cli", "services", *args],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )


def test_up_starts_three_brokers_and_status_lists_each(cluster: Settings) -> None:
    base = int(cluster.kafka_bootstrap.rpartition(":")[2])
    report = services_status(cluster)

    assert [b.address for b in report.kafka_brokers] == [f"localhost:{base + 2 * n}" for n in range(3)]
    assert all(b.healthy for b in report.kafka_brokers), [b.detail for b in report.kafka_brokers]
    pids = [b.pid for b in report.kafka_brokers]
    assert pids == [broker_pid(cluster, n) for n in (1, 2, 3)] and len(set(pids)) == 3
    for pid in pids:
        assert b"-Xmx384m" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert report.kafka.healthy and report.kafka.address == cluster_bootstrap(cluster)

    status = _command("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for broker in report.kafka_brokers:
        assert f"{broker.name} up  {broker.address}  pid={broker.pid}" in status.stdout


def test_a_single_node_up_is_refused_while_the_cluster_runs(cluster: Settings) -> None:
    with pytest.raises(ServicesError, match=r"runs with 3 broker\(s\)"):
        services_up(cluster, progress=lambda _: None)


def test_ensure_topics_replicates_three_ways_with_min_insync_two(cluster: Settings) -> None:
    settings = cluster.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:8]}."})
    asyncio.run(ensure_topics(settings))
    names = list(vars(TopicNames.of(settings)).values())

    async def describe() -> tuple[list[dict], list[dict]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster_bootstrap(settings))
        await admin.start()
        try:
            topics = await admin.describe_topics(names)
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, {"min.insync.replicas": None}) for name in names])
        finally:
            await admin.close()
        return topics, [r for response in configs for r in response.to_object()["resources"]]

    topics, configs = asyncio.run(describe())
    assert sorted(t["topic"] for t in topics) == sorted(names)
    for topic in topics:
        assert topic["partitions"], topic
        for partition in topic["partitions"]:
            assert sorted(partition["replicas"]) == [1, 2, 3], (topic["topic"], partition)
    assert {c["resource_name"]: c["config_entries"][0]["config_value"] for c in configs} == dict.fromkeys(names, "2")


def test_acks_all_producer_survives_kill_9_and_every_record_is_there_after_the_rejoin(cluster: Settings) -> None:
    settings = cluster.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:8]}."})
    asyncio.run(ensure_topics(settings))
    topic = TopicNames.of(settings).candles
    bootstrap = cluster_bootstrap(settings)
    records = [f"record-{i}".encode() for i in range(600)]

    async def leader_of_partition_0() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return next(p["leader"] for p in described["partitions"] if p["partition"] == 0)

    async def produce_kill_produce() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
        await producer.start()
        try:
            await _send_all(producer, topic, records[:300])
            victim = await leader_of_partition_0()  # the next records for partition 0 need a new leader
            killed = kill_broker(settings, victim)
            await _send_all(producer, topic, records[300:])
        finally:
            await producer.stop()
        return victim, killed

    victim, killed = asyncio.run(produce_kill_produce())
    during = services_status(settings)
    assert broker_pid(settings, victim) is None
    assert [b.healthy for b in during.kafka_brokers] == [n != victim for n in (1, 2, 3)]
    assert during.kafka.running and not during.kafka.healthy

    restarted = start_broker(settings, victim, progress=lambda _: None)
    assert restarted != killed
    wait_for_full_isr(settings, timeout_s=120)

    assert Counter(asyncio.run(_read_all(bootstrap, topic, len(records)))) == Counter(records)


async def _send_all(producer: AIOKafkaProducer, topic: str, values: list[bytes]) -> None:
    """Send every value (keys spread over all partitions) and wait for every acknowledgement."""
    futures = [await producer.send(topic, value, key=value) for value in values]
    await asyncio.gather(*futures)


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    """Every value in ``topic`` from the start, once ``expected`` have arrived (at most 60 s)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(values) < expected:
                batches = await consumer.getmany(timeout_ms=1000)
                values += [record.value for batch in batches.values() for record in batch]
    except TimeoutError:
        pass  # the comparison below names what is missing
    finally:
        await consumer.stop()
    return values


def test_down_stops_every_broker(cluster: Settings) -> None:
    pids = [broker_pid(cluster, n) for n in (1, 2, 3)]
    root = Path(os.environ["BSE_SERVICES_DIR"])

    down = _command("down")

    assert down.returncode == 0, down.stderr
    report = services_status(cluster)
    assert not report.kafka.running
    assert all(not b.running and b.pid is None for b in report.kafka_brokers)
    assert all(pid is not None and _gone(pid) for pid in pids), pids
    assert not any((root / f"kafka-{n}.pid").exists() for n in (1, 2, 3))
    assert _command("status").returncode == 1


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited: no such process, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"
