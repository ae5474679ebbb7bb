"""The secure local stack of ``bse-predict services up --secure``: Kafka on SASL_SSL
(SCRAM-SHA-512) and Redis on TLS with an ACL user, beside the plain stack.

Both run from the same jars and ``redis-server`` as the plain stack, in their own
folder, ``<services dir>/secure/`` (``var/services/secure``), on their own
ports: Kafka's SASL_SSL listener on 9098 and its KRaft controller on 9099 (not
9094-9097: those are the three-broker cluster's), Redis TLS on 6380. So the
plain single node, the cluster and this stack can all run at once.

- TLS: a self-signed CA made on the first ``up`` and kept
  (:mod:`bse_predict.services.local_tls`), a server certificate for ``localhost`` and
  ``127.0.0.1`` used by the broker and by Redis, a client certificate for mTLS.
- Kafka: the one listener for clients and for the broker's own traffic is
  SASL_SSL with SCRAM-SHA-512 (client certificates requested, not required);
  the controller listener is SSL with client certificates required, so only a
  holder of a certificate of this CA (the broker itself) reaches it. The SCRAM
  users, the client user ``bse`` and the broker's own ``bse-broker``, are created
  when the storage is formatted (``kafka-storage format --add-scram``). PEM key
  and trust stores: no keytool. No authorizer: an authenticated user may do
  anything.
- Redis: no plaintext port (``port 0``), TLS on its ``tls-port``, client
  certificates optional (checked against the CA when sent), the ``default`` user
  off and one ACL user, ``bse``: all keys, all channels, every command but the
  ``@admin`` ones (CONFIG, DEBUG, ACL, SHUTDOWN, MONITOR...). The password is
  stored hashed in ``redis.conf``.
- Passwords are random per stack, kept in ``secrets.json`` (mode 0600); the
  client's settings in ``client.env`` (mode 0600, sourceable). Keys, the
  configuration files and the folder itself are owner-only too.

Tests start a stack of their own with :func:`secure_up` on private ports in a
temporary folder (``tests/support/secure_stack.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

from bse_predict.services.local_kafka import prepare_node, probe_kafka
from bse_predict.services.local_redis import probe_redis, redis_server_program
from bse_predict.services.local_service import (
    LocalService,
    Progress,
    ServicesError,
    bind_ip,
    host_port,
    service_state,
    services_dir,
    start_services,
    stop_services,
)
from bse_predict.services.local_tls import (
    StackCertificates,
    certificate_paths,
    ensure_certificates,
    write_private,
)
from bse_predict.services.stack import ServicesReport
from configs.settings import Settings, load_settings

__all__ = [
    "CLIENT_USER",
    "SECURE_KAFKA_PORT",
    "SECURE_REDIS_PORT",
    "SecureStack",
    "secure_down",
    "secure_environment",
    "secure_settings",
    "secure_stack",
    "secure_status",
    "secure_up",
]

SECURE_KAFKA_PORT = 9098  # its controller: + 1
SECURE_REDIS_PORT = 6380
CLIENT_USER = "bse"
SASL_MECHANISM = "SCRAM-SHA-512"

_BROKER_USER = "bse-broker"
_HEAP = "512m"
# Every command the project and its tests use (strings, hashes, sorted sets, EVAL/EVALSHA/SCRIPT,
# WATCH/MULTI, SCAN, UNLINK, INFO, pub/sub) and none that reconfigures or stops the server.
_REDIS_PERMISSIONS = "~* &* +@all -@admin"


@dataclass(frozen=True)
class SecureStack:
    """Where one secure stack lives and listens. Build it with :func:`secure_stack`."""

    home: Path
    host: str = "localhost"
    kafka_port: int = SECURE_KAFKA_PORT  # the SASL_SSL listener; the controller takes the next port
    redis_port: int = SECURE_REDIS_PORT

    @property
    def bootstrap(self) -> str:
        return host_port(self.host, self.kafka_port)

    @property
    def certificates(self) -> StackCertificates:
        """Where the stack's PEM files are (:func:`secure_up` makes them)."""
        return certificate_paths(self.home / "tls")

    @property
    def secrets_path(self) -> Path:
        return self.home / "secrets.json"

    @property
    def env_path(self) -> Path:
        return self.home / "client.env"

    def services(self) -> list[LocalService]:
        """The stack's broker and Redis server."""
        return [_kafka_service(self), _redis_service(self)]


def secure_stack(home: Path | None = None, *, kafka_port: int | None = None, redis_port: int | None = None,
                 host: str = "localhost") -> SecureStack:
    """The stack in ``home`` (default ``<services dir>/secure``). A port not given is the one its last
    ``up`` recorded there, else the default (9098, 6380)."""
    home = (home or services_dir() / "secure").absolute()
    recorded = _recorded_ports(home)
    return SecureStack(home=home, host=host,
                       kafka_port=kafka_port or recorded.get("kafka", SECURE_KAFKA_PORT),
                       redis_port=redis_port or recorded.get("redis", SECURE_REDIS_PORT))


