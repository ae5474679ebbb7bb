"""``control.events`` as a test reads it, and ``bse-predict retrain --schedule`` as a subprocess that is
ready once it reported ``retrain_scheduler_started`` there (its reader of control.events is placed by then)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from configs.settings import Settings
from tests.support.kafka_io import read_topic
from tests.support.worker_process import CommandProcess

__all__ = ["SchedulerProcess", "control_events", "wait_for_event", "wait_for_status"]

Event = dict[str, Any]


def control_events(settings: Settings) -> list[Event]:
    """Every record of ``control.events`` so far, oldest first."""
    records = asyncio.run(read_topic(settings.kafka_bootstrap, settings.topic("control.events"), idle_ms=700))
    return [json.loads(r.value) for r in records]


def wait_for_event(settings: Settings, what: str, match: Callable[[Event], bool], timeout_s: float,
                   log: Callable[[], str] = lambda: "") -> Event:
    """The first ``control.events`` record that ``match`` accepts, polled for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = control_events(settings)
        found = next((e for e in events if match(e)), None)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            statuses = [(e.get("status"), e.get("verdict"), e.get("reason", "")[:120]) for e in events[-15:]]
            raise AssertionError(f"{what}: not on control.events after {timeout_s} s; the last events: {statuses}\n"
                                 f"{log()}")
        time.sleep(1)


def wait_for_status(settings: Settings, status: str, count: int, timeout_s: float) -> list[Event]:
    """The first ``count`` records of ``status``, once there are that many (polled for up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in control_events(settings) if e.get("status") == status]
        if len(found) >= count:
            return found
        time.sleep(1)
    raise AssertionError(f"{count} {status} events not seen in {timeout_s} s")


class SchedulerProcess(CommandProcess):
    """``retrain --schedule``, ready once it reported ``retrain_scheduler_started``."""

    command = "retrain"

    def __init__(self, settings: Settings, env: dict[str, str], log_path: Path, args: tuple[str, ...]) -> None:
        super().__init__(env, log_path, args)
        self._settings = settings
        self._seen = len(self._started())

    def _started(self) -> list[Event]:
        return [e for e in control_events(self._settings) if e.get("status") == "retrain_scheduler_started"]

    def ready(self) -> bool:
        return len(self._started()) > self._seen
