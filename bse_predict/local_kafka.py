"""The local Kafka of ``bse-predict services``: one KRaft node from Maven Central jars.

The jars of Kafka 4.3.1 are fetched once with Maven into
``${XDG_CACHE_HOME:-~/.cache}/bse-predict/kafka-4.3.1/libs`` (this environment
reaches Maven Central but not the Apache download mirrors, so no tarball).
The broker and its controller share one JVM; the controller listens on the
broker port + 1.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bse_predict.services import (
    LocalService,
    Progress,
    ServicesError,
    host_port,
    last_error_line,
    require_program,
    services_dir,
)
from configs.settings import Settings

__all__ = ["KAFKA_VERSION", "kafka_service"]

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
    """The local broker for ``settings.kafka_bootstrap`` (its first address)."""
    host, port_number = _first_address(settings.kafka_bootstrap)
    root = services_dir()
    home = root / "kafka"
    return LocalService(
        name="kafka",
        host=host,
        port=port_number,
        extra_ports=(port_number + 1,),  # the KRaft controller listener
        home=home,
        log_path=root / "kafka.log",
        pid_path=root / "kafka.pid",
        cmdline_marker="kafka.Kafka",
        probe=lambda: _probe(settings.kafka_bootstrap),
        prepare=lambda progress: _prepare(home, host, port_number, progress),
    )


def _first_address(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, colon, port = first.rpartition(":")
    if not colon:
        return first or "localhost", 9092
    if not port.isdigit():
        raise ServicesError(f"kafka_bootstrap {bootstrap!r} is not host:port")
    return host.strip("[]") or "localhost", int(port)


def _probe(bootstrap: str) -> str | None:
    """Describe the cluster with a real metadata request; None if it does not answer."""

    async def describe() -> dict:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            return await admin.describe_cluster()
        finally:
            await admin.close()

    # A refused connection is the expected answer while the broker is down or
    # starting; keep aiokafka from logging it as an error on every poll.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        cluster = asyncio.run(describe())
    except (KafkaError, OSError, TimeoutError):  # down, or still starting
        return None
    finally:
        aiokafka_log.setLevel(level)
    if not cluster["brokers"]:
        return None
    return f"Kafka cluster {cluster['cluster_id']}"


def _prepare(home: Path, host: str, port: int, progress: Progress) -> list[str]:
    """Make jars, configuration and storage ready; return the broker's command line."""
    java = require_program("java", "Kafka needs Java 17 or newer")
    libs = _jars(progress)
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    config.write_text(_properties(host, port, data), encoding="utf-8")
    log4j = home / "log4j2.xml"
    log4j.write_text(_LOG4J2, encoding="utf-8")
    classpath = ["-cp", str(libs / "*"), f"-Dlog4j2.configurationFile={log4j}"]
    if not (data / "meta.properties").exists():
        _format_storage([java, *classpath], config, progress)
    return [java, "-Xmx768m", *classpath, "kafka.Kafka", str(config)]


def _properties(host: str, port: int, data: Path) -> str:
    broker, controller = host_port(host, port), host_port(host, port + 1)
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{controller}",
        f"listeners=PLAINTEXT://{broker},CONTROLLER://{controller}",
        f"advertised.listeners=PLAINTEXT://{broker}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=8",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=168",
        "",
    ])


def _format_storage(java: list[str], config: Path, progress: Progress) -> None:
    progress("formatting Kafka storage (once per data dir)...")
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    result = subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
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
