"""The secure stack of ``bse-predict services up --secure``, started for real (the ``secure_stack``
fixture, tests/support/secure_stack.py): the project's own clients (bse_predict/connections/clients.py) work
against it, and what should be refused is refused, quickly and with a clear error."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import subprocess
import uuid
from pathlib import Path

import faust
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pydantic import SecretStr

from bse_predict.services.local_secure import secure_status
from bse_predict.services.local_tls import make_ca
from configs.settings import KafkaSecurity, RedisTls, Settings, load_settings
from tests.support.secure_stack import RunningSecureStack
from bse_predict.connections.clients import (
    client_environment,
    connect_redis,
    connect_redis_sync,
    faust_broker_options,
    kafka_options,
)
from bse_predict.connections.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

_REFUSAL_TIMEOUT_MS = 3000  # a refusal test waits at most this per request


def _kafka(settings: Settings, **changes: object) -> Settings:
    """``settings`` with some fields of its ``kafka`` block changed (validated again)."""
    kafka = KafkaSecurity(**{**settings.kafka.model_dump(), **changes})
    return settings.model_copy(update={"kafka": kafka})


async def _round_trip(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    """Write two records with a producer and read them back with a consumer group, both built
    from ``kafka_options(settings)``."""
    await ensure_topics(settings, extra=(topic,))
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all")
    await producer.start()
    try:
        for key in (b"BTCUSDT", b"ETHUSDT"):
            await producer.send_and_wait(topic, key=key, value=b'{"close": 1.0}', partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **kafka_options(settings), group_id=f"g-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes]] = []
        while len(got) < 2:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10)
            got += [(record.key, record.value) for records in batch.values() for record in records]
        return got
    finally:
        await consumer.stop()


# ----------------------------------------------------------------- the stack


def test_status_reports_both_healthy(secure_stack: RunningSecureStack) -> None:
    report = secure_status(secure_stack.stack)
    for state in (report.kafka, report.redis):
        assert state.running and state.healthy and state.pid is not None, state.detail
    assert "SASL_SSL, SCRAM-SHA-512" in report.kafka.detail
    assert "TLS, ACL user bse" in report.redis.detail


def test_secrets_keys_and_env_file_are_owner_only(secure_stack: RunningSecureStack) -> None:
    stack, certs = secure_stack.stack, secure_stack.certificates
    private = [stack.secrets_path, stack.env_path, certs.ca_key, certs.server_key, certs.server_keystore,
               certs.client_key, stack.home / "kafka" / "server.properties", stack.home / "redis" / "redis.conf"]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700
    passwords = json.loads(stack.secrets_path.read_text())
    redis_conf = (stack.home / "redis" / "redis.conf").read_text()
    assert passwords["redis"]["bse"] not in redis_conf  # stored hashed
    assert "port 0" in redis_conf.splitlines()


def test_env_file_is_sourceable_and_gives_the_same_settings(
    secure_stack: RunningSecureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = sorted(secure_stack.env)
    assert names == sorted([
        "BSE_KAFKA_BOOTSTRAP", "BSE_KAFKA_SECURITY_PROTOCOL", "BSE_KAFKA_SASL_MECHANISM", "BSE_KAFKA_SASL_USERNAME",
        "BSE_KAFKA_SASL_PASSWORD", "BSE_KAFKA_SSL_CAFILE", "BSE_REDIS_URL", "BSE_REDIS_SSL_CAFILE"])
    script = f". {secure_stack.stack.env_path} && " + " && ".join(f'printf "%s\\n" "${name}"' for name in names)
    sourced = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env={})
    assert sourced.stdout.splitlines() == [secure_stack.env[name] for name in names]
    for name, value in secure_stack.env.items():
        monkeypatch.setenv(name, value)
    from_env = load_settings()
    assert from_env.kafka == secure_stack.settings.kafka
    assert from_env.redis == secure_stack.settings.redis
    assert from_env.redis_url == secure_stack.settings.redis_url
    assert secure_stack.env.items() <= client_environment(secure_stack.settings).items()


# -------------------------------------------------------------- what works


async def test_kafka_round_trip_over_sasl_ssl(secure_stack: RunningSecureStack) -> None:
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    got = await asyncio.wait_for(_round_trip(secure_stack.settings, topic), 60)
    assert got == [(b"BTCUSDT", b'{"close": 1.0}'), (b"ETHUSDT", b'{"close": 1.0}')]


async def test_kafka_with_a_client_certificate(secure_stack: RunningSecureStack) -> None:
    """mTLS on top of SCRAM: the broker requests a client certificate and checks the one sent."""
    certs = secure_stack.certificates
    settings = _kafka(secure_stack.settings, ssl_certfile=certs.client_cert, ssl_keyfile=certs.client_key)
    got = await asyncio.wait_for(_round_trip(settings, f"secure-mtls-{uuid.uuid4().hex[:8]}"), 60)
    assert len(got) == 2


async def test_faust_producer_over_sasl_ssl(secure_stack: RunningSecureStack) -> None:
    settings = secure_stack.settings
    topic = f"secure-faust-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, extra=(topic,))
    app = faust.App(f"secure-{uuid.uuid4().hex[:6]}", **faust_broker_options(settings), web_enabled=False)
    await asyncio.wait_for(app.producer.start(), 30)
    try:
        sent = await app.producer.send_and_wait(topic, b"k", b"v", partition=0, timestamp=None, headers=None)
    finally:
        await app.producer.stop()
    assert sent.topic == topic and sent.offset == 0


async def test_redis_acl_user(secure_stack: RunningSecureStack) -> None:
    client = connect_redis(secure_stack.settings)
    key = f"secure:{uuid.uuid4().hex[:8]}"
    try:
        assert await client.execute_command("ACL", "WHOAMI") == b"bse"
        assert await client.set(key, "1", ex=60)
        assert await client.get(key) == b"1"
        assert await client.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, key, 41) == 42
        script = client.register_script("return redis.call('GET', KEYS[1])")  # EVALSHA, SCRIPT LOAD on NOSCRIPT
        assert await script(keys=[key]) == b"42"
        with pytest.raises(redis.exceptions.NoPermissionError, match="config"):
            await client.config_get("maxmemory")  # @admin: not for the application's user
        await client.unlink(key)
    finally:
        await client.aclose()
    sync = connect_redis_sync(secure_stack.settings)
    try:
        assert sync.ping()
    finally:
        sync.close()


# ------------------------------------------------------------ what is refused


async def test_kafka_wrong_password_is_refused(
    secure_stack: RunningSecureStack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _kafka(secure_stack.settings, sasl_password=SecretStr("not-the-password"))
    options = kafka_options(settings)
    options.pop("bootstrap_servers")
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials with SASL mechanism SCRAM-SHA-512"):
        await create_conn(secure_stack.stack.host, secure_stack.stack.kafka_port,
                          request_timeout_ms=_REFUSAL_TIMEOUT_MS, **options)
    # A project client sees it as a failed bootstrap, with the reason in aiokafka's log.
    producer = AIOKafkaProducer(**kafka_options(settings), request_timeout_ms=_REFUSAL_TIMEOUT_MS)
    try:
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            await asyncio.wait_for(producer.start(), 20)
    finally:
        await producer.stop()
    assert "SaslAuthenticationFailed" in caplog.text


async def test_kafka_plaintext_client_is_refused(secure_stack: RunningSecureStack) -> None:
    """A client without TLS (PLAINTEXT, or SASL without TLS) gets its connection closed."""
    stack = secure_stack.stack
    for protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        kafka = KafkaSecurity(security_protocol=protocol) if protocol == "PLAINTEXT" else KafkaSecurity(
            security_protocol=protocol, sasl_mechanism="SCRAM-SHA-512", sasl_username="bse",
            sasl_password=secure_stack.settings.kafka.sasl_password)
        settings = secure_stack.settings.model_copy(update={"kafka": kafka})
        admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=_REFUSAL_TIMEOUT_MS)
        try:
            with pytest.raises(KafkaConnectionError, match=f"Unable to bootstrap from .*{stack.kafka_port}"):
                await asyncio.wait_for(admin.start(), 20)
        finally:
            await admin.close()


async def test_kafka_untrusted_ca_is_refused(secure_stack: RunningSecureStack, tmp_path: Path) -> None:
    """A client that trusts another CA refuses the broker's certificate."""
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(make_ca("some other CA")[0])
    options = kafka_options(_kafka(secure_stack.settings, ssl_cafile=other_ca))
    options.pop("bootstrap_servers")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await create_conn(secure_stack.stack.host, secure_stack.stack.kafka_port,
                          request_timeout_ms=_REFUSAL_TIMEOUT_MS, **options)


