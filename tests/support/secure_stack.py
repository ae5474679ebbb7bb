"""The ``secure_stack`` fixture: a private secure stack (Kafka SASL_SSL with SCRAM-SHA-512, Redis TLS
with an ACL user) for the whole test session, started with the code of ``bse-predict services up
--secure`` (:mod:`bse_predict.services.local_secure`) in a temporary folder, on its own ports (Kafka 29094 and
its controller 29095, Redis 26380, or free ports drawn below the ephemeral range when those are
taken), and stopped at the end.

Use it in a test under tests/integration (its conftest imports it)::

    def test_something(secure_stack: RunningSecureStack) -> None:
        settings = secure_stack.settings            # a Settings pointed at the stack
        options = kafka_options(settings)          # bse_predict.connections.clients, as the project's clients do
        secure_stack.env                           # the BSE_* variables of `services up --secure`
        secure_stack.certificates.client_cert      # a client certificate of the stack's CA (mTLS)
"""

from __future__ import annotations

import random
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bse_predict.services.local_secure import SecureStack, secure_down, secure_environment, secure_settings, secure_up
from bse_predict.services.local_tls import StackCertificates
from configs.settings import Settings

__all__ = ["RunningSecureStack", "secure_stack", "start_secure_stack"]

KAFKA_PORT = 29094  # its controller: 29095
REDIS_PORT = 26380
_START_TIMEOUT_S = 120


@dataclass(frozen=True)
class RunningSecureStack:
    """A started secure stack: where it is, the settings and environment of its client."""

    stack: SecureStack
    settings: Settings
    env: dict[str, str]

    @property
    def certificates(self) -> StackCertificates:
        return self.stack.certificates


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSecureStack]:
    """A secure stack for the session; fails (never skips) when it cannot start, with the reason."""
    # A short path: the folder names go into the broker's and Redis's configuration and logs.
    home = Path(tempfile.mkdtemp(prefix="bse-secure-", dir=tmp_path_factory.getbasetemp()))
    yield from start_secure_stack(home)


def start_secure_stack(home: Path) -> Iterator[RunningSecureStack]:
    """Start a stack in ``home``, yield it, stop it: the body of the fixture, for other scopes."""
    kafka_port = KAFKA_PORT if _free(KAFKA_PORT, KAFKA_PORT + 1) else _free_port(pair=True)
    redis_port = REDIS_PORT if _free(REDIS_PORT) else _free_port(pair=False, avoid=(kafka_port, kafka_port + 1))
    stack = SecureStack(home=home, kafka_port=kafka_port, redis_port=redis_port)
    try:
        secure_up(stack, progress=lambda _: None, timeout_s=_START_TIMEOUT_S)
        yield RunningSecureStack(stack=stack, settings=secure_settings(stack), env=secure_environment(stack))
    finally:
        secure_down(stack, progress=lambda _: None)


def _free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_port(*, pair: bool, avoid: tuple[int, ...] = ()) -> int:
    """A port free now (and the next one too, with ``pair``), drawn below Linux's ephemeral range
    (32768-60999), where an outgoing connection cannot take it before the server binds it."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        wanted = (port, port + 1) if pair else (port,)
        if not set(avoid) & set(wanted) and _free(*wanted):
            return port
