"""Fills the :class:`~bse_predict.dashboard.board.Board` from the topics, as any reader can: a consumer
with no group (nothing committed, no other reader disturbed), every partition of the topics, each one
started ``lookback_hours`` back. Messages are validated with the contract's models; one that fails is
counted and skipped, because a dashboard shows what the topics hold and must not stop on it.

:attr:`Feed.caught_up` is set once the partitions of the first assignment were read up to the end offsets
they had when they were started: the start-up fold of the lookback is done."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from configs.settings import Settings
from bse_predict.candles.schema import Candle, Outcome, Prediction
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import TopicNames
from bse_predict.dashboard.board import Board

__all__ = ["Feed"]

log = logging.getLogger(__name__)


class Feed:
    def __init__(self, settings: Settings, board: Board, changed: asyncio.Condition,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        names = TopicNames.of(settings)
        self._settings = settings
        self._board = board
        self._changed = changed
        self._clock_ms = clock_ms
        self._handlers: dict[str, Callable[[bytes], None]] = {
            names.predictions: lambda raw: board.add_prediction(Prediction.model_validate_json(raw)),
            names.predictions_shadow: lambda raw: board.add_shadow_prediction(Prediction.model_validate_json(raw)),
            names.outcomes: lambda raw: board.add_outcome(Outcome.model_validate_json(raw)),
            names.candles: lambda raw: board.add_candle(Candle.model_validate_json(raw)),
            names.control_events: lambda raw: board.add_control_event(_json_object(raw)),
            names.candles_dlq: lambda raw: board.add_dead_letter(_json_object(raw)),
        }
        self.skipped: Counter[str] = Counter()  # messages that failed validation, by topic
        self.caught_up = asyncio.Event()
        self._catching_up: dict[TopicPartition, int] | None = None  # the first assignment's start-up end offsets

    async def run(self) -> None:
        config = self._settings.dashboard
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                    metadata_max_age_ms=5000, **kafka_options(self._settings))
        await consumer.start()
        try:
            consumer.subscribe(topics=list(self._handlers))
            started: set[TopicPartition] = set()
            while True:
                batches = await consumer.getmany(timeout_ms=config.poll_timeout_ms)
                # Records of a partition not started yet were fetched from its earliest offset: dropped.
                changed = [self._apply(record) for tp, records in batches.items() if tp in started
                           for record in records]
                fresh = consumer.assignment() - started
                if fresh:  # a partition new to us: start it lookback_hours back
                    # The ends first: a message written while the times are looked up is then not skipped.
                    ends = await consumer.end_offsets(list(fresh))
                    since_ms = self._clock_ms() - config.lookback_hours * 3_600_000
                    offsets = await consumer.offsets_for_times({tp: since_ms for tp in fresh})
                    for tp in fresh:
                        found = offsets.get(tp)
                        consumer.seek(tp, ends[tp] if found is None else found.offset)
                    if self._catching_up is None:
                        self._catching_up = dict(ends)
                    started |= fresh
                if self._catching_up is not None and not self.caught_up.is_set():
                    await self._check_caught_up(consumer)
                if any(changed):
                    async with self._changed:
                        self._changed.notify_all()
        finally:
            await consumer.stop()

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        """Set :attr:`caught_up` once every partition of the first assignment is read to its start-up end."""
        assert self._catching_up is not None
        for tp, end in list(self._catching_up.items()):
            if await consumer.position(tp) >= end:
                del self._catching_up[tp]
        if not self._catching_up:
            self.caught_up.set()
            log.info("the lookback is read (%d messages skipped by topic: %s)", sum(self.skipped.values()),
                     dict(self.skipped))

    def _apply(self, record: ConsumerRecord) -> bool:
        if record.value is None:
            return False
        try:
            self._handlers[record.topic](record.value)
        except (ValidationError, orjson.JSONDecodeError, TypeError) as exc:
            self.skipped[record.topic] += 1
            log.debug("skipped a message of %s at offset %s: %s", record.topic, record.offset, exc)
            return False
        return True


def _json_object(raw: bytes) -> dict[str, object]:
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        raise TypeError(f"a JSON object was expected, got {type(value).__name__}")
    return value
