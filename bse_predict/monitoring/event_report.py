"""How a monitor reports on ``control.events``: each event sent and acknowledged, then kept and logged."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson

__all__ = ["Sender", "EventReport"]


class Sender(Protocol):
    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one record and wait for the broker's ack."""


class EventReport:
    """One monitor's events: :meth:`report` sends an event (JSON) on ``topic`` under ``key`` and waits
    for the ack, then appends it to ``sent`` and logs ``"{label}: {reason}"`` at ``level`` on ``logger``."""

    def __init__(self, sender: Sender, topic: str, key: bytes, logger: logging.Logger, level: int,
                 label: str) -> None:
        self._sender = sender
        self._topic = topic
        self._key = key
        self._logger = logger
        self._level = level
        self._label = label
        self.sent: list[dict[str, Any]] = []

    async def report(self, event: dict[str, Any]) -> None:
        await self._sender.send(self._topic, self._key, orjson.dumps(event))
        self.sent.append(event)
        self._logger.log(self._level, "%s: %s", self._label, event["reason"])
