"""Leave the process when the candle agent stops taking work while work waits for it.

The batch guard covers a batch in hand. What it cannot see is a consumer that
stopped delivering: after a broker restart, the chaos suite saw Faust's
consumer rediscover its coordinator, report a 25 s commit, and then deliver
nothing more while the partitions it held filled up. :class:`StallWatch`
asks the broker itself: when no batch has finished for ``stall_s`` and a
partition that the group coordinator has assigned to this process has records
past the group's committed offset, the process exits 75 (``os._exit``, nothing acknowledged) for its
supervisor to restart it; the new process resumes from the committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from bse_predict.connections.consumer_lag import lag_of
from bse_predict.stream.batch_guard import FAULT_EXIT_CODE, leave_now

__all__ = ["StallWatch"]

log = logging.getLogger(__name__)

_ASK_TIMEOUT_S = 10.0


class StallWatch:
    """See the module docstring; :meth:`progressed` after every finished batch, :meth:`check` on a timer.
    ``client_id`` is this process's consumer client id (unique per process), by which the group's
    description names the partitions the broker has assigned to it."""

    def __init__(self, kafka: Mapping[str, Any], group_id: str, client_id: str, topic: str, stall_s: float, *,
                 leave: Callable[[int], None] = leave_now, clock: Callable[[], float] = time.monotonic) -> None:
        self._kafka = kafka
        self._group_id = group_id
        self._client_id = client_id
        self._topic = topic
        self._stall_s = stall_s
        self._leave = leave
        self._clock = clock
        self._last_progress = clock()
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    def progressed(self) -> None:
        self._last_progress = self._clock()

    async def check(self, busy: bool) -> None:
        """Leave when idle for ``stall_s`` with records waiting on partitions the broker says are ours;
        ``busy``: a batch is in hand (the batch guard's deadline covers it)."""
        now = self._clock()
        if busy or now - self._last_progress < self._stall_s:
            return
        try:
            waiting = await asyncio.wait_for(self._waiting_on_ours(), _ASK_TIMEOUT_S)
        except (KafkaError, OSError, asyncio.TimeoutError) as error:  # the broker is away: ask again later
            log.info("stall check skipped: %r", error)
            return
        if not waiting:
            self._last_progress = now  # quiet, not stalled
            return
        log.error("no batch finished for %.0f s while %s wait past the committed offsets: leaving without "
                  "acknowledging anything (exit %d; a restart resumes from the last committed offset)",
                  now - self._last_progress, ", ".join(f"{tp.topic}[{tp.partition}] +{n}" for tp, n in
                                                      sorted(waiting.items())), FAULT_EXIT_CODE)
        self._leave(FAULT_EXIT_CODE)

    async def _waiting_on_ours(self) -> dict[TopicPartition, int]:
        return await self._waiting(await self._assigned_by_broker())

    async def _started(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self._kafka, client_id="bse-predict-stall-watch")
            await admin.start()
            self._admin = admin
        if self._offsets is None:
            offsets = AIOKafkaConsumer(**self._kafka, group_id=None, enable_auto_commit=False,
                                       client_id="bse-predict-stall-watch")
            await offsets.start()
            self._offsets = offsets
        return self._admin, self._offsets

    async def _assigned_by_broker(self) -> set[TopicPartition]:
        """The partitions of ``topic`` that the group coordinator has assigned to this process's consumer
        (what Faust believes it holds may differ: that is the stall)."""
        admin, _ = await self._started()
        (description,) = await admin.describe_consumer_groups([self._group_id])
        assigned: set[TopicPartition] = set()
        for group in description.to_object()["groups"]:
            for member in group["members"]:
                if member["client_id"] == self._client_id and member["member_assignment"]:
                    decoded = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
                    assigned |= {tp for tp in decoded.partitions() if tp.topic == self._topic}
        return assigned

    async def _waiting(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Records past the group's committed offset, per assigned partition that has any."""
        if not assigned:
            return {}
        admin, offsets = await self._started()
        partitions = sorted(assigned)
        committed = await admin.list_consumer_group_offsets(self._group_id, partitions=partitions)
        begin = await offsets.beginning_offsets(partitions)
        end = await offsets.end_offsets(partitions)
        waiting = {}
        for tp in partitions:
            count = lag_of(committed[tp].offset if tp in committed else None, begin[tp], end[tp])
            if count > 0:
                waiting[tp] = count
        return waiting

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
        if self._offsets is not None:
            await self._offsets.stop()
        self._admin = self._offsets = None
