"""Publish a batch's predictions and dead letters with one Kafka record batch per partition.

Faust's per-message ``send`` cost more than inference at 100 messages a
batch (docs/performance.md), so the worker owns an aiokafka producer and
appends records to partition batches directly. Partitions come from Kafka's
default murmur2 partitioner on the key, as any other keyed producer would
choose them. ``publish`` returns only when the broker acknowledged every
record; the stream acks (and Faust commits) the candles after that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bse_predict.candles.schema import DeadLetter, Prediction
from bse_predict.connections.reliable_producer import ReliableWriter

__all__ = ["KafkaPublisher"]


class KafkaPublisher(ReliableWriter):
    def __init__(self, kafka: Mapping[str, Any], predictions_topic: str, dead_letter_topic: str,
                 shadow_topic: str | None = None, request_timeout_ms: int = 30_000) -> None:
        super().__init__(kafka, "bse-predict-worker", request_timeout_ms)
        self._predictions_topic = predictions_topic
        self._dead_letter_topic = dead_letter_topic
        self._shadow_topic = shadow_topic

    async def partitions_for(self, topic: str) -> set[int]:
        """The topic's partitions, as this producer partitions keys over them."""
        return await self._producer.partitions_for(topic)

    async def publish(self, predictions: Sequence[Prediction], dead_letters: Sequence[DeadLetter],
                      shadow: Sequence[Prediction] = ()) -> None:
        if shadow and self._shadow_topic is None:
            raise ValueError("shadow predictions but no shadow topic: they must never go to predictions")
        await self._producer.send_all([
            (self._predictions_topic, [(p.symbol.encode(), p.model_dump_json().encode()) for p in predictions]),
            (self._dead_letter_topic, [((d.key or "").encode(), d.model_dump_json().encode()) for d in dead_letters]),
            (self._shadow_topic or "", [(p.symbol.encode(), p.model_dump_json().encode()) for p in shadow]),
        ])
