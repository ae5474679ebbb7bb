"""Run the real ``bse-predict alerts`` as a subprocess, as an operator would."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Self

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bse_predict.connections.clients import kafka_options
from configs.settings import Settings
from tests.support.worker_process import CommandProcess

__all__ = ["AlertsProcess"]


class AlertsProcess(CommandProcess):
    """``bse-predict alerts`` with ``env`` and ``args``, consuming in the group ``group_id`` (``settings``'
    alerts group unless given; the topic prefix goes before it). Ready once the broker's group coordinator
    describes the group as stable with a member that was not in it when ``start`` began: the new process
    has joined and been given its share of the partitions."""

    command = "alerts"

    def __init__(self, settings: Settings, env: dict[str, str], log_path: Path, args: tuple[str, ...] = (),
                 group_id: str | None = None) -> None:
        super().__init__(env, log_path, args)
        self._settings = settings
        self._group_id = f"{settings.topic_prefix}{group_id or settings.alerts.group_id}"
        self._members_before: frozenset[str] = frozenset()

    def start(self, timeout_s: float = 60.0) -> Self:
        self._members_before = self._group()[1]
        return super().start(timeout_s)

    def ready(self) -> bool:
        state, members = self._group()
        return state == "Stable" and bool(members - self._members_before)

    def _group(self) -> tuple[str, frozenset[str]]:
        """The group's state and member ids as the coordinator describes them (("", {}) when it cannot)."""
        try:
            return asyncio.run(self._describe())
        except (KafkaError, OSError):
            return "", frozenset()

    async def _describe(self) -> tuple[str, frozenset[str]]:
        admin = AIOKafkaAdminClient(**kafka_options(self._settings), client_id="tests-alerts-ready")
        await admin.start()
        try:
            (description,) = await admin.describe_consumer_groups([self._group_id])
        finally:
            await admin.close()
        (group,) = description.to_object()["groups"]
        return group["state"], frozenset(member["member_id"] for member in group["members"])
