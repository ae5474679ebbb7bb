"""Pending outcomes: the Redis store and an in-memory twin, run through one contract suite.

Layout per (symbol, timeframe), hash-tagged like the window store so one
symbol's keys share a cluster slot:

- ``…:outcomes:pending`` hash, field = :attr:`PendingOutcome.key`, value = its JSON.
- ``…:outcomes:settled`` sorted set, score = the prediction's open_time, member =
  the key of a settled pending outcome. A prediction registered again after it
  was settled (a replayed candle after a crash) is refused, so a replay never
  publishes a second, different answer. It is trimmed to ``retain_ms`` before
  the newest settled prediction.

Registering is idempotent (``HSETNX`` behind the settled check, one Lua call per
batch); settling removes from ``pending`` and adds to ``settled`` atomically.
The worker settles only after the outcomes were acknowledged by Kafka, so a
crash in between re-publishes the same outcome (same content), never loses one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis

from models.outcomes import PendingOutcome

__all__ = ["SymbolKey", "OutcomeStore", "RedisOutcomeStore", "MemoryOutcomeStore"]

SymbolKey = tuple[str, str]
"""(symbol, timeframe)"""

_REGISTER = """
local n = 0
for i = 1, #ARGV, 2 do
  local k = (i + 1) / 2
  local pending, settled = KEYS[2 * k - 1], KEYS[2 * k]
  if not redis.call('ZSCORE', settled, ARGV[i]) then
    n = n + redis.call('HSETNX', pending, ARGV[i], ARGV[i + 1])
  end
end
return n
"""

_SETTLE = """
local retain_ms = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local k = i / 2
  local pending, settled = KEYS[2 * k - 1], KEYS[2 * k]
  redis.call('HDEL', pending, ARGV[i])
  redis.call('ZADD', settled, ARGV[i + 1], ARGV[i])
  local newest = redis.call('ZREVRANGE', settled, 0, 0, 'WITHSCORES')
  redis.call('ZREMRANGEBYSCORE', settled, '-inf', '(' .. tostring(tonumber(newest[2]) - retain_ms))
end
return 1
"""


class OutcomeStore(Protocol):
    async def register(self, items: Sequence[PendingOutcome]) -> int:
        """Add pending outcomes not seen before; returns how many were new."""

    async def pending(self, symbols: Sequence[SymbolKey]) -> dict[SymbolKey, list[PendingOutcome]]:
        """Every pending outcome of these symbols."""

    async def settle(self, items: Sequence[PendingOutcome]) -> None:
        """Remove these from pending; registering them again is refused from now on."""


class RedisOutcomeStore:
    """The production store; see the module docstring."""

    def __init__(self, client: aioredis.Redis, retain_ms: int, key_prefix: str = "") -> None:
        self._client = client
        self._retain_ms = retain_ms
        self._prefix = key_prefix
        self._register = client.register_script(_REGISTER)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, symbol: str, timeframe: str) -> tuple[str, str]:
        base = f"{self._prefix}bse:{{{symbol}:{timeframe}}}:outcomes"
        return f"{base}:pending", f"{base}:settled"

    async def register(self, items: Sequence[PendingOutcome]) -> int:
        if not items:
            return 0
        keys: list[str] = []
        args: list[str] = []
        for item in items:
            keys.extend(self._keys(item.symbol, item.timeframe))
            args.extend((item.key, item.model_dump_json()))
        return int(await self._register(keys=keys, args=args))

    async def pending(self, symbols: Sequence[SymbolKey]) -> dict[SymbolKey, list[PendingOutcome]]:
        if not symbols:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for symbol, timeframe in symbols:
                pipe.hvals(self._keys(symbol, timeframe)[0])
            replies = await pipe.execute()
        return {key: [PendingOutcome.model_validate_json(v) for v in values]
                for key, values in zip(symbols, replies, strict=True)}

    async def settle(self, items: Sequence[PendingOutcome]) -> None:
        if not items:
            return
        keys: list[str] = []
        args: list[object] = [self._retain_ms]
        for item in items:
            keys.extend(self._keys(item.symbol, item.timeframe))
            args.extend((item.key, item.open_time))
        await self._settle(keys=keys, args=args)


class MemoryOutcomeStore:
    """The same semantics in process memory, for unit tests; the contract suite runs both."""

    def __init__(self, retain_ms: int) -> None:
        self._retain_ms = retain_ms
        self._pending: dict[SymbolKey, dict[str, PendingOutcome]] = {}
        self._settled: dict[SymbolKey, dict[str, int]] = {}

    async def register(self, items: Sequence[PendingOutcome]) -> int:
        added = 0
        for item in items:
            key = (item.symbol, item.timeframe)
            pending = self._pending.setdefault(key, {})
            if item.key in self._settled.get(key, {}) or item.key in pending:
                continue
            pending[item.key] = item
            added += 1
        return added

    async def pending(self, symbols: Sequence[SymbolKey]) -> dict[SymbolKey, list[PendingOutcome]]:
        return {key: list(self._pending.get(key, {}).values()) for key in symbols}

    async def settle(self, items: Sequence[PendingOutcome]) -> None:
        for item in items:
            key = (item.symbol, item.timeframe)
            self._pending.get(key, {}).pop(item.key, None)
            settled = self._settled.setdefault(key, {})
            settled[item.key] = item.open_time
            cutoff = max(settled.values()) - self._retain_ms
            for member in [m for m, t in settled.items() if t < cutoff]:
                del settled[member]
