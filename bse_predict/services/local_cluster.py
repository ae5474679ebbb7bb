"""The three-node local Kafka of ``bse-predict services up --brokers 3``, and the
calls that fault tests make on it.

Every node is a broker and a KRaft controller in one JVM (``-Xmx384m``); the
three controllers are the voters of the metadata quorum, so the cluster keeps
serving, electing leaders and creating topics with any one node down. Node N
(1 to 3) listens on the bootstrap port + 2·(N − 1) and its controller on the
port after that: with ``localhost:9092``, nodes at 9092, 9094 and 9096,
controllers at 9093, 9095 and 9097. The broker defaults give every topic
replication factor 3 and ``min.insync.replicas`` 2, so a producer with
``acks=all`` keeps working while one node is down.

Files: ``<services dir>/kafka-cluster/node-N/`` (data, ``server.properties``,
``log4j2.xml``), ``kafka-N.log`` and ``kafka-N.pid`` beside the others.

A fault test's calls, on settings whose ``kafka_bootstrap`` names node 1::

    services_up(settings, brokers=3)            # the cluster (and Redis); returns once all answer
    bootstrap = cluster_bootstrap(settings)     # every node: clients survive node 1's loss
    pid = broker_pid(settings, 2)               # None while node 2 is down
    kill_broker(settings, 2)                    # kill -9, returns the pid it killed
    start_broker(settings, 2)                   # same data dir; returns its pid once it answers
    wait_for_full_isr(settings)                 # every partition has all replicas in sync again
    services_down(settings)                     # stops every node (and Redis)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from bse_predict.services.local_kafka import first_address, prepare_node, quiet_aiokafka
from bse_predict.services.local_service import (
    LocalService,
    Progress,
    ServicesError,
    host_port,
    kill_service,
    running_pid,
    services_dir,
    start_services,
)
from configs.settings import Settings

__all__ = [
    "CLUSTER_BROKERS",
    "broker_pid",
    "cluster_bootstrap",
    "cluster_services",
    "kill_broker",
    "start_broker",
    "wait_for_full_isr",
]

CLUSTER_BROKERS = 3

_HEAP = "384m"
_ISR_POLL_S = 0.5


def cluster_services(settings: Settings) -> list[LocalService]:
    """The cluster's nodes, node 1 at the first address of ``settings.kafka_bootstrap``.

    Every other address the bootstrap lists must be one of the nodes.
    """
    host, port = first_address(settings.kafka_bootstrap)
    voters = {node: port + 2 * (node - 1) for node in range(1, CLUSTER_BROKERS + 1)}
    nodes = [_node_service(services_dir(), host, node, voters) for node in voters]
    addresses = {(node.host, node.port) for node in nodes}
    for listed in settings.kafka_bootstrap.split(","):
        if first_address(listed) not in addresses:
            raise ServicesError(
                f"kafka_bootstrap lists {listed.strip()}, which is not a node of the local cluster "
                f"({', '.join(node.address for node in nodes)})"
            )
    return nodes


def _node_service(root: Path, host: str, node: int, voters: dict[int, int]) -> LocalService:
    home = root / "kafka-cluster" / f"node-{node}"
    cluster = root / "kafka-cluster"
    port = voters[node]
    return LocalService(
        name=f"kafka-{node}",
        host=host,
        port=port,
        extra_ports=(port + 1,),  # its KRaft controller listener
        home=home,
        log_path=root / f"kafka-{node}.log",
        pid_path=root / f"kafka-{node}.pid",
        cmdline_marker=str(home / "server.properties"),
        probe=lambda: _probe_node(host_port(host, port), node, home),
        prepare=lambda progress: prepare_node(
            home, host, node, voters, heap=_HEAP, cluster_id=_cluster_id(cluster), progress=progress
        ),
    )


def _cluster_id(cluster: Path) -> str | None:
    """The cluster id some node's storage was formatted with; None before the first format."""
    for meta in sorted(cluster.glob("node-*/data/meta.properties")):
        for line in meta.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
    return None


