"""The retrain's producer for ``control.events`` (the :class:`~bse_predict.monitoring.event_report.Sender`
its :class:`~bse_predict.monitoring.event_report.EventReport` sends through)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from configs.settings import Settings
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import ensure_topics

__all__ = ["EventProducer"]


class EventProducer:
    """``acks=all``; each :meth:`send` returns once the broker has the record. Use ``async with``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> EventProducer:
        await ensure_topics(self._settings)
        producer = AIOKafkaProducer(**kafka_options(self._settings), acks="all", linger_ms=0,
                                    client_id="bse-predict-retrain")
        await producer.start()
        self._producer = producer
        return self

    async def __aexit__(self, *_: object) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        if self._producer is None:
            raise RuntimeError("EventProducer is used outside `async with`")
        await self._producer.send_and_wait(topic, value, key=key)
