"""``retrain --schedule``: retrain on the cron schedule and on triggers from ``control.events``.

The scheduler reads ``control.events`` from its end (no consumer group: every
scheduler sees every event, and one that restarts does not act on old ones).
A ``drift`` or a challenger degradation event named in ``retrain.triggers``
(:func:`bse_predict.retrain.schedule.trigger_of`), or the next time of
``retrain.schedule``, starts :func:`bse_predict.retrain.run.retrain_once` if no
retrain started within ``retrain.min_interval_hours`` anywhere in the fleet (the
Redis claim of :class:`~bse_predict.retrain.ledger.RetrainLedger`: of two
schedulers, one runs). A scheduled run inside the interval is reported as
``retrain_skipped``; a trigger inside it is only logged (drift reports one
event per feature). A failed retrain is reported by the run itself; the
scheduler goes on to the next time. A stop (SIGTERM) during a retrain takes effect once
it ends: cancelling it would not stop the training thread, which could then publish a
version that nothing shadows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaTimeoutError

from configs.settings import Settings
from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.connections.topics import ensure_topics
from bse_predict.monitoring.event_report import EventReport
from bse_predict.retrain.errors import RetrainError
from bse_predict.retrain.ledger import RetrainLedger
from bse_predict.retrain.publisher import EventProducer
from bse_predict.retrain.report import retrain_event
from bse_predict.retrain.run import check_retrain_settings, retrain_once
from bse_predict.retrain.schedule import next_run_at, trigger_of

__all__ = ["run_scheduler"]

log = logging.getLogger(__name__)

_ASSIGN_TIMEOUT_S = 15.0
_POLL_S = 1.0


def _triggers_in(records: list, triggers: tuple[str, ...]) -> list[str]:
    found = []
    for record in records:
        try:
            event = json.loads(record.value or b"")
        except ValueError:
            continue
        if isinstance(event, dict) and (reason := trigger_of(event, triggers)) is not None:
            found.append(reason)
    return found


async def _reader(settings: Settings) -> AIOKafkaConsumer:
    """A reader of ``control.events`` placed at its end."""
    topic = settings.topic("control.events")
    consumer = AIOKafkaConsumer(topic, **kafka_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="latest", client_id="bse-predict-retrain")
    await consumer.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _ASSIGN_TIMEOUT_S
    while not consumer.assignment():
        if loop.time() > deadline:
            await consumer.stop()
            raise KafkaTimeoutError(f"no partitions of {topic} assigned in {_ASSIGN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)
    partitions = sorted(consumer.assignment())
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)
    return consumer


async def run_scheduler(settings: Settings, stop: asyncio.Event, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                        progress: Callable[[str], None] = lambda _: None, show_progress: bool = False) -> int:
    """Run until ``stop`` is set; returns how many retrains it started."""
    check_retrain_settings(settings)
    config = settings.retrain
    await ensure_topics(settings)
    consumer = await _reader(settings)
    client = connect_redis(settings)
    ledger = RetrainLedger(client, settings.topic_prefix, config.min_interval_hours)
    started = 0
    try:
        async with EventProducer(settings) as producer:
            report = EventReport(producer, settings.topic("control.events"), b"retrain", log, logging.INFO, "retrain")
            next_at = next_run_at(config.schedule, clock())
            note = (f"retrain scheduler: next scheduled run {next_at.isoformat() if next_at else 'none'} "
                    f"(schedule {config.schedule!r}), triggers {', '.join(config.triggers) or 'none'}, "
                    f"at most one retrain per {config.min_interval_hours:g} h")
            progress(note)
            await report.report(retrain_event("retrain_scheduler_started", note, clock(), "", None))
            while not stop.is_set():
                wait_s = _POLL_S if next_at is None else max(0.0, min(_POLL_S, (next_at - clock()).total_seconds()))
                batches = await consumer.getmany(timeout_ms=max(1, int(wait_s * 1000)))
                reasons = _triggers_in([r for records in batches.values() for r in records], config.triggers)
                now = clock()
                scheduled = next_at is not None and now >= next_at
                if scheduled:
                    reasons.append(f"on schedule ({config.schedule})")
                    next_at = next_run_at(config.schedule, now)
                if not reasons:
                    continue
                if not await ledger.claim(now):
                    last = await ledger.last_started()
                    note = (f"{reasons[-1] if scheduled else reasons[0]}: skipped, a retrain started at {last}, "
                            f"within retrain.min_interval_hours ({config.min_interval_hours:g})")
                    progress(note)
                    await report.report(retrain_event("retrain_skipped", note, now, "", None))
                    continue
                started += 1
                try:
                    result = await retrain_once(settings, trigger=reasons[0], clock=clock, progress=progress,
                                                show_progress=show_progress)
                    progress(f"retrain {result.version} shadowed")
                except RetrainError as error:  # reported on control.events by the run
                    progress(f"retrain failed: {error}")
                if next_at is not None:
                    progress(f"next scheduled run {next_at.isoformat()}")
    finally:
        await consumer.stop()
        await client.aclose()
    return started
