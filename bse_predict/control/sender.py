"""The operator's side of the control plane (the ``control`` command): send one signed control
message to the ``control`` topic, and wait for a worker's answer about it on ``control.events``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from configs.settings import Settings
from bse_predict.control.messages import encode_message
from bse_predict.control.state_machine import ControlEvent
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import ensure_topics

__all__ = ["send_control", "send_control_and_wait", "OUTCOME_STATUSES"]

OUTCOME_STATUSES = ("applied", "refused")  # the control.events statuses that answer a message (by its id)
_ASSIGN_TIMEOUT_S = 15.0  # the reader of control.events gets its partitions in well under a second


async def send_control(settings: Settings, fields: dict[str, object]) -> None:
    """Send one signed control message (see :func:`bse_predict.control.messages.build_message`), key = its command."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", client_id="bse-predict-control")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("control"), encode_message(fields), key=str(fields["command"]).encode())
    finally:
        await producer.stop()


async def send_control_and_wait(settings: Settings, fields: dict[str, object], wait_s: float,
                                on_sent: Callable[[], None] | None = None) -> ControlEvent | None:
    """Send one signed control message and wait up to ``wait_s`` for a worker's answer about it on
    ``control.events`` (the first ``applied`` or ``refused`` record carrying its id); None when none came.
    ``on_sent`` is called once the broker has acknowledged the message.

    The reader is placed at the topic's end offsets before the message is sent, so the answer cannot
    be missed, however fast it comes."""
    await ensure_topics(settings)
    topic = settings.topic("control.events")
    # Subscribed without a group: every partition of the topic is this reader's, none committed.
    consumer = AIOKafkaConsumer(topic, **kafka_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="latest", client_id="bse-predict-control")
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ASSIGN_TIMEOUT_S
        while not consumer.assignment():
            if loop.time() > deadline:
                raise KafkaTimeoutError(f"no partitions of {topic} assigned in {_ASSIGN_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)  # fixed now, before the message exists
        await send_control(settings, fields)
        if on_sent is not None:
            on_sent()
        deadline = loop.time() + wait_s
        while (left_s := deadline - loop.time()) > 0:
            batches = await consumer.getmany(timeout_ms=max(1, int(min(left_s, 0.5) * 1000)))
            for records in batches.values():
                for record in records:
                    event = _answer(record.value, str(fields["id"]))
                    if event is not None:
                        return event
        return None
    finally:
        await consumer.stop()


def _answer(raw: bytes | None, message_id: str) -> ControlEvent | None:
    """The ``control.events`` record ``raw`` as the answer about ``message_id``; None when it is not one
    (another message's, a ramp step, a challenger decision, a record this version cannot read)."""
    try:
        fields = json.loads(raw or b"")
    except ValueError:
        return None
    if not isinstance(fields, dict) or fields.get("id") != message_id or fields.get("status") not in OUTCOME_STATUSES:
        return None
    try:  # fields a newer worker added are left out
        return ControlEvent.model_validate({k: v for k, v in fields.items() if k in ControlEvent.model_fields})
    except ValueError:
        return None
