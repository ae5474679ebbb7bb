"""Per-symbol candle windows: the Redis store and an in-memory twin for unit tests.

Layout per (symbol, timeframe), keys hash-tagged so one symbol stays in one
cluster slot:

- ``…:win``   sorted set, score = open_time, member = the packed candle
  (``<q5d``: open_time, open, high, low, close, volume). Writing a closed
  candle first removes any member with the same score, so duplicates and
  corrections replace instead of piling up; the set is trimmed to the newest
  ``retain`` candles. Its content is therefore "the newest ``retain`` candles
  by open_time among all seen", whatever order they arrived in.
- ``…:forming`` hash {t, c}: the latest in-progress update, kept only while it
  is newer than every closed candle.
- ``…:predicted`` sorted set of open_times whose prediction was published;
  a redelivered candle is not predicted twice.

All writes of one candle happen in one Lua script (atomic); a batch of
candles is one pipelined round trip.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis.asyncio as aioredis

from models.schema import Candle

__all__ = ["ClosedWrite", "WindowStore", "RedisWindowStore", "MemoryWindowStore", "pack_candle", "unpack_candles"]

_PACKED = struct.Struct("<q5d")
_PACKED_DTYPE = np.dtype([("t", "<i8"), ("ohlcv", "<f8", (5,))])

_WRITE_CLOSED = """
local t = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], t, t)
redis.call('ZADD', KEYS[1], t, ARGV[2])
local n = redis.call('ZCARD', KEYS[1])
local retain = tonumber(ARGV[3])
if n > retain then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - retain - 1) end
local ft = redis.call('HGET', KEYS[2], 't')
if ft and tonumber(ft) <= t then redis.call('DEL', KEYS[2]) end
local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], t, '-inf', 'LIMIT', 0, tonumber(ARGV[4]))
local done = redis.call('ZSCORE', KEYS[3], t)
if done then return {rows, 1} end
return {rows, 0}
"""

_WRITE_FORMING = """
local t = tonumber(ARGV[1])
local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= t then return 0 end
local ft = redis.call('HGET', KEYS[2], 't')
if ft and tonumber(ft) > t then return 0 end
redis.call('HSET', KEYS[2], 't', ARGV[1], 'c', ARGV[2])
return 1
"""

_MARK_PREDICTED = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local retain = tonumber(ARGV[2])
if n > retain then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - retain - 1) end
return n
"""


def pack_candle(candle: Candle) -> bytes:
    return _PACKED.pack(candle.open_time, candle.open, candle.high, candle.low, candle.close, candle.volume)


