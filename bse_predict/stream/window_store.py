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
- ``…:generation`` a counter bumped by every closed write, from any worker:
  it tells a worker whether its in-process copy of the window is current.

Every key expires about ``expire_after_ms`` after the symbol's last write
(``window.silent_expire_hours``; renewed every :data:`~bse_predict.connections.key_expiry.EXPIRY_REFRESH_WRITES`
writes): a symbol that stops costs nothing for long.

A whole batch is one Lua script call (atomic, one round trip). A window
travels back only when the worker's copy is stale, as one blob of fixed-size
records: per-candle reads of hundreds of separate replies cost more than
everything else the worker does (docs/performance.md).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis.asyncio as aioredis

from bse_predict.candles.plausibility import LastClose
from bse_predict.candles.schema import Candle
from bse_predict.connections.key_expiry import DEFAULT_EXPIRE_AFTER_MS, EXPIRY_REFRESH_WRITES, SymbolKeyStore

__all__ = ["ClosedWrite", "WindowStore", "RedisWindowStore", "MemoryWindowStore", "pack_candle", "unpack_candles"]

_PACKED = struct.Struct("<q5d")
_PACKED_DTYPE = np.dtype([("t", "<i8"), ("ohlcv", "<f8", (5,))])

# One call per batch. First the predicted marks of the previous batch, then
# each closed candle: replace by open_time, trim, drop an older forming
# candle, bump the symbol's generation. The keys expire after the last ARGV
# (ms) without a write (a symbol that went silent): the expiry is set when a
# key is created and renewed every EXPIRY_REFRESH_WRITES-th write (the ARGV
# before it), not on every write, which cost 20 us a candle. The window comes back only when the
# caller's cached copy cannot be extended by this candle alone. The copy is
# good when the caller's generation equals the one before this write (for a
# symbol's first candle in the batch) or when the symbol's previous candle in
# this batch was in order (the caller then just refreshed its copy).
_WRITE_BATCH = """
local retain = tonumber(ARGV[1])
local read_count = tonumber(ARGV[2])
local marks = tonumber(ARGV[3])
local candles = tonumber(ARGV[4])
local ttl_ms = ARGV[#ARGV]
local refresh_every = tonumber(ARGV[#ARGV - 1])
for i = 1, marks do
  local key = KEYS[i]
  local t = ARGV[4 + i]
  redis.call('ZADD', key, t, t)
  local n = redis.call('ZCARD', key)
  if n > retain then redis.call('ZREMRANGEBYRANK', key, 0, n - retain - 1) end
  if n == 1 then redis.call('PEXPIRE', key, ttl_ms) end
end
local out = {}
local cache_valid = {}
for i = 1, candles do
  local k = marks + (i - 1) * 4
  local a = 4 + marks + (i - 1) * 3
  local win, forming, predicted, generation = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local t = tonumber(ARGV[a + 1])
  local newest = redis.call('ZREVRANGE', win, 0, 0, 'WITHSCORES')
  local in_order = (newest[2] == nil) or (tonumber(newest[2]) < t)
  local before = redis.call('GET', generation) or '0'
  redis.call('ZREMRANGEBYSCORE', win, t, t)
  redis.call('ZADD', win, t, ARGV[a + 2])
  local n = redis.call('ZCARD', win)
  if n > retain then redis.call('ZREMRANGEBYRANK', win, 0, n - retain - 1) end
  local ft = redis.call('HGET', forming, 't')
  if ft and tonumber(ft) <= t then redis.call('DEL', forming) end
  local after = redis.call('INCR', generation)
  if after % refresh_every == 1 then
    for _, key in ipairs({win, forming, predicted, generation}) do redis.call('PEXPIRE', key, ttl_ms) end
  end
  local done = 0
  if redis.call('ZSCORE', predicted, t) then done = 1 end
  local order = 0
  if in_order then order = 1 end
  local valid = cache_valid[generation]
  if valid == nil then valid = (before == ARGV[a + 3]) end
  cache_valid[generation] = in_order
  if in_order and valid then
    out[i] = {done, after, order, false}
  else
    local rows = redis.call('ZREVRANGEBYSCORE', win, t, '-inf', 'LIMIT', 0, read_count)
    out[i] = {done, after, order, table.concat(rows)}
  end
end
return out
"""

