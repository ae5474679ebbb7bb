"""The Faust application of the worker: its topics, agents and timers, nothing else.

``create_app`` declares them over the parts that
:class:`~bse_predict.stream.worker_parts.WorkerParts` built from the settings (the
composition root); nothing exists at import time. The candle agent runs with
concurrency 1 and takes events in batches (``take_events``). Faust acknowledges a batch when the loop body ends, however
it ends, so the body ends only when the batch is finished: its predictions,
dead letters and outcomes acknowledged by the broker and its Redis writes done.
:class:`bse_predict.stream.batch_guard.BatchGuard` retries a failing batch in place and,
past its deadline, leaves the process without acknowledging it; a crash at any
point replays the batch, never skips it (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from functools import partial
from pathlib import Path

import faust

from bse_predict.connections.clients import faust_broker_options
from bse_predict.connections.topics import TopicNames, worker_group_id
from bse_predict.heap import freeze_long_lived
from bse_predict.stream.processor import RawMessage
from bse_predict.stream.worker_parts import WorkerParts
from configs.settings import Settings

__all__ = ["create_app", "faust_settings"]

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 10.0
STALL_CHECK_S = 5.0


def faust_settings(settings: Settings, app_id: str) -> dict[str, object]:
    """Faust settings tuned for latency on a small machine (see docs/performance.md)."""
    group_id = worker_group_id(settings, app_id)
    datadir = Path("var") / "faust" / group_id
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return {
        "id": group_id,
        # unique per process: the stall watch finds this consumer's partitions in the group by it
        "broker_client_id": f"{app_id}-{socket.gethostname()}-{os.getpid()}",
        **faust_broker_options(settings),
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": settings.topics.partitions,
        # ensure_topics creates every topic first (with the cluster's replication); Faust declares nothing new
        "topic_replication_factor": settings.topics.replication_factor or 1,
        "topic_disable_leader": True,
        "producer_linger_ms": 0,
        "broker_max_poll_records": settings.worker.batch_max_events,
        "stream_buffer_maxsize": max(4 * settings.worker.batch_max_events, 1024),
        "broker_commit_interval": 1.0,
        "broker_session_timeout": settings.worker.session_timeout_s,
        "broker_heartbeat_interval": settings.worker.session_timeout_s / 5,
        "consumer_auto_offset_reset": "earliest",
        "datadir": str(datadir),
    }


async def _serve_candles(stream: faust.StreamT, settings: Settings, parts: WorkerParts, topic: str) -> None:
    """The candle agent's loop: batches of events through the guarded processor, the control state followed
    beside it."""
    agent = parts.candle_agent()
    control = parts.control
    await agent.guard.run(agent.start)
    parts.stall.progressed()
    collected, frozen = freeze_long_lived()  # full collections stalled the loop for 66-96 ms (bse_predict.heap)
    log.info("started: %d objects frozen out of the collector's way (%d collected first)", frozen, collected)
    following = asyncio.create_task(control.follow(), name="follow-control")
    live = parts.router.table.live
    log.info("serving %s %s (control revision %d) for %s", live.model_name, live.version,
             parts.router.table.revision, topic)
    parts.live_outcomes.serving(lambda: parts.router.table.revision)
    try:
        async for events in stream.take_events(settings.worker.batch_max_events,
                                               within=settings.worker.batch_within_ms / 1000.0):
            if following.done():  # a bug ended it (faults are retried inside): say so and follow again
                log.error("following the control state stopped: %r; following again", following.exception())
                following = asyncio.create_task(control.follow(), name="follow-control")
            batch = [RawMessage(e.message.key, e.message.value, e.message.topic, e.message.partition,
                                e.message.offset) for e in events]
            await agent.guard.run(partial(agent.processor.process, batch))
            parts.stall.progressed()
    finally:  # reached on a stop only, after the batch in hand finished
        following.cancel()
        await agent.close()


def create_app(settings: Settings, parts: WorkerParts, conf: dict[str, object]) -> faust.App:
    """The worker app over ``parts`` (built with the same settings and ``conf``, the app's
    :func:`faust_settings`); run it with :func:`faust.Worker`."""
    app = faust.App(**conf)
    names = TopicNames.of(settings)
    candles = app.topic(names.candles, key_serializer="raw", value_serializer="raw",
                        partitions=settings.topics.partitions)
    control_topic = app.topic(names.control, key_serializer="raw", value_serializer="raw", partitions=1)
    control = parts.control

    @app.agent(candles, concurrency=1)
    async def predict_candles(stream: faust.StreamT) -> None:
        """Each batch is finished (published, acknowledged, stored) before Faust may acknowledge it;
        faults are retried in place and past the deadline the process leaves uncommitted
        (:mod:`bse_predict.stream.batch_guard`)."""
        await _serve_candles(stream, settings, parts, names.candles)

    @app.agent(control_topic, concurrency=1)
    async def apply_control(stream: faust.StreamT) -> None:
        """Each control message is handled by one worker of the group; all follow through Redis. ``handle``
        refuses what is not a valid message and retries Redis and Kafka faults in place, so the loop body
        ends (and Faust acknowledges the message) only once it was applied or refused and reported. The
        control plane's connections close when this agent stops; whatever needs one later reopens it."""
        try:
            async for event in stream.events():
                await control.handle(event.message.value)
        finally:
            await control.stop()

    @app.timer(settings.control.tick_interval_s)
    async def tick_control() -> None:
        """Opened breakers and the passing time into the shared state (faults retried in place)."""
        await control.tick()

    @app.timer(STALL_CHECK_S)
    async def watch_for_a_stall() -> None:
        await parts.stall.check(busy=parts.busy)

    @app.timer(settings.live_metrics.refresh_s)
    async def refresh_live_metrics() -> None:
        """The Prometheus gauges: counters, consumer lag, breakers, live scores."""
        await parts.live_outcomes.refresh_quietly(app)

    @app.timer(STATS_INTERVAL_S)
    async def log_stats() -> None:
        for agent in parts.agents:
            log.info("stream counts: %s", dict(agent.processor.counts))
            log.info("ms per batch by stage: %s", agent.processor.stage_times.take_per_batch_ms())

    return app
