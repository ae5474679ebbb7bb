"""Pending outcomes: the Redis store and an in-memory twin, run through one contract suite.

Layout per (symbol, timeframe), hash-tagged like the window store (both are a
:class:`~bse_predict.connections.key_expiry.SymbolKeyStore`) so one
symbol's keys share a cluster slot:

- ``…:outcomes:pending`` hash, field = :attr:`PendingOutcome.key`, value = its JSON.
- ``…:outcomes:settled`` sorted set, score = the prediction's open_time, member =
  the key of a settled pending outcome. A prediction registered again after it
  was settled (a replayed candle after a crash) is refused, so a replay never
  publishes a second, different answer. It is trimmed to ``retain_ms`` before
  the newest settled prediction.
- ``…:outcomes:generation`` a counter bumped by every change from any worker;
  a store keeps an in-process copy of each symbol's pending outcomes and reads
  them again only when the generation says someone else changed them.

Each symbol's keys expire about ``expire_after_ms`` after its last change (the
expiry set when they are created and renewed every 24th change) (a symbol that
stopped: the pending outcomes of predictions that can never settle go with them).
Registering is idempotent (``HSETNX`` behind the settled check, one Lua call per
batch); settling removes from ``pending`` and adds to ``settled`` atomically.
The worker settles only after the outcomes were acknowledged by Kafka, so a
crash in between re-publishes the same outcome (same content), never loses one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import orjson
import redis.asyncio as aioredis

from bse_predict.monitoring.outcomes import PendingBook, PendingOutcome
from bse_predict.connections.key_expiry import DEFAULT_EXPIRE_AFTER_MS, EXPIRY_REFRESH_WRITES, SymbolKeyStore

__all__ = ["SymbolKey", "OutcomeStore", "RedisOutcomeStore", "MemoryOutcomeStore"]

SymbolKey = tuple[str, str]
"""(symbol, timeframe)"""

# KEYS per symbol: pending, settled, generation (in that order); ARGV: the symbol count, then per
# symbol its item count and the items. Returns per symbol {generation before, generation after,
# one 0/1 "added" flag per item}. The generation moves with every change, from any worker: it
# tells a worker whether its in-process copy of a symbol's pending outcomes is still current.
_REGISTER = """
local groups = cjson.decode(ARGV[1])
local out = {}
for s, items in ipairs(groups) do
  local pending, settled, generation = KEYS[3 * s - 2], KEYS[3 * s - 1], KEYS[3 * s]
  local before = tonumber(redis.call('GET', generation) or '0')
  local flags = {before, before}
  local added = 0
  for i = 1, #items / 2 do
    local key, value = items[2 * i - 1], items[2 * i]
    local flag = 0
    if not redis.call('ZSCORE', settled, key) then flag = redis.call('HSETNX', pending, key, value) end
    added = added + flag
    flags[2 + i] = flag
  end
  if added > 0 then flags[2] = redis.call('INCR', generation) end
  if added > 0 and flags[2] % tonumber(ARGV[#ARGV - 1]) == 1 then
    for _, key in ipairs({pending, settled, generation}) do redis.call('PEXPIRE', key, ARGV[#ARGV]) end
  end
  out[s] = flags
end
return out
"""

# KEYS as for _REGISTER; ARGV: retain_ms, the symbol count, then per symbol its item count and
# (key, open_time) pairs. Returns per symbol {generation before, generation after}.
_SETTLE = """
local retain_ms = tonumber(ARGV[1])
local out = {}
for s, items in ipairs(cjson.decode(ARGV[2])) do
  local pending, settled, generation = KEYS[3 * s - 2], KEYS[3 * s - 1], KEYS[3 * s]
  local before = tonumber(redis.call('GET', generation) or '0')
  local n = #items / 2
  for i = 1, n do
    redis.call('HDEL', pending, items[2 * i - 1])
    redis.call('ZADD', settled, items[2 * i], items[2 * i - 1])
  end
  local newest = redis.call('ZREVRANGE', settled, 0, 0, 'WITHSCORES')
  redis.call('ZREMRANGEBYSCORE', settled, '-inf', '(' .. tostring(tonumber(newest[2]) - retain_ms))
  local after = redis.call('INCR', generation)
  if after % tonumber(ARGV[#ARGV - 1]) == 1 or redis.call('ZCARD', settled) == n then
    for _, key in ipairs({pending, settled, generation}) do redis.call('PEXPIRE', key, ARGV[#ARGV]) end
  end
  out[s] = {before, after}
end
return out
"""

_READ = """
local out = {}
for s = 1, #KEYS / 2 do
  out[s] = {tonumber(redis.call('GET', KEYS[2 * s]) or '0'), redis.call('HVALS', KEYS[2 * s - 1])}
end
return out
"""


class OutcomeStore(Protocol):
    async def register(self, items: Sequence[PendingOutcome]) -> int:
        """Add pending outcomes not seen before; returns how many were new."""

    async def pending(self, symbols: Sequence[SymbolKey]) -> dict[SymbolKey, PendingBook]:
        """Every pending outcome of these symbols (read-only: change them with register and settle)."""

    async def settle(self, items: Sequence[PendingOutcome]) -> None:
        """Remove these from pending; registering them again is refused from now on."""


class RedisOutcomeStore(SymbolKeyStore):
    """The production store; see the module docstring.

    It keeps an in-process copy of each symbol's pending outcomes with the
    Redis generation it matches, so a batch costs one ``GET`` per symbol
    instead of reading and parsing every pending outcome (none for the symbols
    whose generation the batch's register call just returned); the copy is read
    again only when someone else changed the symbol (a restart, a rebalance).
    """

    def __init__(self, client: aioredis.Redis, retain_ms: int, key_prefix: str = "",
                 expire_after_ms: int = DEFAULT_EXPIRE_AFTER_MS) -> None:
        super().__init__(client, key_prefix, expire_after_ms)
        self._retain_ms = retain_ms
        self._register = client.register_script(_REGISTER)
        self._settle = client.register_script(_SETTLE)
        self._read = client.register_script(_READ)
        self._cache: dict[SymbolKey, tuple[int, PendingBook]] = {}
        # The generations the last register call returned: current as of that call, so the pending read
        # that follows it in a batch needs no GET for those symbols.
        self._registered_generations: dict[SymbolKey, int] = {}

    def _keys(self, symbol: str, timeframe: str) -> tuple[str, str, str]:
        base = f"{self._symbol_key(symbol, timeframe)}:outcomes"
        return f"{base}:pending", f"{base}:settled", f"{base}:generation"

    def _follow(self, key: SymbolKey, before: int, after: int, change: Callable[[PendingBook], None]) -> None:
        """Apply our own change to the cached copy when it was current before it; else forget the copy."""
        cached = self._cache.get(key)
        if cached is not None and cached[0] == before:
            change(cached[1])
            self._cache[key] = (after, cached[1])
        else:
            self._cache.pop(key, None)

    async def register(self, items: Sequence[PendingOutcome]) -> int:
        self._registered_generations = {}
        groups = _by_symbol(items)
        if not groups:
            return 0
        keys = [k for symbol, timeframe in groups for k in self._keys(symbol, timeframe)]
        # one JSON argument, not two per item: redis-py packs each argument in Python, which cost more than the script
        items = orjson.dumps([[v for item in group for v in (item.key, item.model_dump_json())] for group in groups.values()])
        replies = await self._register(keys=keys, args=[items, EXPIRY_REFRESH_WRITES, self._expire_ms])
        added = 0
        for (key, group), (before, after, *flags) in zip(groups.items(), replies, strict=True):
            new = [item for item, flag in zip(group, flags, strict=True) if flag]
            added += len(new)
            self._follow(key, int(before), int(after), lambda book, new=new: book.add(new))
            self._registered_generations[key] = int(after)
        return added

    async def pending(self, symbols: Sequence[SymbolKey]) -> dict[SymbolKey, PendingBook]:
        if not symbols:
            return {}
        known, self._registered_generations = self._registered_generations, {}
        generations = {key: known[key] for key in symbols if key in known}
        unknown = [key for key in symbols if key not in known]
        if unknown:
            async with self._client.pipeline(transaction=False) as pipe:
                for symbol, timeframe in unknown:
                    pipe.get(self._keys(symbol, timeframe)[2])
                generations.update(zip(unknown, (int(g or 0) for g in await pipe.execute()), strict=True))
        stale = [key for key in symbols if key not in self._cache or self._cache[key][0] != generations[key]]
        if stale:
            keys = [k for symbol, timeframe in stale for k in self._keys(symbol, timeframe)[::2]]
            for key, (generation, values) in zip(stale, await self._read(keys=keys), strict=True):
                self._cache[key] = (int(generation), PendingBook(PendingOutcome.model_validate_json(v) for v in values))
        return {key: self._cache[key][1] for key in symbols}

    async def settle(self, items: Sequence[PendingOutcome]) -> None:
        groups = _by_symbol(items)
        if not groups:
            return
        keys = [k for symbol, timeframe in groups for k in self._keys(symbol, timeframe)]
        items = orjson.dumps([[v for item in group for v in (item.key, str(item.open_time))] for group in groups.values()])
        replies = await self._settle(keys=keys, args=[self._retain_ms, items, EXPIRY_REFRESH_WRITES, self._expire_ms])
        for (key, group), (before, after) in zip(groups.items(), replies, strict=True):
            gone = [item.key for item in group]
            self._follow(key, int(before), int(after), lambda book, gone=gone: book.remove(gone))


def _by_symbol(items: Sequence[PendingOutcome]) -> dict[SymbolKey, list[PendingOutcome]]:
    groups: dict[SymbolKey, list[PendingOutcome]] = {}
    for item in items:
        groups.setdefault((item.symbol, item.timeframe), []).append(item)
    return groups


class MemoryOutcomeStore:
    """The same semantics in process memory, for unit tests; the contract suite runs both."""

    def __init__(self, retain_ms: int) -> None:
        self._retain_ms = retain_ms
        self._pending: dict[SymbolKey, PendingBook] = {}
        self._settled: dict[SymbolKey, dict[str, int]] = {}

    async def register(self, items: Sequence[PendingOutcome]) -> int:
        added = 0
        for key, group in _by_symbol(items).items():
            book = self._pending.setdefault(key, PendingBook())
            before = len(book)
            book.add(item for item in group if item.key not in self._settled.get(key, {}))
            added += len(book) - before
        return added

    async def pending(self, symbols: Sequence[SymbolKey]) -> dict[SymbolKey, PendingBook]:
        return {key: self._pending.setdefault(key, PendingBook()) for key in symbols}

    async def settle(self, items: Sequence[PendingOutcome]) -> None:
        for key, group in _by_symbol(items).items():
            self._pending.setdefault(key, PendingBook()).remove(item.key for item in group)
            settled = self._settled.setdefault(key, {})
            settled.update((item.key, item.open_time) for item in group)
            cutoff = max(settled.values()) - self._retain_ms
            for member in [m for m, t in settled.items() if t < cutoff]:
                del settled[member]