def _probe_node(address: str, node: int, home: Path) -> str | None:
    """Whether node ``node`` answers at ``address`` as an unfenced broker of our cluster.

    Asks that node itself (not any broker) for metadata: it must list itself
    among the live brokers, under the cluster id of our storage.
    """

    async def ask() -> dict:
        client = AIOKafkaClient(bootstrap_servers=address, request_timeout_ms=3000)
        try:
            await client.bootstrap()
            response = await client.send(node, MetadataRequest([]))
        finally:
            await client.close()
        return response.to_object()

    with quiet_aiokafka():
        try:
            metadata = asyncio.run(ask())
        except (KafkaError, OSError, TimeoutError):  # down, starting, or not yet unfenced
            return None
    ours = _cluster_id(home.parent)
    if metadata.get("cluster_id") != ours or node not in {b["node_id"] for b in metadata["brokers"]}:
        return None
    return f"broker {node} of Kafka cluster {ours}"


# ------------------------------------------------------------ fault-test API


def cluster_bootstrap(settings: Settings) -> str:
    """Every node's address, comma-separated: a client given this list can start while any one node is down."""
    return ",".join(node.address for node in cluster_services(settings))


def broker_pid(settings: Settings, broker: int) -> int | None:
    """The pid of node ``broker`` (1 to 3), or None when it is not running."""
    return running_pid(_node(settings, broker))


def kill_broker(settings: Settings, broker: int) -> int:
    """``kill -9`` node ``broker`` and wait until the process is gone; return the pid killed."""
    return kill_service(_node(settings, broker))


def start_broker(
    settings: Settings, broker: int, *, progress: Progress = print, timeout_s: float = 120
) -> int:
    """Start node ``broker`` again on its data dir; return its pid once it answers as a live broker.

    It rejoins the quorum and its replicas catch up on their own; see
    :func:`wait_for_full_isr` for when they have.
    """
    node = _node(settings, broker)
    start_services([node], progress=progress, timeout_s=timeout_s)
    pid = running_pid(node)
    if pid is None:
        raise ServicesError(f"{node.name} answers at {node.address} but bse-predict did not start it")
    return pid


def wait_for_full_isr(settings: Settings, *, timeout_s: float = 120) -> None:
    """Return once all three brokers are live and every partition of every topic (the internal
    ones too) has a leader and all its replicas in sync.

    Raises ServicesError naming what still lags after ``timeout_s``.
    """
    bootstrap = cluster_bootstrap(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        with quiet_aiokafka():
            try:
                lagging = asyncio.run(_lagging(bootstrap))
            except (KafkaError, OSError, TimeoutError) as exc:
                lagging = [f"the cluster does not answer ({exc!r})"]
        if not lagging:
            return
        if time.monotonic() > deadline:
            shown = "; ".join(lagging[:5]) + (f"; and {len(lagging) - 5} more" if len(lagging) > 5 else "")
            raise ServicesError(f"replicas not all in sync after {timeout_s:g} s: {shown}")
        time.sleep(_ISR_POLL_S)


async def _lagging(bootstrap: str) -> list[str]:
    """What keeps the cluster from full ISR: brokers not live, partitions short of replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        topics = await admin.describe_topics()
    finally:
        await admin.close()
    live = {broker["node_id"] for broker in cluster["brokers"]}
    lagging = [f"broker {node} is not live" for node in range(1, CLUSTER_BROKERS + 1) if node not in live]
    for topic in topics:
        if topic["error_code"] != 0:
            lagging.append(f"{topic['topic']}: error code {topic['error_code']}")
        for partition in topic["partitions"]:
            if partition["leader"] < 0 or set(partition["isr"]) != set(partition["replicas"]):
                lagging.append(
                    f"{topic['topic']}-{partition['partition']}: replicas {partition['replicas']}, "
                    f"in sync {partition['isr']}"
                )
    return lagging


def _node(settings: Settings, broker: int) -> LocalService:
    nodes = cluster_services(settings)
    if not 1 <= broker <= len(nodes):
        raise ServicesError(f"broker must be 1 to {len(nodes)}, got {broker}")
    return nodes[broker - 1]
