"""A local Binance for tests: REST and WebSocket in Binance's documented formats, on a fast clock, with
scripted faults. No internet is needed; the candles are real ones from ``../shared/data`` (or any given).

- **Clock.** Exchange time runs ``3600 / hour_s`` times faster than real time from ``start_ms``: with
  ``hour_s=0.2`` an hourly candle closes every 0.2 s. A candle opens at its open time and is closed once
  the exchange time passes its close time (open + interval - 1 ms).
- **REST** (``/api/v3/...`` for spot, ``/fapi/v1/...`` for futures): ``time`` (``{"serverTime"}``),
  ``klines`` (rows ``[open time, "open", "high", "low", "close", "volume", close time, ...]``; the newest row
  is the still-forming candle, its values partial), ``exchangeInfo``. Every answer carries
  ``X-MBX-USED-WEIGHT-1M``. Scripted 429s carry ``Retry-After``; a request during a ``Retry-After`` gets
  418 and is recorded as a violation.
- **WebSocket** combined streams: spot at ``/stream``, futures on the ``/market/stream`` route. The old
  unrouted futures ``/stream`` answers SUBSCRIBE and then sends nothing, as Binance's retired route does.
  Each subscribed symbol gets in-progress kline events every ``tick_s`` and its closed kline (``x: true``)
  when the candle closes, wrapped as ``{"stream", "data"}``. The server pings every ``heartbeat_s`` and
  drops a connection that does not answer.
- **Faults** (:class:`Faults`): klines answers held back (:attr:`ExchangeSim.klines_delay_s`, changeable while
  it runs), a missing candle published late (:meth:`ExchangeSim.publish`), every connection dropped without a close frame (then connections refused
  for a while), a ``serverShutdown`` event (the connection closed a grace period later), the 24-hour
  cut, duplicate closes, late closes (sent after the next candle's updates), 429s. A candle missing from
  the data is an exchange-side gap: no event, no REST row.

Everything that happened is kept in :attr:`ExchangeSim.log` for the tests to check.

**As a program** (``make demo-live``, ``benchmarks/ingest_delay.py``), from the repository's root::

    python -m tests.support.exchange_sim --data ../shared/data/candles/binance-futures --hour-seconds 2

serves the newest ``--last-hours`` candles of every ``SYMBOL-1h.csv.gz`` of the folder (or ``--symbols``), the
first ``--history-hours`` of them already closed at the start (for a REST backfill) and the rest closing live,
one every ``--hour-seconds``; it prints one JSON line (``rest_url``, ``ws_url``, ``market``, ``start_ms``,
``hour_s``, ``started_wall_s``: when the exchange clock stood at ``start_ms``, by ``time.time()``) and runs
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from bse_predict.candles.files import read_candle_files

__all__ = ["Faults", "SimLog", "ExchangeSim", "candles_from_files"]

HOUR_MS = 3_600_000
Row = tuple[int, float, float, float, float, float]


@dataclass(frozen=True)
class Faults:
    # Scripted faults fire at these exchange hours after the start, or at the first tick after with a
    # subscribed connection open, one fault per tick.
    disconnect_at_h: tuple[float, ...] = ()   # every connection dropped
    down_for_h: float = 0.0                   # after a drop, new connections are refused (503) this long
    shutdown_at_h: tuple[float, ...] = ()     # serverShutdown to every open connection ...
    shutdown_grace_h: float = 1.0             # ... which the exchange closes this long after
    max_connection_age_h: float = 24.0        # the exchange's cut of every connection
    duplicate_every: int = 0                  # every n-th closed kline is sent twice (0: never)
    late_every: int = 0                       # every n-th closed kline comes a tick late, after the next updates
    rate_limit_requests: tuple[int, ...] = () # these klines requests (1-based) are answered 429
    retry_after_s: int = 1


@dataclass
class Connection:
    number: int
    path: str
    opened_at_ms: int
    ws: web.WebSocketResponse
    request: web.Request
    streams: set[str] = field(default_factory=set)
    sent_closed: dict[str, int] = field(default_factory=dict)
    incoming_at_s: list[float] = field(default_factory=list)
    got_shutdown: bool = False
    close_at_ms: int | None = None
    closed_at_ms: int | None = None
    closed_by: str | None = None              # client | disconnect | shutdown | age
    successor_ready: bool | None = None       # at close: another open connection already had these streams


@dataclass
class SimLog:
    klines_requests: int = 0
    rate_limited: int = 0
    rate_limit_violations: int = 0            # requests while a Retry-After ran
    refused_connections: int = 0
    max_weight_per_minute: int = 0
    kline_events: int = 0
    closed_events: int = 0
    connections: list[Connection] = field(default_factory=list)
    closed_sent_wall_s: dict[tuple[str, int], float] = field(default_factory=dict)  # first closed kline, time.time()


def candles_from_files(folder: Path, symbols: Sequence[str], first_open_ms: int, hours: int) -> dict[str, list[Row]]:
    """Real candles of ``symbols`` from ``folder``, open times in ``[first_open_ms, first_open_ms + hours h)``."""
    wanted = [folder / f"{s}-1h.csv.gz" for s in symbols]
    found: dict[str, list[Row]] = {}
    for series in read_candle_files(wanted):
        keep = (series.open_time_ms >= first_open_ms) & (series.open_time_ms < first_open_ms + hours * HOUR_MS)
        found[series.symbol] = [(int(t), *map(float, row)) for t, row in
                                zip(series.open_time_ms[keep].tolist(), series.ohlcv[keep].tolist())]
    return found


class ExchangeSim:
    def __init__(self, candles: dict[str, Iterable[Row]], *, market: str, start_ms: int, hour_s: float = 0.2,
                 tick_s: float = 0.01, heartbeat_s: float = 1.0, faults: Faults = Faults(),
                 weight_limit: int = 2400) -> None:
        self.market = market
        self.candles = {s: {row[0]: row for row in rows} for s, rows in candles.items()}
        self.start_ms = start_ms
        self.hour_s = hour_s
        self.tick_s = tick_s
        self.heartbeat_s = heartbeat_s
        self.faults = faults
        self.weight_limit = weight_limit
        self.klines_delay_s = 0.0                  # every klines answer held back this long (real seconds)
        self.log = SimLog()
        self._t0 = 0.0
        self.started_wall_s = 0.0                  # time.time() when the exchange clock stood at start_ms
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._banned_until_s = 0.0
        self._refuse_until_ms = 0
        self._weight_window: tuple[int, int] = (0, 0)  # (minute, used)
        self._close_counts: dict[str, int] = {}
        self.port = 0

    # ------------------------------------------------------------------ clock

    def now_ms(self) -> int:
        return self.start_ms + int((time.monotonic() - self._t0) / self.hour_s * HOUR_MS)

    def at_hour(self, hours: float) -> float:
        """The monotonic time at which ``hours`` exchange hours have passed since the start."""
        return self._t0 + hours * self.hour_s

    @property
    def last_close_ms(self) -> int:
        return max(max(rows) for rows in self.candles.values()) + HOUR_MS

    # ------------------------------------------------------------------ server

    @property
    def prefix(self) -> str:
        return "/api/v3" if self.market == "spot" else "/fapi/v1"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket base the client is configured with (route included)."""
        return f"ws://127.0.0.1:{self.port}" + ("" if self.market == "spot" else "/market")

    def close_wall_s(self, open_ms: int) -> float:
        """When (``time.time()``) the candle at ``open_ms`` closes by the exchange's clock."""
        return self.started_wall_s + (open_ms + HOUR_MS - self.start_ms) / HOUR_MS * self.hour_s

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_get(f"{self.prefix}/time", self._time)
        app.router.add_get(f"{self.prefix}/klines", self._klines)
        app.router.add_get(f"{self.prefix}/exchangeInfo", self._exchange_info)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/ws", self._stream)
        if self.market == "futures":
            app.router.add_get("/market/stream", self._stream)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._t0 = time.monotonic()
        self.started_wall_s = time.time()
        self._tasks.append(asyncio.create_task(self._faults_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self.log.connections:
            if not conn.ws.closed:
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ REST

    def _weigh(self, weight: int) -> dict[str, str]:
        minute = int(time.monotonic() // 60)
        used = (self._weight_window[1] if self._weight_window[0] == minute else 0) + weight
        self._weight_window = (minute, used)
        self.log.max_weight_per_minute = max(self.log.max_weight_per_minute, used)
        return {"X-MBX-USED-WEIGHT-1M": str(used)}

    def _refused(self) -> web.Response | None:
        remaining = self._banned_until_s - time.monotonic()
        if remaining > 0:
            self.log.rate_limit_violations += 1
            return web.json_response({"code": -1003, "msg": "Way too much request weight used; IP banned"},
                                     status=418, headers={"Retry-After": str(int(remaining) + 1)})
        return None

    async def _time(self, request: web.Request) -> web.Response:
        return self._refused() or web.json_response({"serverTime": self.now_ms()}, headers=self._weigh(1))

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = [{"symbol": s, "status": "TRADING", "quoteAsset": "USDT", "baseAsset": s[:-4],
                    **({"contractType": "PERPETUAL"} if self.market == "futures" else {})} for s in self.candles]
        return self._refused() or web.json_response({"timezone": "UTC", "serverTime": self.now_ms(),
                                                     "symbols": symbols}, headers=self._weigh(1))

    async def _klines(self, request: web.Request) -> web.Response:
        refused = self._refused()
        if refused is not None:
            return refused
        self.log.klines_requests += 1
        if self.log.klines_requests in self.faults.rate_limit_requests:
            self.log.rate_limited += 1
            self._banned_until_s = time.monotonic() + self.faults.retry_after_s
            return web.json_response({"code": -1003, "msg": "Too many requests"}, status=429,
                                     headers={"Retry-After": str(self.faults.retry_after_s)})
        if self.klines_delay_s:
            await asyncio.sleep(self.klines_delay_s)
        query = request.query
        symbol = query.get("symbol", "")
        if symbol not in self.candles or query.get("interval") != "1h":
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        limit = int(query.get("limit", "500"))
        start, end, now = int(query.get("startTime", 0)), int(query.get("endTime", 2**62)), self.now_ms()
        rows = []
        for t in sorted(self.candles[symbol]):
            if start <= t <= end and t <= now and len(rows) < limit:
                o, h, l, c, v = self._values(symbol, t, now)
                rows.append([t, repr(o), repr(h), repr(l), repr(c), repr(v), t + HOUR_MS - 1, "0", 0, "0", "0", "0"])
        weight = 2 if self.market == "spot" else (1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10)
        return web.json_response(rows, headers=self._weigh(weight))

    def _values(self, symbol: str, open_ms: int, now_ms: int) -> tuple[float, float, float, float, float]:
        """The candle at ``now_ms``: final once closed, else partial (inside the final range, as replay does)."""
        _, o, h, l, c, v = self.candles[symbol][open_ms]
        if now_ms >= open_ms + HOUR_MS:
            return o, h, l, c, v
        share = max(0.0, min(1.0, (now_ms - open_ms) / HOUR_MS))
        price = o + share * (c - o)
        return o, min(h, max(o, price)), max(l, min(o, price)), price, v * share

    # ------------------------------------------------------------------ WebSocket

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if self.now_ms() < self._refuse_until_ms:
            self.log.refused_connections += 1
            return web.Response(status=503, text="maintenance")
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s)
        await ws.prepare(request)
        routed = self.market == "spot" or request.path.startswith("/market/")
        conn = Connection(len(self.log.connections) + 1, request.path, self.now_ms(), ws, request)
        self.log.connections.append(conn)
        pusher = asyncio.create_task(self._push(conn)) if routed else None
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                conn.incoming_at_s.append(time.monotonic())
                asked = orjson.loads(message.data)
                if asked.get("method") == "SUBSCRIBE":
                    last_closed = (self.now_ms() // HOUR_MS) * HOUR_MS - HOUR_MS
                    for stream in asked.get("params", []):
                        conn.streams.add(stream)
                        conn.sent_closed.setdefault(stream.split("@")[0].upper(), last_closed)
                    await ws.send_bytes(orjson.dumps({"result": None, "id": asked.get("id")}))
        finally:
            if pusher is not None:
                pusher.cancel()
            self._closed(conn, conn.closed_by or "client")
        return ws

    def _closed(self, conn: Connection, by: str) -> None:
        if conn.closed_at_ms is not None:
            return
        conn.closed_at_ms, conn.closed_by = self.now_ms(), by
        conn.successor_ready = any(other is not conn and other.closed_at_ms is None and other.opened_at_ms <= conn.closed_at_ms
                                   and conn.streams <= other.streams for other in self.log.connections)

    async def _push(self, conn: Connection) -> None:
        late: list[bytes] = []
        held: list[bytes] = []
        while not conn.ws.closed:
            now = self.now_ms()
            forming = (now // HOUR_MS) * HOUR_MS
            out: list[bytes] = []
            for stream in sorted(conn.streams):
                symbol = stream.split("@")[0].upper()
                rows = self.candles.get(symbol, {})
                for t in range(conn.sent_closed[symbol] + HOUR_MS, forming, HOUR_MS):
                    conn.sent_closed[symbol] = t
                    if t not in rows:
                        continue  # the exchange's own gap: nothing is sent
                    count = self._close_counts[f"{conn.number}/{symbol}"] = self._close_counts.get(f"{conn.number}/{symbol}", 0) + 1
                    event = self._event(stream, symbol, t, now, closed=True)
                    copies = 2 if self.faults.duplicate_every and count % self.faults.duplicate_every == 0 else 1
                    if self.faults.late_every and count % self.faults.late_every == 0:
                        late.extend([event] * copies)
                    else:
                        out.extend([event] * copies)
                if forming in rows:
                    out.append(self._event(stream, symbol, forming, now, closed=False))
            out.extend(held)  # last tick's late closes, after this tick's updates of the next candle
            held, late = late, []
            try:
                for event in out:
                    await conn.ws.send_bytes(event)
            except (ConnectionResetError, RuntimeError):
                return
            sent_s = time.time()
            for event in out:
                if b'"x":true' in event:
                    k = orjson.loads(event)["data"]["k"]
                    self.log.closed_sent_wall_s.setdefault((k["s"], k["t"]), sent_s)
            await asyncio.sleep(self.tick_s)

    def _event(self, stream: str, symbol: str, open_ms: int, now_ms: int, closed: bool) -> bytes:
        o, h, l, c, v = self._values(symbol, open_ms, open_ms + HOUR_MS if closed else now_ms)
        self.log.kline_events += 1
        self.log.closed_events += closed
        data = {"e": "kline", "E": now_ms, "s": symbol,
                "k": {"t": open_ms, "T": open_ms + HOUR_MS - 1, "s": symbol, "i": "1h", "f": 1, "L": 2,
                      "o": repr(o), "c": repr(c), "h": repr(h), "l": repr(l), "v": repr(v), "n": 2, "x": closed,
                      "q": "0", "V": "0", "Q": "0", "B": "0"}}
        return orjson.dumps({"stream": stream, "data": data})

    # ------------------------------------------------------------------ scripted faults

    async def _faults_loop(self) -> None:
        disconnects = sorted(self.faults.disconnect_at_h)
        shutdowns = sorted(self.faults.shutdown_at_h)
        while True:
            now = self.now_ms()
            hours = (now - self.start_ms) / HOUR_MS
            open_conns = [c for c in self.log.connections if c.closed_at_ms is None and not c.ws.closed]
            # A fault waits for a subscribed connection to hit: on loaded cores the client may connect late.
            subscribed = any(c.streams for c in open_conns)
            if disconnects and hours >= disconnects[0] and subscribed:
                disconnects.pop(0)
                self._refuse_until_ms = now + int(self.faults.down_for_h * HOUR_MS)
                for conn in open_conns:
                    self._closed(conn, "disconnect")
                    transport = conn.request.transport
                    if transport is not None:
                        transport.abort()  # no close frame: the client sees the connection drop
                    else:
                        await conn.ws.close(code=1011)
            elif shutdowns and hours >= shutdowns[0] and subscribed:
                shutdowns.pop(0)
                for conn in open_conns:
                    conn.got_shutdown = True
                    conn.close_at_ms = now + int(self.faults.shutdown_grace_h * HOUR_MS)
                    await conn.ws.send_bytes(orjson.dumps({"e": "serverShutdown", "E": now}))
            for conn in open_conns:
                too_old = now - conn.opened_at_ms >= self.faults.max_connection_age_h * HOUR_MS
                if too_old or (conn.close_at_ms is not None and now >= conn.close_at_ms):
                    self._closed(conn, "age" if too_old else "shutdown")
                    await conn.ws.close(code=1001, message=b"going away")
            await asyncio.sleep(self.tick_s)

    # ------------------------------------------------------------------ late publication

    def publish(self, symbol: str, row: Row) -> None:
        """The exchange publishes a candle it lacked (after maintenance): REST answers carry it from now on; the
        streams do not send it again (its hour is over)."""
        self.candles[symbol][row[0]] = row

    # ------------------------------------------------------------------ what the tests compare with

    def closed_candles(self) -> dict[tuple[str, int], Row]:
        """Every candle of the data, keyed by (symbol, open time)."""
        return {(s, t): row for s, rows in self.candles.items() for t, row in rows.items()}

    def gaps(self) -> dict[str, list[int]]:
        """The open times each symbol's data lacks between its first and last candle."""
        found = {}
        for symbol, rows in self.candles.items():
            times = np.array(sorted(rows))
            grid = np.arange(times[0], times[-1] + HOUR_MS, HOUR_MS)
            found[symbol] = sorted(set(grid.tolist()) - set(times.tolist()))
        return found


# ---------------------------------------------------------------------- as a program


def newest_candles(folder: Path, symbols: Sequence[str], hours: int) -> tuple[dict[str, list[Row]], int]:
    """The newest ``hours`` candles that every symbol of ``folder`` (or ``symbols``) has, and the first open time."""
    names = list(symbols) or sorted(p.name.split("-")[0] for p in folder.glob("*-1h.csv.gz"))
    if not names:
        raise SystemExit(f"no SYMBOL-1h.csv.gz files in {folder}")
    newest = min(int(series.open_time_ms[-1]) for series in read_candle_files([folder / f"{s}-1h.csv.gz" for s in names]))
    first = newest - (hours - 1) * HOUR_MS
    return candles_from_files(folder, names, first, hours), first


async def _serve(args: argparse.Namespace) -> None:
    candles, first = newest_candles(Path(args.data), [s.strip().upper() for s in args.symbols.split(",") if s.strip()],
                                    args.last_hours)
    sim = ExchangeSim(candles, market=args.market, start_ms=first + args.history_hours * HOUR_MS + 1,
                      hour_s=args.hour_seconds, tick_s=args.tick_seconds, heartbeat_s=args.heartbeat_seconds,
                      faults=Faults(max_connection_age_h=24.0))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.start(args.host, args.port)
    print(json.dumps({"rest_url": sim.rest_url, "ws_url": sim.ws_url, "market": sim.market, "start_ms": sim.start_ms,
                      "hour_s": sim.hour_s, "started_wall_s": sim.started_wall_s, "symbols": sorted(candles),
                      "last_close_ms": sim.last_close_ms}), flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
    print(f"exchange simulator stopped: {sim.log.closed_events} closed klines sent, {sim.log.klines_requests} klines "
          f"requests, {len(sim.log.connections)} connections", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.exchange_sim",
                                     description="A local Binance (REST and WebSocket klines) on a fast clock.")
    parser.add_argument("--data", required=True, help="a folder of SYMBOL-1h.csv.gz files")
    parser.add_argument("--symbols", default="", help="comma-separated; default: every file of --data")
    parser.add_argument("--market", choices=("spot", "futures"), default="futures")
    parser.add_argument("--last-hours", type=int, default=240, help="serve the newest this many candles")
    parser.add_argument("--history-hours", type=int, default=200,
                        help="of those, already closed at the start (REST only); the rest close live")
    parser.add_argument("--hour-seconds", type=float, default=2.0, help="real seconds per exchange hour")
    parser.add_argument("--tick-seconds", type=float, default=0.25, help="in-progress kline events this often")
    parser.add_argument("--heartbeat-seconds", type=float, default=5.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    if not 0 <= args.history_hours < args.last_hours:
        parser.error("--history-hours must be below --last-hours")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