def secure_up(stack: SecureStack, *, progress: Progress = print, timeout_s: float = 120) -> ServicesReport:
    """Make the CA, certificates and passwords when missing, start what does not answer yet, wait until
    both answer, then write ``client.env``. Returns the report; :func:`secure_environment` gives the
    client's settings."""
    ports = (stack.kafka_port, stack.kafka_port + 1, stack.redis_port)
    if len(set(ports)) != len(ports):
        raise ServicesError(f"the secure Kafka (and its controller, {stack.kafka_port + 1}) and Redis "
                            f"need distinct ports, got {stack.kafka_port} and {stack.redis_port}")
    stack.home.mkdir(parents=True, exist_ok=True)
    os.chmod(stack.home, 0o700)
    ensure_certificates(stack.home / "tls")
    _ensure_secrets(stack)
    (stack.home / "ports.json").write_text(
        json.dumps({"kafka": stack.kafka_port, "redis": stack.redis_port}) + "\n", encoding="utf-8")
    start_services(stack.services(), progress=progress, timeout_s=timeout_s)
    write_private(stack.env_path, "".join(f"export {name}={shlex.quote(value)}\n"
                                          for name, value in secure_environment(stack).items()))
    return secure_status(stack)


def secure_down(stack: SecureStack, *, progress: Progress = print) -> ServicesReport:
    """Stop the stack's processes that bse-predict started; data, certificates and passwords stay."""
    stop_services(stack.services(), progress)
    return secure_status(stack)


def secure_status(stack: SecureStack) -> ServicesReport:
    """Report the stack's broker and Redis without starting or stopping anything."""
    kafka, redis_state = (service_state(service) for service in stack.services())
    return ServicesReport(kafka=kafka, redis=redis_state, kafka_brokers=(kafka,))


def secure_environment(stack: SecureStack) -> dict[str, str]:
    """The settings a client of the stack needs, as the contract's environment variables."""
    passwords = _read_secrets(stack)
    if passwords is None:
        raise ServicesError(f"no secure stack in {stack.home}; run `bse-predict services up --secure`")
    ca = str(stack.certificates.ca_cert)
    redis_password = passwords["redis"][CLIENT_USER]
    return {
        "BSE_KAFKA_BOOTSTRAP": stack.bootstrap,
        "BSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BSE_KAFKA_SASL_MECHANISM": SASL_MECHANISM,
        "BSE_KAFKA_SASL_USERNAME": CLIENT_USER,
        "BSE_KAFKA_SASL_PASSWORD": passwords["kafka"][CLIENT_USER],
        "BSE_KAFKA_SSL_CAFILE": ca,
        "BSE_REDIS_URL": f"rediss://{CLIENT_USER}:{redis_password}@{host_port(stack.host, stack.redis_port)}/0",
        "BSE_REDIS_SSL_CAFILE": ca,
    }


def secure_settings(stack: SecureStack, config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings for the stack: ``config_file`` and ``overrides`` as for :func:`load_settings`, with the
    stack's connection settings over them. Built with every ``BSE_KAFKA_*`` and ``BSE_REDIS_*``
    variable of this process set aside, so a shell pointed at another stack does not leak in."""
    env = secure_environment(stack)
    connection = {
        "kafka_bootstrap": env["BSE_KAFKA_BOOTSTRAP"],
        "redis_url": env["BSE_REDIS_URL"],
        "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": SASL_MECHANISM, "sasl_username": CLIENT_USER,
                  "sasl_password": env["BSE_KAFKA_SASL_PASSWORD"], "ssl_cafile": env["BSE_KAFKA_SSL_CAFILE"]},
        "redis": {"ssl_cafile": env["BSE_REDIS_SSL_CAFILE"]},
    }
    with _without_connection_environment():
        return load_settings(config_file, **{**overrides, **connection})


# ------------------------------------------------------------------- Kafka


def _kafka_service(stack: SecureStack) -> LocalService:
    home = stack.home / "kafka"
    port = stack.kafka_port

    def prepare(progress: Progress) -> list[str]:
        passwords = _read_secrets(stack)
        assert passwords is not None  # secure_up made them before starting anything
        return prepare_node(home, stack.host, 1, {1: port}, heap=_HEAP, cluster_id=None, progress=progress,
                            overrides=_kafka_properties(stack, passwords), scram_users=passwords["kafka"])

    return LocalService(
        name="kafka-secure",
        host=stack.host,
        port=port,
        extra_ports=(port + 1,),  # the KRaft controller listener (SSL, client certificates required)
        home=home,
        log_path=stack.home / "kafka.log",
        pid_path=stack.home / "kafka.pid",
        cmdline_marker=str(home / "server.properties"),
        probe=lambda: _probe_kafka(stack),
        prepare=prepare,
    )


def _kafka_properties(stack: SecureStack, passwords: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """What the secure node changes in, and adds to, the plain node's server.properties."""
    certs = stack.certificates
    broker, controller = host_port(stack.host, stack.kafka_port), host_port(stack.host, stack.kafka_port + 1)
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{_BROKER_USER}" password="{passwords["kafka"][_BROKER_USER]}";')
    return {
        "listeners": f"SASL_SSL://{broker},CONTROLLER://{controller}",
        "advertised.listeners": f"SASL_SSL://{broker}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
        f"listener.name.sasl_ssl.{SASL_MECHANISM.lower()}.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.ssl.client.auth": "requested",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca_cert),
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "ssl.endpoint.identification.algorithm": "https",
    }


