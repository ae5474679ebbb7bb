"""The Faust application of the worker: topics, the candle agent, and start-up.

``create_app`` builds everything from the settings passed in; nothing exists at
import time. The candle agent runs with concurrency 1 and takes events in batches
(``take_events``). Faust acknowledges a batch when the loop body ends, however
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
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import faust
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from configs.settings import Settings
from bse_predict.serving.model_set import Predictor
from bse_predict.stream.batch_guard import BatchGuard, FaultInjector
from bse_predict.stream.publisher import KafkaPublisher
from bse_predict.stream.rebuild import WindowRebuilder
from bse_predict.monitoring.live_outcomes import LiveOutcomes
from bse_predict.monitoring.resolver import KafkaOutcomePublisher
from bse_predict.monitoring.prediction_history import PredictionHistory
from bse_predict.control.plane import ControlPlane
from bse_predict.ensembles.adaptive_weights import AdaptiveWeights, load_served_version
from bse_predict.serving.router import ModelRouter
from bse_predict.connections.clients import connect_redis, faust_broker_options, kafka_options
from bse_predict.stream.processor import CandleProcessor, RawMessage
from bse_predict.stream.stall_watch import StallWatch
from bse_predict.stream.symbol_registry import RedisSymbolRegistry
from bse_predict.connections.topics import TopicNames
from bse_predict.stream.window_store import RedisWindowStore

__all__ = ["create_app", "faust_settings"]

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 10.0
STALL_CHECK_S = 5.0


def faust_settings(settings: Settings, app_id: str) -> dict[str, object]:
    """Faust settings tuned for latency on a small machine (see docs/performance.md)."""
    datadir = Path("var") / "faust" / f"{settings.topic_prefix}{app_id}"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return {
        "id": f"{settings.topic_prefix}{app_id}",
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


def create_app(settings: Settings, predictor: Predictor, adaptive: AdaptiveWeights | None = None) -> faust.App:
    """The worker app serving ``predictor``; run it with :func:`faust.Worker`. With ``adaptive``, an
    ensemble served member by member is re-weighted from the live outcomes (:mod:`bse_predict.ensembles.adaptive_weights`)."""
    app = faust.App(**faust_settings(settings, settings.worker.app_id))
    names = TopicNames.of(settings)
    candles = app.topic(names.candles, key_serializer="raw", value_serializer="raw",
                        partitions=settings.topics.partitions)
    control_topic = app.topic(names.control, key_serializer="raw", value_serializer="raw", partitions=1)
    executor = ThreadPoolExecutor(max_workers=settings.worker.inference_threads, thread_name_prefix="inference")
    processors: list[CandleProcessor] = []
    # ``predictor`` serves until the control state names others; versions load off the event loop.
    router = ModelRouter(predictor, partial(load_served_version, settings, adaptive=adaptive),
                         settings.control.breaker)
    control = ControlPlane(settings, router, ThreadPoolExecutor(max_workers=1, thread_name_prefix="control"))
    live_outcomes = LiveOutcomes(app, settings, processors,  # outcomes, live scores, challenger, /metrics
                                 breaker_states=lambda: {m.version: router.breaker(m.version).status
                                                         for m in router.table.models()},
                                 control_counts=lambda: {**{f"control_fault.{k}": v for k, v in control.faults.items()},
                                                         "control_restored": control.restores})

    faults = settings.worker.faults
    fault_point = FaultInjector(faults.inject_failure_probability) if faults.inject_failure_probability else None
    stall = StallWatch(kafka_options(settings), app.conf.id, app.conf.broker_client_id, names.candles, faults.stall_s)
    guards: list[BatchGuard] = []

    @app.agent(candles, concurrency=1)
    async def predict_candles(stream: faust.StreamT) -> None:
        """Each batch is finished (published, acknowledged, stored) before Faust may acknowledge it;
        faults are retried in place and past the deadline the process leaves uncommitted
        (:mod:`bse_predict.stream.batch_guard`)."""
        client = connect_redis(settings, faults)
        store = RedisWindowStore(client, settings.window.retain_candles, key_prefix=settings.topic_prefix,
                                 expire_after_ms=settings.window.silent_expire_hours * 3_600_000)
        rebuilder = WindowRebuilder(settings, store, read_count=router.min_history + 1)
        publisher = KafkaPublisher(kafka_options(settings), names.predictions, names.candles_dlq,
                                   names.predictions_shadow, faults.kafka_request_timeout_ms)
        outcome_publisher = KafkaOutcomePublisher(kafka_options(settings), names.outcomes,
                                                  faults.kafka_request_timeout_ms)
        resolver = live_outcomes.resolver(client, outcome_publisher, extra_listeners=[adaptive] if adaptive else [])
        history = PredictionHistory(settings, settings.window.rebuild_scan_messages, publisher.partitions_for)
        processor = CandleProcessor(settings, store, router, publisher, executor, rebuilder, outcomes=resolver,
                                    member_sink=adaptive, fault_point=fault_point, prediction_history=history,
                                    symbols=RedisSymbolRegistry(client, settings.worker.max_symbols,
                                                                settings.window.silent_expire_hours * 3_600_000,
                                                                key_prefix=settings.topic_prefix),
                                    on_routed=control.note_routed)
        processors.append(processor)

        async def recover(kind: str) -> None:
            if kind in ("kafka", "network"):
                await publisher.restart()
                await outcome_publisher.restart()

        guard = BatchGuard(faults, processor.counts, recover=recover)
        guards.append(guard)

        async def start_up() -> None:
            await control.start()
            await control.sync()  # a worker that starts later serves the fleet's state from its first candle
            await publisher.start()
            await outcome_publisher.start()
            if adaptive is not None:
                adaptive.attach(client)
                await adaptive.refresh()

        await guard.run(start_up)
        stall.progressed()
        following = asyncio.create_task(control.follow(), name="follow-control")
        live = router.table.live
        log.info("serving %s %s (control revision %d) for %s", live.model_name, live.version, router.table.revision,
                 names.candles)
        try:
            async for events in stream.take_events(settings.worker.batch_max_events,
                                                   within=settings.worker.batch_within_ms / 1000.0):
                if following.done():  # a bug ended it (faults are retried inside): say so and follow again
                    log.error("following the control state stopped: %r; following again", following.exception())
                    following = asyncio.create_task(control.follow(), name="follow-control")
                batch = [RawMessage(e.message.key, e.message.value, e.message.topic, e.message.partition,
                                    e.message.offset) for e in events]
                await guard.run(partial(processor.process, batch))
                stall.progressed()
        finally:  # reached on a stop only, after the batch in hand finished
            following.cancel()
            await _close_quietly(store.flush(), publisher.stop(), outcome_publisher.stop(), rebuilder.close(),
                                 history.close(), client.aclose(), stall.close())

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
        await stall.check(busy=any(g.in_hand for g in guards))

    @app.timer(STATS_INTERVAL_S)
    async def log_stats() -> None:
        for processor in processors:
            log.info("stream counts: %s", dict(processor.counts))
            log.info("ms per batch by stage: %s", processor.stage_times.take_per_batch_ms())

    return app


async def _close_quietly(*closing: Awaitable[None]) -> None:
    """Run every closing step; a failing Redis or broker at stop is logged, the rest still close."""
    for step in closing:
        try:
            await step
        except (RedisError, KafkaError, OSError, asyncio.TimeoutError) as error:
            log.warning("closing at stop: %r", error)
