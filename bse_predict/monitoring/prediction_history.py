"""Read back a symbol's recent predictions from the ``predictions`` topics (after Redis lost them).

Pending outcomes live in Redis; the predictions they come from are kept by
Kafka. When a symbol's window had to be rebuilt because Redis lost it, its
pending outcomes were lost with it: the stream reads the symbol's predictions of
the last horizon back from the partition its key maps to (the producer's
murmur2 partitioner, as :mod:`bse_predict.stream.publisher` uses) and settles them again
(:meth:`bse_predict.monitoring.resolver.OutcomeResolver.restore`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from configs.settings import Settings
from bse_predict.candles.schema import Prediction
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.partition_range import read_offsets

__all__ = ["PredictionHistory"]

_FETCH_TIMEOUT_MS = 5000


class PredictionHistory:
    """The newest ``scan_messages`` records of a symbol's partition of a predictions topic, read on demand;
    ``partitions_for(topic)`` gives the topic's partitions as the producer that wrote them sees them."""

    def __init__(self, settings: Settings, scan_messages: int,
                 partitions_for: Callable[[str], Awaitable[set[int]]]) -> None:
        self._settings = settings
        self._scan = scan_messages
        self._partitions_for = partitions_for
        self._consumer: AIOKafkaConsumer | None = None
        self._partitioner = DefaultPartitioner()

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**kafka_options(self._settings), group_id=None,
                                        enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def recent(self, topic: str, symbol: str, timeframe: str, from_ms: int, before_ms: int) -> list[Prediction]:
        """``symbol``'s predictions on ``topic`` with ``from_ms <= open_time < before_ms``, one per id."""
        consumer = await self._started()
        ordered = sorted(await self._partitions_for(topic))
        key = symbol.encode()
        tp = TopicPartition(topic, self._partitioner(key, ordered, ordered))
        consumer.assign([tp])
        begin = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        found: dict[str, Prediction] = {}
        async for record in read_offsets(consumer, tp, max(begin, end - self._scan), end, _FETCH_TIMEOUT_MS):
            if record.key != key:
                continue
            try:
                prediction = Prediction.model_validate_json(record.value)
            except ValidationError:
                continue  # not ours to judge: only the worker writes here
            if prediction.timeframe == timeframe and from_ms <= prediction.open_time < before_ms:
                found[prediction.id] = prediction
        return sorted(found.values(), key=lambda p: p.open_time)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
