"""The ``control.state`` topic: a signed copy of every stored control state, to restore it from when
Redis has lost it.

The worker that stores a change publishes the whole new state (routing, rollback
stack, ramp and the message ids still inside the freshness window) as one
record ``{"sequence", "state", "written_by", "at", "signature"}``, signed like a
control message (HMAC-SHA256 with ``BSE_CONTROL_SECRET`` over the record without
``signature``, canonical JSON) so that nobody without the secret can plant a
state to be restored; without a secret nothing is published or restored. A
reader accepts a record signed with any of the worker's keys (``BSE_CONTROL_KEYS``
too), so a key rotation does not orphan the states written before it.

Records are keyed by their writer (one key per worker process) on a compacted
topic with one partition: Kafka keeps at least each key's last record. A writer
never publishes a lower sequence after a higher one, so the newest state (the
highest sequence, which its writer published last) survives compaction. Readers
take the highest sequence, never the last record: writers publish concurrently,
so the log's order is not the order of the states, and a record sent again later
is still an old state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from configs.settings import Settings
from bse_predict.control.state_machine import ControlState
from bse_predict.control.messages import ControlRefused, decode_json_object, format_issued_at
from bse_predict.integrity.signing import sign_fields, signature_matches
from bse_predict.connections.clients import kafka_options

__all__ = ["ControlStateLog", "STATE_TOPIC", "encode_state_record", "decode_state_record"]

log = logging.getLogger(__name__)

STATE_TOPIC = "control.state"
_MAX_RECORD_BYTES = 8 * 1024 * 1024  # a state is a few KB; its seen ids grow only with signed messages
_READ_TIMEOUT_S = 30.0  # reading the log to its end takes longer than this only when the broker is down

Send = Callable[[str, bytes, bytes], Awaitable[None]]


def encode_state_record(state: ControlState, secret: str, written_by: str, now: datetime) -> bytes:
    """The signed ``control.state`` record of ``state``."""
    fields: dict[str, object] = {"sequence": state.sequence, "state": json.loads(state.model_dump_json()),
                                 "written_by": written_by, "at": format_issued_at(now)}
    fields["signature"] = sign_fields(fields, secret)
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def decode_state_record(raw: bytes | None, secret: str | Sequence[str]) -> ControlState:
    """The state of one ``control.state`` record; :class:`ControlRefused` when it is not one or its
    signature matches none of ``secret`` (one secret, or every key accepted during a key rotation:
    records written before the rotation stay readable)."""
    fields = decode_json_object(raw, _MAX_RECORD_BYTES)
    secrets = (secret,) if isinstance(secret, str) else tuple(secret)
    if not any([signature_matches(fields, s) for s in secrets]):  # every key tried: the time says not which
        raise ControlRefused("bad_signature", "the HMAC-SHA256 signature does not match")
    try:
        state = ControlState.model_validate(fields.get("state"))
    except ValidationError as exc:
        raise ControlRefused("malformed", f"not a control state: {str(exc)[:200]}") from exc
    if fields.get("sequence") != state.sequence:
        raise ControlRefused("malformed", "the record's sequence is not its state's")
    return state


class ControlStateLog:
    """This process's reader and writer of ``control.state``. The reader opens on first use and
    after :meth:`close`; records are sent through the caller's producer (``send``)."""

    def __init__(self, settings: Settings, secret: str | None, accepted: Sequence[str] = ()) -> None:
        self.topic = settings.topic(STATE_TOPIC)
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._kafka = kafka_options(settings)
        self._secret = secret  # signs what this writer publishes
        self._accepted = (secret, *(a for a in accepted if a != secret)) if secret is not None else ()  # verify
        self._partition = TopicPartition(self.topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._newest: ControlState | None = None
        self._published = -1  # the highest sequence this writer has published
        self._read_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()

    async def publish(self, state: ControlState, send: Send, now: datetime) -> bool:
        """Publish ``state`` unless this writer already published it or a newer one (False then, and
        without a secret)."""
        if self._secret is None:
            return False
        async with self._publish_lock:
            if state.sequence <= self._published:
                return False
            await send(self.topic, encode_state_record(state, self._secret, self.writer, now), self.writer.encode())
            self._published = state.sequence
            return True

    async def newest(self) -> ControlState | None:
        """The valid state with the highest sequence in the log (None without a secret or record),
        reading what was added since the last call (the whole log the first time)."""
        if self._secret is None:
            return None
        async with self._read_lock:
            consumer = await self._reader()
            end = (await consumer.end_offsets([self._partition]))[self._partition]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _READ_TIMEOUT_S
            while await consumer.position(self._partition) < end:
                if loop.time() > deadline:
                    raise KafkaTimeoutError(f"{self.topic} not read to offset {end} in {_READ_TIMEOUT_S:.0f} s")
                batch = await consumer.getmany(self._partition, timeout_ms=500)
                for record in batch.get(self._partition, []):
                    self._take(record, self._accepted)
            return self._newest

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _reader(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self._kafka, group_id=None, enable_auto_commit=False,
                                        auto_offset_reset="earliest", client_id="bse-predict-control-state")
            try:
                await consumer.start()
                consumer.assign([self._partition])
                await consumer.seek_to_beginning(self._partition)
            except KafkaError:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    def _take(self, record: ConsumerRecord, secret: Sequence[str]) -> None:
        try:
            state = decode_state_record(record.value, secret)
        except ControlRefused as refusal:
            log.warning("%s offset %d skipped: %s", self.topic, record.offset, refusal)
            return
        if self._newest is None or state.sequence > self._newest.sequence:
            self._newest = state
