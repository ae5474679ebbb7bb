"""Every connection the project opens to Kafka and Redis, built from the settings in one place.

Each aiokafka producer, consumer and admin client takes :func:`kafka_options`, the Faust apps
:func:`faust_broker_options`, each Redis client :func:`connect_redis` (or :func:`connect_redis_sync`),
so a managed cluster (SASL_SSL with SCRAM, mTLS, a TLS Redis with an ACL user) is configured once,
in ``Settings.kafka`` and ``Settings.redis`` (docs/security.md). Child processes the project starts
get the same settings through :func:`client_environment`.

The Redis client has socket and connect timeouts, health checks and a bounded retry: without a
socket timeout a hung Redis (``DEBUG SLEEP``, a stalled network) blocks the stream forever while the
worker keeps its partitions; with one, a late reply is a fault the batch guard retries. redis-py
resends a command whose connection failed, so every Lua script the worker runs is safe to run twice.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import faust
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from aiokafka.errors import KafkaError
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from configs.settings import FaultConfig, KafkaSecurity, RedisTls, Settings
from bse_predict.errors import BsePredictError

__all__ = [
    "kafka_options",
    "faust_broker_options",
    "kafka_ssl_context",
    "connect_redis",
    "connect_redis_sync",
    "redis_tls_options",
    "redacted_url",
    "client_environment",
    "KafkaUnreachable",
    "explained_kafka_errors",
]

_COMMAND_RETRIES = 2


def kafka_ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context of every Kafka connection (None on PLAINTEXT and SASL_PLAINTEXT): TLS 1.2 or
    newer, the broker's certificate checked against ``ssl_cafile`` (or the system's CAs) and, unless
    turned off, against the host name; the client certificate for mTLS."""
    if not security.uses_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(security.ssl_cafile) if security.ssl_cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = security.ssl_check_hostname
    if security.ssl_certfile is not None and security.ssl_keyfile is not None:
        password = security.ssl_keyfile_password.get_secret_value() if security.ssl_keyfile_password else None
        context.load_cert_chain(str(security.ssl_certfile), str(security.ssl_keyfile), password=password)
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security arguments of an aiokafka producer, consumer or admin client."""
    security = settings.kafka
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                               "security_protocol": security.security_protocol}
    context = kafka_ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.uses_sasl:
        assert security.sasl_password is not None  # KafkaSecurity refuses SASL without one
        options |= {"sasl_mechanism": security.sasl_mechanism, "sasl_plain_username": security.sasl_username,
                    "sasl_plain_password": security.sasl_password.get_secret_value()}
    return options


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """The ``broker`` and ``broker_credentials`` settings of a Faust app (Faust passes the credentials
    to each consumer and producer it makes)."""
    security = settings.kafka
    options: dict[str, Any] = {"broker": f"kafka://{settings.kafka_bootstrap}"}
    context = kafka_ssl_context(security)
    if security.uses_sasl:
        assert security.sasl_password is not None
        options["broker_credentials"] = faust.SASLCredentials(
            username=security.sasl_username, password=security.sasl_password.get_secret_value(),
            ssl_context=context, mechanism=security.sasl_mechanism)
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def redis_tls_options(tls: RedisTls, url: str) -> dict[str, Any]:
    """redis-py's TLS arguments for a ``rediss://`` URL (none for ``redis://``): the server's certificate
    is always checked, against ``ssl_cafile`` when given."""
    if urlsplit(url).scheme != "rediss":
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": tls.ssl_check_hostname,
                               "ssl_min_version": ssl.TLSVersion.TLSv1_2}
    if tls.ssl_cafile is not None:
        options["ssl_ca_certs"] = str(tls.ssl_cafile)
    if tls.ssl_certfile is not None:
        options |= {"ssl_certfile": str(tls.ssl_certfile), "ssl_keyfile": str(tls.ssl_keyfile)}
    return options


def _url(settings: Settings, url: SecretStr | str | None) -> str:
    chosen = settings.redis_url if url is None else url
    return chosen.get_secret_value() if isinstance(chosen, SecretStr) else chosen


def connect_redis(settings: Settings, faults: FaultConfig | None = None, url: SecretStr | str | None = None,
                  **overrides: Any) -> aioredis.Redis:
    """An asyncio client for ``settings.redis_url`` (or ``url``) whose every command fails within about
    ``(retries + 1) × redis_socket_timeout_s`` instead of waiting forever; ``overrides`` replace
    redis-py arguments (a caller's own timeouts)."""
    faults = faults or settings.worker.faults
    address = _url(settings, url)
    options: dict[str, Any] = {
        "socket_timeout": faults.redis_socket_timeout_s,
        "socket_connect_timeout": faults.redis_connect_timeout_s,
        "health_check_interval": faults.redis_health_check_s,
        "retry": Retry(ExponentialBackoff(cap=faults.retry_max_s, base=faults.retry_initial_s), _COMMAND_RETRIES),
        "retry_on_error": [ConnectionError, TimeoutError, BusyLoadingError],
        **redis_tls_options(settings.redis, address),
        **overrides,
    }
    return aioredis.Redis.from_url(address, **options)


def connect_redis_sync(settings: Settings, url: SecretStr | str | None = None, **overrides: Any) -> redis.Redis:
    """A blocking client for ``settings.redis_url`` (or ``url``) with the same TLS arguments."""
    address = _url(settings, url)
    options = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0,
               **redis_tls_options(settings.redis, address), **overrides}
    return redis.Redis.from_url(address, **options)


def redacted_url(url: SecretStr | str) -> str:
    """``url`` fit for a log line: everything between the user name and the last ``@`` replaced by
    ``***`` (also a password with an unencoded ``#``, ``/`` or ``?``, which URL parsers misread)."""
    text = url.get_secret_value() if isinstance(url, SecretStr) else url
    scheme, separator, rest = text.partition("://")
    if not separator or "@" not in rest:
        return text
    userinfo, host = rest.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{colon}***@{host}" if colon else f"{scheme}://***@{host}"


def client_environment(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process (a worker, a replay) this process's connections."""
    env = {"BSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "BSE_REDIS_URL": _url(settings, None)}
    for block in ("kafka", "redis"):
        model = getattr(settings, block)
        for name in type(model).model_fields:
            value = getattr(model, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"BSE_{block}_{name}".upper()] = str(value)
    return env


class KafkaUnreachable(BsePredictError):
    """A short command could not talk to Kafka; the message says why in one line."""


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def reason(self) -> str | None:
        """The broker's own words from the last connection error aiokafka logged (auth, TLS, refused)."""
        for record in reversed(self.records):
            text = record.getMessage()
            if text.startswith("Unable connect to"):
                return text.split(": ", 1)[-1]
        return None


@contextmanager
def explained_kafka_errors(settings: Settings) -> Iterator[None]:
    """Around a short command's Kafka work: aiokafka's log lines are held back, and a failure becomes
    one :class:`KafkaUnreachable` with the broker's reason (aiokafka logs an authentication or
    certificate failure and then raises only "Unable to bootstrap")."""
    logger = logging.getLogger("aiokafka")
    recorder, propagate = _Recorder(), logger.propagate
    logger.addHandler(recorder)
    logger.propagate = False
    try:
        yield
    except KafkaError as error:
        reason = recorder.reason() or f"{type(error).__name__}: {error}"
        raise KafkaUnreachable(f"Kafka at {settings.kafka_bootstrap} ({settings.kafka.security_protocol}): "
                               f"{reason}") from None
    finally:
        logger.removeHandler(recorder)
        logger.propagate = propagate