_WRITE_FORMING = """
local t = tonumber(ARGV[1])
local last = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= t then return 0 end
local ft = redis.call('HGET', KEYS[2], 't')
if ft and tonumber(ft) > t then return 0 end
if redis.call('HSET', KEYS[2], 't', ARGV[1], 'c', ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1
"""



def pack_candle(candle: Candle) -> bytes:
    return _PACKED.pack(candle.open_time, candle.open, candle.high, candle.low, candle.close, candle.volume)


def unpack_candles(packed: bytes | Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Packed candles (one blob or a list of members), any order -> (open_time int64[n],
    ohlcv float64[n,5]) sorted by time."""
    blob = packed if isinstance(packed, bytes) else b"".join(packed)
    if not blob:
        return np.empty(0, dtype=np.int64), np.empty((0, 5), dtype=np.float64)
    rows = np.frombuffer(blob, dtype=_PACKED_DTYPE)
    order = np.argsort(rows["t"], kind="stable")
    return rows["t"][order].astype(np.int64), rows["ohlcv"][order].astype(np.float64)


def _last_close(open_time_ms: np.ndarray, ohlcv: np.ndarray) -> LastClose:
    """The newest candle of a window (in open-time order) with the close of the one before it."""
    previous = float(ohlcv[-2, 3]) if len(open_time_ms) > 1 else None
    return LastClose(int(open_time_ms[-1]), float(ohlcv[-1, 3]), previous)


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
    async def mark_predicted(self, candles: Sequence[Candle]) -> None:
        """Record that these candles' predictions were published; visible to every later write."""
    async def flush(self) -> None: ...
    async def closed_candles(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]: ...
    async def forming(self, symbol: str, timeframe: str) -> Candle | None: ...
    async def last_closes(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], LastClose]:
        """The newest closed candle's open time and close of each (symbol, timeframe) that has one."""


@dataclass
class _CachedWindow:
    generation: int
    open_time_ms: np.ndarray
    ohlcv: np.ndarray


