"""The local Kafka of ``bse-predict services``: KRaft nodes from Maven Central jars.

The jars of Kafka 4.3.1 are fetched once with Maven into
``${XDG_CACHE_HOME:-~/.cache}/bse-predict/kafka-4.3.1/libs`` (this environment
reaches Maven Central but not the Apache download mirrors, so no tarball).
Each node runs its broker and its controller in one JVM; the controller
listens on the broker port + 1. This module holds the single node and what
every node needs (jars, configuration, storage); the three-node cluster is in
:mod:`bse_predict.services.local_cluster`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bse_predict.services.local_service import (
    LocalService,
    Progress,
    ServicesError,
    host_port,
    last_error_line,
    require_program,
    services_dir,
)
from configs.settings import Settings

__all__ = [
    "KAFKA_VERSION",
    "first_address",
    "kafka_service",
    "node_properties",
    "prepare_node",
    "probe_kafka",
    "quiet_aiokafka",
]

KAFKA_VERSION = "4.3.1"

# The broker, plus the log4j2 binding that the Kafka distribution ships in its libs/.
_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", "2.24.3"),
    ("org.apache.logging.log4j", "log4j-core", "2.24.3"),
    ("org.slf4j", "slf4j-api", "2.0.17"),
)

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>bse-predict</groupId><artifactId>kafka-jars</artifactId><version>1</version>
  <dependencies>
{dependencies}
  </dependencies>
</project>
""".format(dependencies="\n".join(
    f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
    f"<version>{version}</version></dependency>"
    for group, artifact, version in _ARTIFACTS
))

# Kafka 4 logs through log4j2. INFO goes to stdout, which the launcher writes to kafka.log.
_LOG4J2 = """<Configuration status="WARN">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


def kafka_service(settings: Settings) -> LocalService:
    """The local single node for ``settings.kafka_bootstrap`` (its first address)."""
    host, port = first_address(settings.kafka_bootstrap)
    root = services_dir()
    home = root / "kafka"
    return LocalService(
        name="kafka",
        host=host,
        port=port,
        extra_ports=(port + 1,),  # the KRaft controller listener
        home=home,
        log_path=root / "kafka.log",
        pid_path=root / "kafka.pid",
        cmdline_marker="kafka.Kafka",
        probe=lambda: probe_kafka(settings.kafka_bootstrap),
        prepare=lambda progress: prepare_node(
            home, host, 1, {1: port}, heap="768m", cluster_id=None, progress=progress
        ),
    )


def first_address(bootstrap: str) -> tuple[str, int]:
    """Host and port of the first address in a bootstrap list (port 9092 when none is given)."""
    first = bootstrap.split(",")[0].strip()
    host, colon, port = first.rpartition(":")
    if not colon:
        return first or "localhost", 9092
    if not port.isdigit():
        raise ServicesError(f"kafka_bootstrap {bootstrap!r} is not host:port")
    return host.strip("[]") or "localhost", int(port)


def probe_kafka(bootstrap: str, **client_options: Any) -> str | None:
    """Describe the cluster with a real metadata request; None if it does not answer.

    ``client_options`` are more aiokafka arguments (security: the secure stack's probe)."""

    async def describe() -> dict:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client_options)
        try:
            await admin.start()
            return await admin.describe_cluster()
        finally:
            await admin.close()

    with quiet_aiokafka():
        try:
            cluster = asyncio.run(describe())
        except (KafkaError, OSError, TimeoutError):  # down, or still starting
            return None
    if not cluster["brokers"]:
        return None
    return f"Kafka cluster {cluster['cluster_id']}"


@contextlib.contextmanager
def quiet_aiokafka() -> Iterator[None]:
    """Keep aiokafka from logging refused connections as errors while the block runs.

    A refused connection is the expected answer while a broker is down or
    starting, and the callers poll."""
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        aiokafka_log.setLevel(level)