def unpack_candles(members: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Packed members in any order -> (open_time int64[n], ohlcv float64[n,5]) sorted by time."""
    if not members:
        return np.empty(0, dtype=np.int64), np.empty((0, 5), dtype=np.float64)
    rows = np.frombuffer(b"".join(members), dtype=_PACKED_DTYPE)
    order = np.argsort(rows["t"], kind="stable")
    return rows["t"][order].astype(np.int64), rows["ohlcv"][order].astype(np.float64)


@dataclass(frozen=True)
class ClosedWrite:
    """A closed candle after it was stored, with the history up to it (oldest first)."""

    candle: Candle
    open_time_ms: np.ndarray
    ohlcv: np.ndarray
    already_predicted: bool


class WindowStore(Protocol):
    async def write_closed(self, candles: Sequence[Candle], read_count: int) -> list[ClosedWrite]: ...
    async def write_forming(self, candles: Sequence[Candle]) -> None: ...
    async def mark_predicted(self, candles: Sequence[Candle]) -> None: ...
    async def closed_candles(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]: ...
    async def forming(self, symbol: str, timeframe: str) -> Candle | None: ...


class RedisWindowStore:
    """The production store; see the module docstring for the key layout."""

    def __init__(self, client: aioredis.Redis, retain_candles: int, key_prefix: str = "") -> None:
        self._client = client
        self._retain = retain_candles
        self._prefix = key_prefix
        self._write_closed = client.register_script(_WRITE_CLOSED)
        self._write_forming = client.register_script(_WRITE_FORMING)
        self._mark_predicted = client.register_script(_MARK_PREDICTED)

    def _keys(self, symbol: str, timeframe: str) -> tuple[str, str, str]:
        base = f"{self._prefix}bse:{{{symbol}:{timeframe}}}"
        return f"{base}:win", f"{base}:forming", f"{base}:predicted"

    async def write_closed(self, candles: Sequence[Candle], read_count: int) -> list[ClosedWrite]:
        if not candles:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for candle in candles:
                await self._write_closed(
                    keys=list(self._keys(candle.symbol, candle.timeframe)),
                    args=[candle.open_time, pack_candle(candle), self._retain, read_count],
                    client=pipe,
                )
            replies = await pipe.execute()
        writes = []
        for candle, (rows, done) in zip(candles, replies, strict=True):
            times, ohlcv = unpack_candles(rows)
            writes.append(ClosedWrite(candle, times, ohlcv, bool(done)))
        return writes

    async def write_forming(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for candle in candles:
                win, forming, _ = self._keys(candle.symbol, candle.timeframe)
                await self._write_forming(keys=[win, forming], args=[candle.open_time, pack_candle(candle)], client=pipe)
            await pipe.execute()

    async def mark_predicted(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for candle in candles:
                _, _, predicted = self._keys(candle.symbol, candle.timeframe)
                await self._mark_predicted(keys=[predicted], args=[candle.open_time, self._retain], client=pipe)
            await pipe.execute()

    async def closed_candles(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
        win, _, _ = self._keys(symbol, timeframe)
        return unpack_candles(await self._client.zrange(win, 0, -1))

    async def forming(self, symbol: str, timeframe: str) -> Candle | None:
        _, forming, _ = self._keys(symbol, timeframe)
        packed = await self._client.hget(forming, "c")
        if packed is None:
            return None
        times, ohlcv = unpack_candles([packed])
        o, h, l, c, v = (float(x) for x in ohlcv[0])
        return Candle(symbol=symbol, timeframe=timeframe, open_time=int(times[0]),
                      open=o, high=h, low=l, close=c, volume=v, closed=False)


class MemoryWindowStore:
    """The same semantics in process memory, for unit tests; the contract suite runs both."""

    def __init__(self, retain_candles: int) -> None:
        self._retain = retain_candles
        self._closed: dict[tuple[str, str], dict[int, Candle]] = {}
        self._forming: dict[tuple[str, str], Candle] = {}
        self._predicted: dict[tuple[str, str], set[int]] = {}

    def _trim(self, stored: dict[int, object]) -> None:
        for open_time in sorted(stored)[: max(0, len(stored) - self._retain)]:
            del stored[open_time]

    async def write_closed(self, candles: Sequence[Candle], read_count: int) -> list[ClosedWrite]:
        writes = []
        for candle in candles:
            key = (candle.symbol, candle.timeframe)
            stored = self._closed.setdefault(key, {})
            stored[candle.open_time] = candle
            self._trim(stored)
            forming = self._forming.get(key)
            if forming is not None and forming.open_time <= candle.open_time:
                del self._forming[key]
            upto = sorted(t for t in stored if t <= candle.open_time)[-read_count:]
            times = np.array(upto, dtype=np.int64)
            ohlcv = np.array([[stored[t].open, stored[t].high, stored[t].low, stored[t].close, stored[t].volume] for t in upto],
                             dtype=np.float64).reshape(-1, 5)
            done = candle.open_time in self._predicted.get(key, set())
            writes.append(ClosedWrite(candle, times, ohlcv, done))
        return writes

    async def write_forming(self, candles: Sequence[Candle]) -> None:
        for candle in candles:
            key = (candle.symbol, candle.timeframe)
            stored = self._closed.get(key, {})
            if stored and max(stored) >= candle.open_time:
                continue
            current = self._forming.get(key)
            if current is not None and current.open_time > candle.open_time:
                continue
            self._forming[key] = candle

    async def mark_predicted(self, candles: Sequence[Candle]) -> None:
        for candle in candles:
            marks = self._predicted.setdefault((candle.symbol, candle.timeframe), set())
            marks.add(candle.open_time)
            for open_time in sorted(marks)[: max(0, len(marks) - self._retain)]:
                marks.discard(open_time)

    async def closed_candles(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
        stored = self._closed.get((symbol, timeframe), {})
        return unpack_candles([pack_candle(stored[t]) for t in sorted(stored)])

    async def forming(self, symbol: str, timeframe: str) -> Candle | None:
        return self._forming.get((symbol, timeframe))
