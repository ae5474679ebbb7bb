"""What a worker's control plane tells the others: every applied or refused message, ramp step and
breaker fallback on ``control.events`` (a JSON :class:`ControlEvent`, keyed by its command), which
the ``control`` command waits for by message id (:mod:`bse_predict.control.sender`).

The one producer here also carries the signed ``control.state`` records of
:class:`~bse_predict.control.state_log.ControlStateLog` (:meth:`ControlReporter.send`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from configs.settings import Settings
from bse_predict.control.state_machine import ControlEvent
from bse_predict.connections.clients import kafka_options

__all__ = ["ControlReporter", "Retrying"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Retrying(Protocol):
    """Runs ``call`` until it returns, retrying transient faults in place (the control plane's
    :func:`~bse_predict.connections.transient.retry_transient`, with its backoff and fault counts)."""

    def __call__(self, what: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


class ControlReporter:
    """This worker's producer for the control plane. It opens on first use and again after :meth:`close`."""

    def __init__(self, settings: Settings, retrying: Retrying) -> None:
        self._settings = settings
        self._retrying = retrying
        self._events_topic = settings.topic("control.events")
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()  # one producer opened at a time; never one left open by close

    async def open(self) -> AIOKafkaProducer:
        """The producer, started now unless it is already."""
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**kafka_options(self._settings), linger_ms=0, acks="all",
                                            client_id="bse-predict-control")
                try:
                    await producer.start()
                except KafkaError:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        """Stop the producer; the next send opens it again."""
        async with self._lock:
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.stop()

    async def send(self, topic: str, value: bytes, key: bytes) -> None:
        """One record, once the broker has acknowledged it (no retry here)."""
        producer = await self.open()
        await producer.send_and_wait(topic, value, key=key)

    async def report(self, events: list[ControlEvent]) -> None:
        """Log each event and put it on ``control.events``, in order; transient faults are retried in place."""
        for event in events:
            (log.info if event.status != "refused" else log.warning)("control %s: %s %s", event.status,
                                                                      event.command, event.reason)
            key = (event.command or "unknown").encode()
            value = event.model_dump_json().encode()
            await self._retrying("reporting on control.events",
                                 lambda value=value, key=key: self.send(self._events_topic, value, key))