def test_redis_without_tls_is_refused(secure_stack: RunningSecureStack) -> None:
    """Even with the right password: the TLS port takes only a TLS handshake (and there is no other)."""
    stack = secure_stack.stack
    passwords = json.loads(stack.secrets_path.read_text())
    plain = f"redis://bse:{passwords['redis']['bse']}@{stack.host}:{stack.redis_port}/0"
    client = connect_redis_sync(secure_stack.settings, plain, socket_timeout=3, socket_connect_timeout=3)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="Connection (closed by server|reset by peer)"):
            client.ping()
    finally:
        client.close()


@pytest.mark.parametrize("credentials", ["bse:not-the-password@", "", "default:x@"])
def test_redis_wrong_or_missing_password_is_refused(secure_stack: RunningSecureStack, credentials: str) -> None:
    stack = secure_stack.stack
    url = f"rediss://{credentials}{stack.host}:{stack.redis_port}/0"
    client = connect_redis_sync(secure_stack.settings, url, socket_timeout=3, socket_connect_timeout=3)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
    finally:
        client.close()


def test_redis_untrusted_ca_is_refused(secure_stack: RunningSecureStack, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(make_ca("some other CA")[0])
    settings = secure_stack.settings.model_copy(update={"redis": RedisTls(ssl_cafile=other_ca)})
    client = connect_redis_sync(settings, socket_timeout=3, socket_connect_timeout=3)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
            client.ping()
    finally:
        client.close()


def _rogue_client_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and key that the stack's CA did not sign."""
    cert_pem, key_pem = make_ca("rogue client")
    cert, key = folder / "rogue.pem", folder / "rogue-key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key


async def test_client_certificate_of_another_ca_is_refused(secure_stack: RunningSecureStack, tmp_path: Path) -> None:
    """Client certificates are optional, but one that is sent must be signed by the stack's CA."""
    cert, key = _rogue_client_certificate(tmp_path)
    options = kafka_options(_kafka(secure_stack.settings, ssl_certfile=cert, ssl_keyfile=key))
    options.pop("bootstrap_servers")
    with pytest.raises(KafkaConnectionError, match="closed"):
        await create_conn(secure_stack.stack.host, secure_stack.stack.kafka_port,
                          request_timeout_ms=_REFUSAL_TIMEOUT_MS, **options)
    tls = RedisTls(ssl_cafile=secure_stack.certificates.ca_cert, ssl_certfile=cert, ssl_keyfile=key)
    client = connect_redis_sync(secure_stack.settings.model_copy(update={"redis": tls}),
                                socket_timeout=3, socket_connect_timeout=3)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
    finally:
        client.close()


async def test_controller_listener_requires_a_client_certificate(secure_stack: RunningSecureStack) -> None:
    """The KRaft controller port takes only holders of a certificate of the stack's CA: without one the
    handshake is refused (a TLS alert, or the connection reset when the alert loses the race with the
    close), with the stack's client certificate the connection stays open."""
    host, port = secure_stack.stack.host, secure_stack.stack.kafka_port + 1
    context = ssl.create_default_context(cafile=str(secure_stack.certificates.ca_cert))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), 10)
    try:
        writer.write(b"\x00\x00\x00\x01\x00")  # TLS 1.3: the refusal arrives with the first exchange
        with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
            await writer.drain()
            await asyncio.wait_for(reader.read(16), 10)
        assert not isinstance(refused.value, ssl.SSLError) or "CERTIFICATE" in str(refused.value)
    finally:
        writer.close()
    context.load_cert_chain(str(secure_stack.certificates.client_cert), str(secure_stack.certificates.client_key))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), 10)
    try:
        with pytest.raises(asyncio.TimeoutError):  # no alert, no reset: the controller waits for a request
            await asyncio.wait_for(reader.read(16), 3)
    finally:
        writer.close()
