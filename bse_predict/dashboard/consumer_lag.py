"""The worker group's lag on ``candles``, read when the operations page is rendered (adapter).

An admin client and a consumer of no group (:func:`~bse_predict.connections.consumer_lag.read_group_lag`),
opened on the first read and kept; each read must answer within ``timeout_s``. A read that fails (Kafka
down, an error, no answer in time) closes them, so the next read starts afresh, and raises
:class:`~bse_predict.dashboard.errors.SourceUnavailable`, which the page shows in place of the section."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from configs.settings import Settings
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.consumer_lag import PartitionLag, read_group_lag
from bse_predict.connections.topics import TopicNames, worker_group_id
from bse_predict.dashboard.errors import SourceUnavailable

__all__ = ["KafkaLag"]

_CLIENT_ID = "bse-predict-dashboard-lag"


class KafkaLag:
    """See the module docstring; :attr:`group_id` and :attr:`topic` say what is read."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self._kafka = kafka_options(settings)
        self._bootstrap = settings.kafka_bootstrap
        self._timeout_s = timeout_s
        self.group_id = worker_group_id(settings)
        self.topic = TopicNames.of(settings).candles
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        self._lock = asyncio.Lock()  # one read at a time: the page and its live section share the clients

    async def _started(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._clients is None:
            admin = AIOKafkaAdminClient(**self._kafka, client_id=_CLIENT_ID, request_timeout_ms=int(self._timeout_s * 1000))
            offsets = AIOKafkaConsumer(**self._kafka, group_id=None, enable_auto_commit=False, client_id=_CLIENT_ID,
                                       request_timeout_ms=int(self._timeout_s * 1000))
            self._clients = admin, offsets  # closed by close() whatever start() did
            await admin.start()
            await offsets.start()
        return self._clients

    async def read(self) -> list[PartitionLag]:
        """Every partition of ``candles`` with the worker group's committed offset and its end offset."""
        async with self._lock:
            try:
                return await asyncio.wait_for(self._read(), self._timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                await self._close()
                raise SourceUnavailable(f"Kafka at {self._bootstrap} did not answer for the consumer lag "
                                        f"({type(exc).__name__}: {exc})") from exc

    async def _read(self) -> list[PartitionLag]:
        admin, offsets = await self._started()
        return await read_group_lag(admin, offsets, self.group_id, self.topic)

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            admin, offsets = clients
            for stop in (admin.close, offsets.stop):
                try:
                    await asyncio.wait_for(stop(), self._timeout_s)
                except (KafkaError, OSError, TimeoutError):
                    pass  # a client that cannot close cleanly is dropped all the same
