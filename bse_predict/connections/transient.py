"""Transient IO faults of Redis and Kafka: which errors count, and retrying a call in place.

A call that fails with one of them is tried again after ``initial_s``, then after
twice that, up to ``max_s`` between tries, for as long as it takes: the work is
never dropped because a server blinked (an exception in a Faust agent would get
its message acknowledged and lost: ../shared/PITFALLS.md). Any other error is
raised at once. One warning when a call starts failing, one info line when it
succeeds again, and every failed try counted by service (``redis``, ``kafka``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis.exceptions
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, KafkaUnavailableError, ProducerClosed

__all__ = ["Backoff", "TRANSIENT_REDIS_ERRORS", "transient_service", "retry_transient"]

T = TypeVar("T")

# ConnectionError also covers BusyLoadingError: a restarted Redis still loading its data.
TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
)
# Not marked retriable by aiokafka, but what a broker that is down or restarting looks like; a closed
# producer is reopened by the caller's next try.
_TRANSIENT_KAFKA_ERRORS = (KafkaTimeoutError, KafkaConnectionError, KafkaUnavailableError, ProducerClosed)


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    max_s: float


def transient_service(error: BaseException) -> str | None:
    """``"redis"`` or ``"kafka"`` when ``error`` is a transient fault of that service, else None."""
    if isinstance(error, TRANSIENT_REDIS_ERRORS):
        return "redis"
    if isinstance(error, KafkaError) and (error.retriable or isinstance(error, _TRANSIENT_KAFKA_ERRORS)):
        return "kafka"
    return None


async def retry_transient(call: Callable[[], Awaitable[T]], what: str, backoff: Backoff, faults: Counter[str],
                          log: logging.Logger) -> T:
    """``await call()`` until it returns, retrying it in place while it fails transiently (see the module)."""
    delay = backoff.initial_s
    failures = 0
    while True:
        try:
            result = await call()
        except (*TRANSIENT_REDIS_ERRORS, KafkaError) as error:
            service = transient_service(error)
            if service is None:
                raise
            faults[service] += 1
            if failures == 0:
                log.warning("%s: %s fault (%s: %s), retrying in place every %.1f s at most", what, service,
                            type(error).__name__, error, backoff.max_s)
            failures += 1
        else:
            if failures:
                log.info("%s: recovered after %d failed %s", what, failures, "try" if failures == 1 else "tries")
            return result
        await asyncio.sleep(delay)
        delay = min(2 * delay, backoff.max_s)