def prepare_node(
    home: Path,
    host: str,
    node_id: int,
    voters: dict[int, int],
    *,
    heap: str,
    cluster_id: str | None,
    progress: Progress,
    overrides: Mapping[str, str] | None = None,
    scram_users: Mapping[str, str] | None = None,
) -> list[str]:
    """Make jars, configuration and storage of one node ready; return its command line.

    ``voters`` maps the node id of every node of the cluster to its broker port;
    ``cluster_id`` is the id to format new storage with (None: a random one);
    ``overrides`` replace or add server properties (listeners, TLS, SASL: the
    secure stack, :mod:`bse_predict.services.local_secure`); ``scram_users`` (name to
    password) get SCRAM-SHA-512 credentials when the storage is formatted.
    server.properties is written with mode 0600: with overrides it may hold a password.
    """
    java = require_program("java", "Kafka needs Java 17 or newer")
    libs = _jars(progress)
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    _write_owner_only(config, node_properties(host, node_id, voters, data, overrides))
    log4j = home / "log4j2.xml"
    log4j.write_text(_LOG4J2, encoding="utf-8")
    classpath = ["-cp", str(libs / "*"), f"-Dlog4j2.configurationFile={log4j}"]
    if not (data / "meta.properties").exists():
        scram = [f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
                 for name, password in (scram_users or {}).items()]
        _format_storage([java, *classpath], config, cluster_id or _random_cluster_id(), progress, scram)
    return [java, f"-Xmx{heap}", *classpath, "kafka.Kafka", str(config)]


def node_properties(
    host: str, node_id: int, voters: dict[int, int], data: Path, overrides: Mapping[str, str] | None = None
) -> str:
    """server.properties of one node: broker and controller in one process.

    Every node's controller listens on its broker port + 1. Replication follows
    the node count: every topic on every node (at most 3), acknowledged by all
    but one (at least 1). In a cluster, a node that stops heart-beating is
    fenced after 6 s (Kafka's default: 9 s), so its partitions move sooner.
    ``overrides`` replace the value of a key in place, or are appended.
    """
    return _override_properties(_plain_properties(host, node_id, voters, data), overrides or {})


def _plain_properties(host: str, node_id: int, voters: dict[int, int], data: Path) -> str:
    port = voters[node_id]
    broker, controller = host_port(host, port), host_port(host, port + 1)
    quorum = ",".join(f"{node}@{host_port(host, voter_port + 1)}" for node, voter_port in sorted(voters.items()))
    replicas = min(len(voters), 3)
    min_isr = max(replicas - 1, 1)
    fencing = ["broker.session.timeout.ms=6000", "broker.heartbeat.interval.ms=1000"] if len(voters) > 1 else []
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={quorum}",
        f"listeners=PLAINTEXT://{broker},CONTROLLER://{controller}",
        f"advertised.listeners=PLAINTEXT://{broker}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=8",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=8",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        *fencing,
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=168",
        "",
    ])


def _override_properties(text: str, overrides: Mapping[str, str]) -> str:
    lines = []
    for line in text.splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={overrides[key]}" if key in overrides else line)
    present = {line.partition("=")[0] for line in lines}
    lines += [f"{key}={value}" for key, value in overrides.items() if key not in present]
    return "\n".join(lines) + "\n"


def _write_owner_only(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _random_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _format_storage(
    java: list[str], config: Path, cluster_id: str, progress: Progress, extra: list[str]
) -> None:
    progress("formatting Kafka storage (once per data dir)...")
    result = subprocess.run(  # "--cluster-id=": a random id may start with "-", which "-t ID" reads as an option
        [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config), *extra],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        reason = last_error_line(result.stdout + result.stderr)
        raise ServicesError(f"formatting Kafka storage failed: {reason}")


def _jars(progress: Progress) -> Path:
    """The cached jar folder, fetched with Maven the first time.

    Maven writes into a temporary folder that is renamed into place only when
    complete, so an interrupted fetch never leaves a half cache behind.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    libs = cache / "bse-predict" / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        return libs
    mvn = require_program("mvn", f"Maven is needed once to fetch the Kafka jars into {libs}")
    progress(f"fetching Kafka {KAFKA_VERSION} jars with Maven (once)...")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=libs.parent, prefix=".fetch-") as tmp:
        pom, fetched = Path(tmp) / "pom.xml", Path(tmp) / "libs"
        pom.write_text(_POM, encoding="utf-8")
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={fetched}", "-DincludeScope=runtime"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            reason = last_error_line(result.stdout + result.stderr)
            raise ServicesError(f"Maven could not fetch the Kafka jars: {reason}")
        shutil.rmtree(libs, ignore_errors=True)  # an incomplete cache, left by hand
        fetched.rename(libs)
    progress(f"Kafka jars cached in {libs}")
    return libs
