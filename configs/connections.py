"""How the project reaches Kafka and Redis: authentication and encryption of every client, and how
``ensure_topics`` creates the topics."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from configs.base import FrozenBlock

__all__ = ["TopicsConfig", "KafkaSecurityProtocol", "SaslMechanism", "KafkaSecurity", "RedisTls"]

class TopicsConfig(FrozenBlock):
    """How ``ensure_topics`` creates the topics. ``replication_factor`` and ``min_insync_replicas``
    left unset (None) take the cluster's ``default.replication.factor`` and ``min.insync.replicas``."""

    partitions: int = Field(8, gt=0)
    replication_factor: int | None = Field(None, gt=0)
    min_insync_replicas: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _min_isr_within_replicas(self) -> TopicsConfig:
        if (self.replication_factor is not None and self.min_insync_replicas is not None
                and self.min_insync_replicas > self.replication_factor):
            raise ValueError("topics.min_insync_replicas cannot exceed topics.replication_factor")
        return self


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(FrozenBlock):
    """How every Kafka client of the project authenticates and encrypts (docs/security.md). The
    environment names are ``BSE_KAFKA_<FIELD>`` (``BSE_KAFKA_SASL_PASSWORD``); the password and the
    key's passphrase come from the environment only."""

    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates "
                                                       "(none: the system's trusted CAs)")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mTLS")
    ssl_keyfile: Path | None = Field(None, description="the client certificate's private key (PEM)")
    ssl_keyfile_password: SecretStr | None = None
    ssl_check_hostname: bool = Field(True, description="the broker's certificate must name the host dialled")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.uses_sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"kafka.security_protocol {self.security_protocol} needs kafka.sasl_mechanism")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"kafka.security_protocol {self.security_protocol} needs BSE_KAFKA_SASL_USERNAME "
                                 "and BSE_KAFKA_SASL_PASSWORD")
        elif self.sasl_mechanism is not None or self.sasl_username or self.sasl_password is not None:
            raise ValueError(f"SASL settings given but kafka.security_protocol is {self.security_protocol}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("kafka.ssl_certfile and kafka.ssl_keyfile go together (mTLS)")
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.uses_tls and any(f is not None for f in tls_files):
            raise ValueError(f"TLS files given but kafka.security_protocol is {self.security_protocol}")
        return self


class RedisTls(FrozenBlock):
    """TLS of the Redis connection, used with a ``rediss://`` URL (environment ``BSE_REDIS_<FIELD>``).
    The ACL user and password go in the URL: ``rediss://user:password@host:6380/0``."""

    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the server's certificate")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM) when the server asks for one")
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> RedisTls:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("redis.ssl_certfile and redis.ssl_keyfile go together")
        return self

