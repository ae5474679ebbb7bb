"""The Faust application of the worker: topics, the candle agent, and start-up.

``create_app`` builds everything from the settings passed in; nothing exists at
import time. The agent runs with concurrency 1 and takes events in batches
(``take_events``): Faust acks a batch only after the loop body returns, and our
body returns only after the predictions are acknowledged by Kafka, so a crash
replays, never skips (faust-streaming issue 606 is about
concurrency > 1, which we do not use).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import faust
import redis.asyncio as aioredis

from configs.settings import Settings
from models.predictor import Predictor
from workers.adaptive import AdaptiveWeights
from workers.publisher import KafkaPublisher
from workers.rebuild import WindowRebuilder
from workers.live import LiveOutcomes
from workers.outcomes import KafkaOutcomePublisher
from workers.control import ControlPlane, load_served_version
from workers.model_router import ModelRouter
from workers.streams import CandleProcessor, RawMessage
from workers.topics import TopicNames
from workers.window_store import RedisWindowStore

__all__ = ["create_app", "faust_settings"]

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 10.0


def faust_settings(settings: Settings, app_id: str) -> dict[str, object]:
    """Faust settings tuned for latency on a small machine (see docs/performance.md)."""
    datadir = Path("var") / "faust" / f"{settings.topic_prefix}{app_id}"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return {
        "id": f"{settings.topic_prefix}{app_id}",
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": settings.topics.partitions,
        "topic_replication_factor": settings.topics.replication_factor,
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
    ensemble served member by member is re-weighted from the live outcomes (:mod:`workers.adaptive`)."""
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
    live_outcomes = LiveOutcomes(app, settings, processors,  # outcomes, live scores, challenger, /metrics
                                 breaker_states=lambda: {m.version: router.breaker(m.version).status
                                                         for m in router.table.models()})
    control = ControlPlane(settings, router, ThreadPoolExecutor(max_workers=1, thread_name_prefix="control"))

    @app.agent(candles, concurrency=1)
    async def predict_candles(stream: faust.StreamT) -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        store = RedisWindowStore(client, settings.window.retain_candles, key_prefix=settings.topic_prefix)
        await control.start()
        await control.sync()  # a worker that starts later serves the fleet's state from its first candle
        following = asyncio.create_task(control.follow(), name="follow-control")
        rebuilder = WindowRebuilder(settings, store, read_count=router.min_history + 1)
        publisher = KafkaPublisher(settings.kafka_bootstrap, names.predictions, names.candles_dlq,
                                   names.predictions_shadow)
        await publisher.start()
        outcome_publisher = KafkaOutcomePublisher(settings.kafka_bootstrap, names.outcomes)
        await outcome_publisher.start()
        if adaptive is not None:
            adaptive.attach(client)
            await adaptive.refresh()
        resolver = live_outcomes.resolver(client, outcome_publisher, extra_listeners=[adaptive] if adaptive else [])
        processor = CandleProcessor(settings, store, router, publisher, executor, rebuilder, outcomes=resolver,
                                    member_sink=adaptive)
        processors.append(processor)
        live = router.table.live
        log.info("serving %s %s (control revision %d) for %s", live.model_name, live.version, router.table.revision,
                 names.candles)
        try:
            async for events in stream.take_events(settings.worker.batch_max_events,
                                                   within=settings.worker.batch_within_ms / 1000.0):
                if following.done():  # it only ends by failing: let the worker crash loudly, not drift
                    following.result()
                await processor.process([
                    RawMessage(e.message.key, e.message.value, e.message.topic, e.message.partition,
                               e.message.offset)
                    for e in events
                ])
        finally:
            following.cancel()
            await store.flush()
            await publisher.stop()
            await outcome_publisher.stop()
            await rebuilder.close()
            await client.aclose()

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

    @app.timer(STATS_INTERVAL_S)
    async def log_stats() -> None:
        for processor in processors:
            log.info("stream counts: %s", dict(processor.counts))
            log.info("ms per batch by stage: %s", processor.stage_times.take_per_batch_ms())

    return app
