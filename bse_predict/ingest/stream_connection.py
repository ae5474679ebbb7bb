"""One WebSocket connection to the exchange's combined streams, carrying one shard's kline streams.

:meth:`StreamConnection.open` connects to ``<ws_url>/stream``, sends the SUBSCRIBE messages one every
``subscribe_interval_s`` (under the exchange's incoming-message limit) and waits for every answer; only then
is the connection ready, so a replacement is always subscribed before the connection it replaces closes.
The reader hands each kline to the callback, and records a ``serverShutdown`` event and the end of the
connection for the shard's supervisor (:mod:`bse_predict.ingest.service`). The websockets library answers
the server's pings with pongs and sends its own pings; a pong missing for ``ping_timeout_s`` ends the
connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import orjson

from configs.settings import IngestConfig
from bse_predict.ingest.errors import BadExchangeMessage, IngestError
from bse_predict.ingest.klines import Ignored, KlineUpdate, ServerShutdown, SubscriptionAnswer, classify_message
from bse_predict.ingest.shards import subscribe_requests

__all__ = ["StreamConnection"]

log = logging.getLogger(__name__)


class StreamConnection:
    def __init__(self, url: str, streams: Sequence[str], config: IngestConfig,
                 on_update: Callable[[KlineUpdate], None], on_bad: Callable[[str], None], name: str) -> None:
        self.url = url
        self.streams = tuple(streams)
        self.name = name
        self._config = config
        self._on_update = on_update
        self._on_bad = on_bad
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answers: dict[int, asyncio.Future[str | None]] = {}
        self.opened_at_s = 0.0
        self.shutdown_announced = asyncio.Event()
        self.closed = asyncio.Event()

    async def open(self) -> None:
        """Connect and subscribe; raises OSError, TimeoutError, ConnectionClosed or IngestError on failure."""
        config = self._config
        self._ws = await connect(self.url, ping_interval=config.ping_interval_s, ping_timeout=config.ping_timeout_s,
                                 open_timeout=config.open_timeout_s, close_timeout=2, max_size=2**22)
        self.opened_at_s = time.monotonic()
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")
        try:
            requests = subscribe_requests(self.streams, config.streams_per_subscribe, first_id=1)
            for n, request in enumerate(requests):
                if n:
                    await asyncio.sleep(config.subscribe_interval_s)
                self._answers[request["id"]] = asyncio.get_running_loop().create_future()
                await self._ws.send(orjson.dumps(request).decode())
            async with asyncio.timeout(config.open_timeout_s):
                for request_id, answer in list(self._answers.items()):
                    error = await answer  # the reader answers every request when the connection ends
                    if error is not None:
                        raise IngestError(f"{self.name}: SUBSCRIBE {request_id} refused: {error}")
        except BaseException:
            await self.close()
            raise

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                try:
                    message = classify_message(raw)
                except BadExchangeMessage as error:
                    self._on_bad(str(error))
                    continue
                if isinstance(message, KlineUpdate):
                    self._on_update(message)
                elif isinstance(message, SubscriptionAnswer):
                    answer = self._answers.get(message.request_id) if isinstance(message.request_id, int) else None
                    if answer is not None and not answer.done():
                        answer.set_result(message.error)
                elif isinstance(message, ServerShutdown):
                    log.info("%s: the exchange announced serverShutdown", self.name)
                    self.shutdown_announced.set()
                elif isinstance(message, Ignored):
                    log.debug("%s: ignored %s", self.name, message.reason)
        except ConnectionClosed as closed:
            log.info("%s: connection closed (%s)", self.name, closed)
        finally:
            self.closed.set()
            for answer in self._answers.values():
                if not answer.done():
                    answer.set_result("the connection closed")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
            except asyncio.TimeoutError:
                self._reader.cancel()
        self.closed.set()
