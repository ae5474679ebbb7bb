"""The local Kafka and Redis of ``bse-predict services``, started for real.

Everything runs on ports found free at run time, in a temporary
BSE_SERVICES_DIR, so it never touches a stack already running on this machine.
The Kafka jars cache is shared: only the very first run fetches them.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bse_predict.services.stack import ServicesError, services_down, services_status, services_up
from configs.settings import Settings, load_settings
from bse_predict.connections.clients import connect_redis_sync

pytestmark = pytest.mark.integration


def _free_port(*, with_next: bool = False) -> int:
    """A port free on 127.0.0.1 now (and, with ``with_next``, the one after it too).

    Drawn below Linux's ephemeral range (32768-60999): a port handed out by bind(0) is
    an ephemeral one, and on a busy machine an outgoing connection can take it between
    this check and the server's own bind."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        wanted = (port, port + 1) if with_next else (port,)
        try:
            for candidate in wanted:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _settings(kafka_port: int, redis_port: int, host: str = "localhost") -> Settings:
    return load_settings(
        kafka_bootstrap=f"{host}:{kafka_port}", redis_url=f"redis://{host}:{redis_port}/0"
    )


@pytest.fixture(scope="module", autouse=True)
def _clean_env() -> Iterator[None]:
    """The environment beats load_settings overrides: keep a developer's BSE_* out of the way."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("BSE_KAFKA_BOOTSTRAP", "BSE_REDIS_URL", "BSE_SERVICES_DIR"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A running stack on free ports, shared by the tests of this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BSE_SERVICES_DIR", str(tmp_path_factory.mktemp("services")))
        settings = _settings(_free_port(with_next=True), _free_port())
        services_up(settings, progress=lambda _: None, timeout_s=90)
        try:
            yield settings
        finally:
            services_down(settings, progress=lambda _: None)


def test_up_reports_both_healthy(stack: Settings) -> None:
    report = services_status(stack)
    for state in (report.kafka, report.redis):
        assert state.running and state.healthy, state.detail
        assert state.pid is not None
        assert state.log_path.is_file()
    assert report.kafka.address == stack.kafka_bootstrap


def test_up_again_changes_nothing(stack: Settings) -> None:
    before = services_status(stack)
    messages: list[str] = []
    after = services_up(stack, progress=messages.append)
    assert (after.kafka.pid, after.redis.pid) == (before.kafka.pid, before.redis.pid)
    assert all("already running" in message for message in messages), messages


def test_kafka_carries_a_message(stack: Settings) -> None:
    topic = f"services-test-{uuid.uuid4().hex[:8]}"

    async def round_trip() -> bytes:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            return (await asyncio.wait_for(consumer.getone(), timeout=20)).value
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == b"hello"


def test_down_stops_both_and_redis_data_survives_a_restart(stack: Settings) -> None:
    with connect_redis_sync(stack) as client:
        client.set("services-test", "kept")
    root = services_status(stack).kafka.log_path.parent

    report = services_down(stack, progress=lambda _: None)
    for state in (report.kafka, report.redis):
        assert not state.running and not state.healthy and state.pid is None
    assert not (root / "kafka.pid").exists() and not (root / "redis.pid").exists()
    services_down(stack, progress=lambda _: None)  # idempotent

    services_up(stack, progress=lambda _: None, timeout_s=90)  # back up for any later test
    with connect_redis_sync(stack) as client:
        assert client.get("services-test") == b"kept"


def test_a_taken_port_is_refused_and_nothing_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BSE_SERVICES_DIR", str(tmp_path))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        settings = _settings(_free_port(with_next=True), taken)
        with pytest.raises(ServicesError, match=f"port {taken}"):
            services_up(settings, progress=lambda _: None)
    assert not services_status(settings).kafka.running


def test_a_remote_address_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSE_SERVICES_DIR", str(tmp_path))
    settings = _settings(9092, 6379, host="kafka.example.invalid")
    with pytest.raises(ServicesError, match="not local; start it yourself"):
        services_up(settings, progress=lambda _: None)


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSE_SERVICES_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor anything else
    settings = _settings(_free_port(with_next=True), _free_port())
    with pytest.raises(ServicesError, match="'java' is not on PATH"):
        services_up(settings, progress=lambda _: None)
    assert not services_status(settings).redis.running
