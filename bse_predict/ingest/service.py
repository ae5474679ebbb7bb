"""``bse-predict ingest``: one market of the exchange into ``candles``, supervised.

Start-up: the symbols (the config's, or every trading USDT market of ``exchangeInfo``), the exchange's
server time, and the closed candles each symbol already has in the topic over the last
``restart_lookback_candles`` before its newest (:func:`~bse_predict.ingest.topic_tail.recent_closed_open_times`);
a symbol with none starts ``backfill_max_candles`` back. That is each symbol's floor in the
:class:`~bse_predict.ingest.gate.CandleGate`, with the candles above it already in the topic: the first backfill
fills every hole of the lookback that the exchange has, such as an older candle that a crash lost after a newer
one was acknowledged.

Then the kline streams are split over connections under the per-connection cap
(:func:`~bse_predict.ingest.shards.shard_streams`) and each shard is supervised by :meth:`Ingest._run_shard`:

- a connection that ends is replaced after an exponential backoff with a cap, forever;
- a connection that announces ``serverShutdown``, or reaches ``rotate_after_s`` (before the exchange's 24 h
  cut), is replaced *before* it is closed: the new one is subscribed first, the overlap's duplicates are
  dropped by the gate;
- after every new connection, its symbols are backfilled by REST from their floor up to the newest candle
  closed by the exchange's clock; a closed candle that arrives above a hole asks for a backfill too.

Backfills run one at a time in one task (:meth:`Ingest._backfill_worker`), all through one REST client and
its weight budget. Gaps that the backfill confirms at the exchange are logged and counted, never filled; every
backfill of a symbol (and one every ``gap_recheck_interval_s``) asks the exchange again for them, and a candle
it published since is produced late and counted in ``bse_ingest_gap_filled_candles_total``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.exceptions import WebSocketException

from configs.settings import IngestMarket, Settings
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.ingest.backfill import (KlineRequest, gap_requests, initial_floor_ms, last_closed_open_ms,
                                        plan_backfill)
from bse_predict.ingest.candle_sink import CandleSink
from bse_predict.ingest.errors import BadExchangeMessage, IngestError
from bse_predict.ingest.gate import CandleGate, Gap
from bse_predict.ingest.klines import KlineUpdate, rest_row_update, stream_name
from bse_predict.ingest.metrics import IngestMetrics
from bse_predict.ingest.pacing import backoff_delay_s
from bse_predict.ingest.rest_client import ExchangeRest
from bse_predict.ingest.shards import shard_streams
from bse_predict.ingest.stream_connection import StreamConnection
from bse_predict.ingest.symbols import trading_usdt_symbols
from bse_predict.ingest.topic_tail import recent_closed_open_times

__all__ = ["Ingest", "IngestReport"]

log = logging.getLogger(__name__)

_STATUS_EVERY_S = 60.0


@dataclass(frozen=True)
class IngestReport:
    symbols: tuple[str, ...]
    connections: int
    closed: int
    updates: int
    duplicates: int
    gaps: tuple[Gap, ...]
    gaps_filled: tuple[tuple[str, int], ...]
    rate_limited: int


class Ingest:
    def __init__(self, settings: Settings, market: IngestMarket, symbols: Sequence[str] = ()) -> None:
        self._settings = settings
        self._config = settings.ingest
        self._market = market
        self._endpoints = self._config.endpoints(market)
        self._timeframe = settings.market.timeframe
        self._timeframe_ms = settings.market.timeframe_ms
        self._wanted = tuple(s.upper() for s in symbols) or self._config.symbols
        self.metrics = IngestMetrics(market, self._config.metrics_port)
        self._gate = CandleGate(self._timeframe_ms, self._config.update_interval_s)
        self._sink: CandleSink | None = None
        self._rest: ExchangeRest | None = None
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self.symbols: tuple[str, ...] = ()
        self.ready = asyncio.Event()
        """Set once every shard's first connection is subscribed and its first backfill is asked for."""

    async def run(self, stop: asyncio.Event) -> IngestReport:
        """Ingest until ``stop`` is set; a task that fails (an unknown symbol, a bug) ends the run with its error."""
        await ensure_topics(self._settings)
        topic = TopicNames.of(self._settings).candles
        async with ExchangeRest(self._config, self._market) as rest:
            self._rest = rest
            symbols = self._wanted or tuple(trading_usdt_symbols(await rest.exchange_info(), self._market))
            if not symbols:
                raise IngestError(f"no {self._market} symbols to ingest")
            self.symbols = tuple(symbols)
            self._sink = CandleSink(self._settings, topic)
            await self._sink.start()
            tasks: list[asyncio.Task[None]] = []
            try:
                await self._start_floors(rest, topic)
                tasks += [asyncio.create_task(self._backfill_worker(), name="ingest-backfill"),
                          asyncio.create_task(self._gap_rechecks(), name="ingest-gap-rechecks"),
                          asyncio.create_task(self._status(), name="ingest-status")]
                shards = shard_streams([stream_name(s, self._timeframe) for s in symbols],
                                       self._endpoints.max_streams_per_connection)
                by_stream = {stream_name(s, self._timeframe): s for s in symbols}
                first_ready = [asyncio.Event() for _ in shards]
                for index, streams in enumerate(shards):
                    shard_symbols = tuple(by_stream[s] for s in streams)
                    tasks.append(asyncio.create_task(self._run_shard(index, streams, shard_symbols, first_ready[index]),
                                                     name=f"ingest-shard-{index}"))
                log.info("ingest %s: %d streams on %d connections", self._market, len(by_stream), len(shards))
                tasks.append(asyncio.create_task(self._mark_ready(first_ready), name="ingest-ready"))
                stopped = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                for task in done:
                    if task is not stopped and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._sink.stop()
            return self.report()

    async def _start_floors(self, rest: ExchangeRest, topic: str) -> None:
        """Each symbol's floor, ``restart_lookback_candles`` below its newest closed candle in the topic, with the
        closed candles the topic holds above it (:func:`~bse_predict.ingest.topic_tail.recent_closed_open_times`):
        the first backfill fills every hole of the lookback that the exchange has. A symbol with nothing in the
        topic starts ``backfill_max_candles`` back."""
        assert self._sink is not None
        config = self._config
        server_ms = await rest.server_time_ms()
        began = time.monotonic()
        scan = await recent_closed_open_times(
            self._settings, topic, await self._sink.partitions_for(topic), self.symbols, self._timeframe,
            self._timeframe_ms, scan_messages=config.tail_scan_messages,
            lookback_candles=config.restart_lookback_candles, max_messages=config.restart_scan_max_messages)
        start = initial_floor_ms(server_ms, self._timeframe_ms, config.backfill_max_candles)
        holes = 0
        for symbol in self.symbols:
            if symbol in scan.closed:
                newest = scan.newest(symbol)
                floor = newest - config.restart_lookback_candles * self._timeframe_ms
                self._gate.start(symbol, floor, floor_is_candle=False, present=scan.closed[symbol])
                holes += self._gate.has_hole(symbol)
            else:
                self._gate.start(symbol, start, floor_is_candle=False)
        log.info("ingest %s: %d symbols, %d with candles in %s already (%d records read in %.1f s), %d with a hole "
                 "in the last %d candles", self._market, len(self.symbols), len(scan.closed), topic,
                 scan.records_read, time.monotonic() - began, holes, config.restart_lookback_candles)

    async def _mark_ready(self, first_ready: Sequence[asyncio.Event]) -> None:
        for event in first_ready:
            await event.wait()
        self.ready.set()
        await asyncio.Event().wait()  # stays, like every other task, until the run ends

    def report(self) -> IngestReport:
        m = self.metrics
        connections = sum(m.value("bse_ingest_connections", reason=r)
                          for r in ("start", "reconnect", "rotation", "server_shutdown"))
        return IngestReport(
            symbols=self.symbols, connections=int(connections),
            closed=int(m.value("bse_ingest_closed_candles", source="stream")
                       + m.value("bse_ingest_closed_candles", source="backfill")),
            updates=int(m.value("bse_ingest_updates")), duplicates=int(m.value("bse_ingest_duplicate_closes")),
            gaps=tuple(m.gaps), gaps_filled=tuple(m.filled), rate_limited=self._rest.rate_limited if self._rest else 0)

    # ------------------------------------------------------------------ the stream side

    def _on_update(self, update: KlineUpdate) -> None:
        symbol = update.symbol
        if update.candle.timeframe != self._timeframe or not self._gate.knows(symbol):
            return
        assert self._sink is not None
        if update.closed:
            if self._produce_closed(update, "stream"):
                if self._gate.has_hole(symbol):
                    self._request_backfill((symbol,))
            else:
                self.metrics.duplicates.labels(self._market).inc()
        elif self._gate.accept_update(symbol, update.open_time_ms, time.monotonic()):
            self._sink.put(update.candle)
            self.metrics.updates.labels(self._market).inc()

    def _produce_closed(self, update: KlineUpdate, source: str) -> bool:
        """Produce a closed candle the gate accepts; one that a gap report said the exchange lacked corrects it."""
        assert self._sink is not None
        symbol, open_ms = update.symbol, update.open_time_ms
        was_gap = self._gate.is_reported_gap(symbol, open_ms)
        if not self._gate.accept_closed(symbol, open_ms):
            return False
        self._sink.put(update.candle)
        self.metrics.closed.labels(self._market, source).inc()
        if was_gap:
            self.metrics.gap_filled(symbol, open_ms)
            log.warning("ingest %s: the exchange published %s open time %d after it was reported as a gap: "
                        "produced late, the gap report corrected (bse_ingest_gap_filled_candles_total)",
                        self._market, symbol, open_ms)
        return True

    def _on_bad(self, reason: str) -> None:
        self.metrics.bad_messages.labels(self._market).inc()
        log.warning("ingest %s: %s", self._market, reason)

    async def _run_shard(self, index: int, streams: tuple[str, ...], symbols: tuple[str, ...],
                         first_ready: asyncio.Event) -> None:
        name = f"{self._market}-{index}"
        url = f"{self._endpoints.ws_url}/stream"
        current: StreamConnection | None = None
        attempt, reason = 0, "start"
        try:
            while True:
                connection = StreamConnection(url, streams, self._config, self._on_update, self._on_bad, name)
                try:
                    await connection.open()
                except (OSError, asyncio.TimeoutError, WebSocketException, IngestError) as error:
                    wait = backoff_delay_s(attempt, self._config.backoff_initial_s, self._config.backoff_max_s,
                                           random.random())
                    attempt += 1
                    log.warning("ingest %s: connecting failed (%r), attempt %d: retry in %.1f s%s", name, error,
                                attempt, wait, " (the old connection still serves)" if current else "")
                    await asyncio.sleep(wait)
                    continue
                attempt = 0
                self.metrics.connections.labels(self._market, reason).inc()
                old, current = current, connection
                if old is not None:
                    await old.close()  # only now: its replacement is subscribed
                log.info("ingest %s: %d streams subscribed (%s)", name, len(streams), reason)
                self._request_backfill(symbols)
                first_ready.set()
                reason = await self._until_replaced(connection)
                if reason == "reconnect":
                    current = None
        finally:
            if current is not None:
                await current.close()

    async def _until_replaced(self, connection: StreamConnection) -> str:
        """Wait until the connection ends (reconnect), announces serverShutdown, or is due for rotation."""
        rotate_in = max(0.0, connection.opened_at_s + self._config.rotate_after_s - time.monotonic())
        waits = [asyncio.ensure_future(connection.closed.wait()),
                 asyncio.ensure_future(connection.shutdown_announced.wait()),
                 asyncio.ensure_future(asyncio.sleep(rotate_in))]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if connection.closed.is_set():
            return "reconnect"
        return "server_shutdown" if connection.shutdown_announced.is_set() else "rotation"

    # ------------------------------------------------------------------ the REST side

    def _request_backfill(self, symbols: Sequence[str]) -> None:
        self._pending.update(symbols)
        self._wake.set()

    async def _backfill_worker(self) -> None:
        assert self._rest is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = sorted(self._pending)
                self._pending.clear()
                server_ms = await self._rest.server_time_ms()
                produced = 0
                for symbol in batch:
                    produced += await self._backfill(symbol, server_ms)
                if produced:
                    log.info("ingest %s: backfilled %d closed candles of %d symbols", self._market, produced,
                             len(batch))

    async def _backfill(self, symbol: str, server_ms: int) -> int:
        assert self._rest is not None and self._sink is not None
        produced = await self._recheck_gaps(symbol, server_ms)
        requests = plan_backfill(self._gate.floor_ms(symbol), server_ms, self._timeframe_ms,
                                 self._endpoints.klines_limit)
        returned: list[int] = []
        for request in requests:
            for update in await self._closed_rows(symbol, request, server_ms):
                returned.append(update.open_time_ms)
                produced += self._produce_closed(update, "backfill")
        if requests:
            confirm_ms = int(self._config.gap_confirm_after_s * 1000)
            gaps = self._gate.confirm_gaps(symbol, returned, requests[-1].end_ms,
                                           last_closed_open_ms(server_ms - confirm_ms, self._timeframe_ms))
            for gap in gaps:
                self.metrics.gap(gap)
                log.warning("ingest %s: the exchange has no %s candles from open time %d to %d (%d candles): "
                            "reported, not filled", self._market, symbol, gap.first_open_ms, gap.last_open_ms,
                            gap.candles)
        return produced

    async def _recheck_gaps(self, symbol: str, server_ms: int) -> int:
        """Ask the exchange again for the slots reported as its gaps (those of the last
        ``restart_lookback_candles``): a candle it published since is produced, late."""
        self._gate.forget_gaps(symbol, self._gate.floor_ms(symbol)
                               - self._config.restart_lookback_candles * self._timeframe_ms)
        produced = 0
        for request in gap_requests(self._gate.reported_gaps(symbol), self._timeframe_ms,
                                    self._endpoints.klines_limit):
            for update in await self._closed_rows(symbol, request, server_ms):
                produced += self._produce_closed(update, "backfill")
        return produced

    async def _closed_rows(self, symbol: str, request: KlineRequest, server_ms: int) -> list[KlineUpdate]:
        """The closed candles of one klines request, inside its range."""
        assert self._rest is not None
        found = []
        for row in await self._rest.klines(symbol, self._timeframe, request):
            try:
                update = rest_row_update(symbol, self._timeframe, row, server_ms)
            except BadExchangeMessage as error:
                self._on_bad(f"{symbol} klines row: {error}")
                continue
            if update.closed and request.start_ms <= update.open_time_ms <= request.end_ms:
                found.append(update)
        return found

    async def _gap_rechecks(self) -> None:
        """Every ``gap_recheck_interval_s``, a backfill of the symbols with reported gaps (which asks again)."""
        while True:
            await asyncio.sleep(self._config.gap_recheck_interval_s)
            waiting = [s for s in self.symbols if self._gate.reported_gaps(s)]
            if waiting:
                self._request_backfill(waiting)

    async def _status(self) -> None:
        while True:
            await asyncio.sleep(_STATUS_EVERY_S)
            r = self.report()
            log.info("ingest %s: %d closed candles, %d updates, %d duplicates dropped, %d gaps, %d connections",
                     self._market, r.closed, r.updates, r.duplicates, len(r.gaps), r.connections)
