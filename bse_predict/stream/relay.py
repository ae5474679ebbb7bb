"""The floor of the benchmark: a Faust agent that forwards each candle to an output
topic and does nothing else, with the worker's own Faust settings and batching.
Whatever latency it shows is Kafka and Faust on this machine, not our work."""

from __future__ import annotations

import asyncio

import faust

from configs.settings import Settings
from bse_predict.stream.app import faust_settings
from bse_predict.connections.topics import TopicNames
from bse_predict.heap import freeze_long_lived

__all__ = ["RELAY_OUTPUT", "create_relay_app"]

RELAY_OUTPUT = "relay.out"


def create_relay_app(settings: Settings) -> faust.App:
    app = faust.App(**faust_settings(settings, "bse-relay"))
    candles = app.topic(TopicNames.of(settings).candles, key_serializer="raw", value_serializer="raw",
                        partitions=settings.topics.partitions)
    output = app.topic(settings.topic(RELAY_OUTPUT), key_serializer="raw", value_serializer="raw",
                       partitions=settings.topics.partitions)

    @app.agent(candles, concurrency=1)
    async def relay(stream: faust.StreamT) -> None:
        freeze_long_lived()  # as the worker does once started: the same runtime on both sides of the comparison
        async for events in stream.take_events(settings.worker.batch_max_events,
                                               within=settings.worker.batch_within_ms / 1000.0):
            pending = [await output.send(key=e.message.key, value=e.message.value) for e in events]
            await asyncio.gather(*pending)

    return app
