"""The Faust application of the worker: topics, the candle agent, and start-up.

``create_app`` builds everything from the settings passed in; nothing exists at
import time. The agent runs with concurrency 1 and takes events in batches
(``take_events``): Faust acks a batch only after the loop body returns, and our
body returns only after the predictions are acknowledged by Kafka, so a crash
replays, never skips (faust-streaming issue 606 is about
concurrency > 1, which we do not use).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faust
import redis.asyncio as aioredis

from configs.settings import Settings
from models.predictor import Predictor
from workers.publisher import KafkaPublisher
from workers.rebuild import WindowRebuilder
from workers.outcome_store import RedisOutcomeStore
from workers.outcomes import KafkaOutcomePublisher, OutcomeResolver
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


def _outcome_resolver(settings: Settings, client: aioredis.Redis,
                      publisher: KafkaOutcomePublisher) -> OutcomeResolver | None:
    if not settings.outcomes.enabled:
        return None
    store = RedisOutcomeStore(client, settings.outcomes.settled_retain_hours * 3_600_000,
                              key_prefix=settings.topic_prefix)
    return OutcomeResolver(settings, store, publisher)


def create_app(settings: Settings, predictor: Predictor) -> faust.App:
    """The worker app serving ``predictor``; run it with :func:`faust.Worker`."""
    app = faust.App(**faust_settings(settings, settings.worker.app_id))
    names = TopicNames.of(settings)
    candles = app.topic(names.candles, key_serializer="raw", value_serializer="raw",
                        partitions=settings.topics.partitions)
    executor = ThreadPoolExecutor(max_workers=settings.worker.inference_threads, thread_name_prefix="inference")
    processors: list[CandleProcessor] = []

    @app.agent(candles, concurrency=1)
    async def predict_candles(stream: faust.StreamT) -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        store = RedisWindowStore(client, settings.window.retain_candles, key_prefix=settings.topic_prefix)
        rebuilder = WindowRebuilder(settings, store, read_count=predictor.min_history + 1)
        publisher = KafkaPublisher(settings.kafka_bootstrap, names.predictions, names.candles_dlq)
        await publisher.start()
        outcome_publisher = KafkaOutcomePublisher(settings.kafka_bootstrap, names.outcomes)
        await outcome_publisher.start()
        resolver = _outcome_resolver(settings, client, outcome_publisher)
        processor = CandleProcessor(settings, store, predictor, publisher, executor, rebuilder, outcomes=resolver)
        processors.append(processor)
        log.info("serving %s %s for %s", predictor.model_name, predictor.version, names.candles)
        try:
            async for events in stream.take_events(settings.worker.batch_max_events,
                                                   within=settings.worker.batch_within_ms / 1000.0):
                await processor.process([
                    RawMessage(e.message.key, e.message.value, e.message.topic, e.message.partition,
                               e.message.offset)
                    for e in events
                ])
        finally:
            await store.flush()
            await publisher.stop()
            await outcome_publisher.stop()
            await rebuilder.close()
            await client.aclose()

    @app.timer(STATS_INTERVAL_S)
    async def log_stats() -> None:
        for processor in processors:
            log.info("stream counts: %s", dict(processor.counts))
            log.info("ms per batch by stage: %s", processor.stage_times.take_per_batch_ms())

    return app