def _probe_kafka(stack: SecureStack) -> str | None:
    passwords = _read_secrets(stack)
    ca = stack.certificates.ca_cert
    if passwords is None or not ca.is_file():
        return None
    answer = probe_kafka(stack.bootstrap, security_protocol="SASL_SSL", sasl_mechanism=SASL_MECHANISM,
                         sasl_plain_username=CLIENT_USER, sasl_plain_password=passwords["kafka"][CLIENT_USER],
                         ssl_context=create_ssl_context(cafile=str(ca)))
    return None if answer is None else f"{answer} (SASL_SSL, {SASL_MECHANISM})"


# ------------------------------------------------------------------- Redis


def _redis_service(stack: SecureStack) -> LocalService:
    home = stack.home / "redis"
    return LocalService(
        name="redis-secure",
        host=stack.host,
        port=stack.redis_port,
        extra_ports=(),
        home=home,
        log_path=stack.home / "redis.log",
        pid_path=stack.home / "redis.pid",
        cmdline_marker="redis-server",
        probe=lambda: _probe_redis(stack),
        prepare=lambda progress: _redis_command(stack, progress),
    )


def _redis_command(stack: SecureStack, progress: Progress) -> list[str]:
    passwords = _read_secrets(stack)
    assert passwords is not None
    certs = stack.certificates
    home = stack.home / "redis"
    home.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(passwords["redis"][CLIENT_USER].encode()).hexdigest()
    config = home / "redis.conf"
    write_private(config, "\n".join([
        "port 0",  # no plaintext listener
        f"tls-port {stack.redis_port}",
        f"bind {bind_ip(stack.host)}",
        f'tls-cert-file "{certs.server_cert}"',
        f'tls-key-file "{certs.server_key}"',
        f'tls-ca-cert-file "{certs.ca_cert}"',
        "tls-auth-clients optional",
        'tls-protocols "TLSv1.2 TLSv1.3"',
        f'dir "{home}"',
        "daemonize no",
        'save ""',
        "appendonly yes",
        f'logfile "{stack.home / "redis.log"}"',
        "user default off resetpass resetkeys resetchannels -@all",
        f"user {CLIENT_USER} on #{digest} {_REDIS_PERMISSIONS}",
        "",
    ]))
    return [redis_server_program(progress), str(config)]


def _probe_redis(stack: SecureStack) -> str | None:
    passwords = _read_secrets(stack)
    ca = stack.certificates.ca_cert
    if passwords is None or not ca.is_file():
        return None
    answer = probe_redis(stack.host, stack.redis_port, username=CLIENT_USER, password=passwords["redis"][CLIENT_USER],
                         ssl=True, ssl_ca_certs=str(ca), ssl_cert_reqs="required")
    return None if answer is None else f"{answer} (TLS, ACL user {CLIENT_USER})"


# ------------------------------------------------------------------ secrets


def _ensure_secrets(stack: SecureStack) -> None:
    """Random passwords on the first ``up``; refused when the Kafka storage exists without them (its
    SCRAM users were made with the lost ones)."""
    if _read_secrets(stack) is not None:
        return
    if (stack.home / "kafka" / "data" / "meta.properties").exists():
        raise ServicesError(f"{stack.secrets_path} is missing but the Kafka storage in {stack.home / 'kafka'} "
                            f"was formatted with its passwords; remove {stack.home} to start afresh")
    passwords = {"kafka": {CLIENT_USER: secrets.token_hex(24), _BROKER_USER: secrets.token_hex(24)},
                 "redis": {CLIENT_USER: secrets.token_hex(24)}}
    write_private(stack.secrets_path, json.dumps(passwords, indent=2) + "\n")


def _read_secrets(stack: SecureStack) -> dict[str, dict[str, str]] | None:
    try:
        return json.loads(stack.secrets_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _recorded_ports(home: Path) -> dict[str, int]:
    try:
        recorded = json.loads((home / "ports.json").read_text(encoding="utf-8"))
        return {name: int(recorded[name]) for name in ("kafka", "redis") if name in recorded}
    except (OSError, ValueError, TypeError):
        return {}


@contextlib.contextmanager
def _without_connection_environment() -> Iterator[None]:
    names = [name for name in os.environ if name.startswith(("BSE_KAFKA_", "BSE_REDIS_"))]
    saved = {name: os.environ.pop(name) for name in names}
    try:
        yield
    finally:
        os.environ.update(saved)