class RedisWindowStore(SymbolKeyStore):
    """The production store; see the module docstring for the key layout.

    It keeps, per symbol, a copy of the newest ``read_count`` candles and the
    Redis generation it matches; Redis sends the window again only when that
    copy is stale (a restart, a rebalance, a late or repeated candle).
    Predicted marks are sent with the next batch's writes, ahead of them: a
    crash in between costs a duplicate prediction (same id), never a lost one.
    """

    def __init__(self, client: aioredis.Redis, retain_candles: int, key_prefix: str = "",
                 expire_after_ms: int = DEFAULT_EXPIRE_AFTER_MS) -> None:
        super().__init__(client, key_prefix, expire_after_ms)
        self._retain = retain_candles
        self._write_batch = client.register_script(_WRITE_BATCH)
        self._write_forming = client.register_script(_WRITE_FORMING)
        self._cache: dict[tuple[str, str], _CachedWindow] = {}
        self._pending_marks: list[Candle] = []

    def _keys(self, symbol: str, timeframe: str) -> tuple[str, str, str, str]:
        base = self._symbol_key(symbol, timeframe)
        return f"{base}:win", f"{base}:forming", f"{base}:predicted", f"{base}:generation"

    async def write_closed(self, candles: Sequence[Candle], read_count: int) -> list[ClosedWrite]:
        marks, self._pending_marks = self._pending_marks, []
        if not candles and not marks:
            return []
        keys: list[str] = [self._keys(c.symbol, c.timeframe)[2] for c in marks]
        args: list[object] = [self._retain, read_count, len(marks), len(candles), *(c.open_time for c in marks)]
        for candle in candles:
            keys.extend(self._keys(candle.symbol, candle.timeframe))
            cached = self._cache.get((candle.symbol, candle.timeframe))
            args.extend((candle.open_time, pack_candle(candle), cached.generation if cached else -1))
        try:
            replies = await self._write_batch(keys=keys, args=[*args, EXPIRY_REFRESH_WRITES, self._expire_ms])
        except BaseException:
            self._pending_marks = marks + self._pending_marks
            raise
        return [self._closed_write(c, r, read_count) for c, r in zip(candles, replies, strict=True)]

    def _closed_write(self, candle: Candle, reply: list[object], read_count: int) -> ClosedWrite:
        done, generation, in_order, blob = reply
        key = (candle.symbol, candle.timeframe)
        cached = self._cache.get(key)
        if blob is None:
            if cached is None:
                raise RuntimeError(f"window cache of {key} lost while Redis says it is current")
            times = np.append(cached.open_time_ms, candle.open_time)[-read_count:]
            ohlcv = np.vstack([cached.ohlcv, [[candle.open, candle.high, candle.low, candle.close, candle.volume]]])
            ohlcv = ohlcv[-read_count:]
        else:
            times, ohlcv = unpack_candles(blob or b"")
        if in_order:
            self._cache[key] = _CachedWindow(int(generation), times, ohlcv)
        else:
            self._cache.pop(key, None)
        return ClosedWrite(candle, times, ohlcv, bool(done))

    async def write_forming(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for candle in candles:
                win, forming, _, _ = self._keys(candle.symbol, candle.timeframe)
                await self._write_forming(keys=[win, forming], args=[candle.open_time, pack_candle(candle), self._expire_ms],
                                         client=pipe)
            await pipe.execute()

    async def mark_predicted(self, candles: Sequence[Candle]) -> None:
        self._pending_marks.extend(candles)

    async def flush(self) -> None:
        """Send predicted marks still waiting for the next batch."""
        await self.write_closed([], read_count=1)

    async def closed_candles(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
        win, _, _, _ = self._keys(symbol, timeframe)
        return unpack_candles(await self._client.zrange(win, 0, -1))

    async def last_closes(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], LastClose]:
        """From this process's copy of a window when it has one (no round trip), else one pipelined read of
        the newest member of each other window. The copy can lag Redis after partitions moved between
        workers; the caller's use (a plausibility bound) tolerates that."""
        found: dict[tuple[str, str], LastClose] = {}
        missing: list[tuple[str, str]] = []
        for key in keys:
            cached = self._cache.get(key)
            if cached is not None and len(cached.open_time_ms):
                found[key] = _last_close(cached.open_time_ms, cached.ohlcv)
            else:
                missing.append(key)
        if missing:
            async with self._client.pipeline(transaction=False) as pipe:
                for symbol, timeframe in missing:
                    pipe.zrange(self._keys(symbol, timeframe)[0], -2, -1)
                replies = await pipe.execute()
            for key, members in zip(missing, replies, strict=True):
                if members:
                    found[key] = _last_close(*unpack_candles(members))
        return found

    async def forming(self, symbol: str, timeframe: str) -> Candle | None:
        _, forming, _, _ = self._keys(symbol, timeframe)
        packed = await self._client.hget(forming, "c")
        if packed is None:
            return None
        times, ohlcv = unpack_candles(packed)
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
        self._newest: dict[tuple[str, str], int] = {}  # open time of each window's newest candle

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
            self._newest[key] = max(self._newest.get(key, candle.open_time), candle.open_time)
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

    async def flush(self) -> None:
        return None

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

    async def last_closes(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], LastClose]:
        return {key: _last_close(*await self.closed_candles(*key)) for key in keys if key in self._newest}
