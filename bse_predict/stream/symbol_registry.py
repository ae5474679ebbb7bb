"""Which symbols the fleet serves: an optional allowlist and a cap, so a flood of names stays bounded.

Every symbol costs Redis keys and in-process state. With ``candles.symbols``
set, only those are served; in any case at most ``worker.max_symbols``
different symbols are admitted fleet-wide: a Redis sorted set holds each
admitted symbol with its last-seen time, a symbol silent for
``window.silent_expire_hours`` gives its place back, and a candle of a symbol
that finds no place becomes a dead letter (``symbol_cap``) with the reason.
One script call per batch admits the batch's new symbols atomically, so two
workers can never admit past the cap together; it is safe to run twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import redis.asyncio as aioredis

__all__ = ["SymbolRegistry", "RedisSymbolRegistry", "MemorySymbolRegistry"]

# KEYS[1]: the sorted set; ARGV: cap, now_ms, forget_before_ms, then the symbols. Returns the admitted ones.
_ADMIT = """
local cap, now = tonumber(ARGV[1]), ARGV[2]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local admitted = {}
for i = 4, #ARGV do
  local symbol = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], symbol) or redis.call('ZCARD', KEYS[1]) < cap then
    redis.call('ZADD', KEYS[1], now, symbol)
    admitted[#admitted + 1] = symbol
  end
end
return admitted
"""

_SEEN_REFRESH_MS = 3_600_000


class SymbolRegistry(Protocol):
    async def admit(self, symbols: Iterable[str], now_ms: int) -> set[str]:
        """The subset of ``symbols`` the fleet serves; the rest are refused (the cap is full)."""


class RedisSymbolRegistry:
    """See the module docstring. Symbols admitted by this process are remembered here and their
    last-seen time sent again at most hourly, so a steady fleet costs one call per new symbol."""

    def __init__(self, client: aioredis.Redis, max_symbols: int, forget_after_ms: int, key_prefix: str = "") -> None:
        self._script = client.register_script(_ADMIT)
        self._key = f"{key_prefix}bse:symbols"
        self._cap = max_symbols
        self._forget_after_ms = forget_after_ms
        self._seen_ms: dict[str, int] = {}

    async def admit(self, symbols: Iterable[str], now_ms: int) -> set[str]:
        wanted = set(symbols)
        ask = sorted(s for s in wanted if now_ms - self._seen_ms.get(s, -_SEEN_REFRESH_MS) >= _SEEN_REFRESH_MS)
        admitted = wanted - set(ask)
        if ask:
            reply = await self._script(keys=[self._key], args=[self._cap, now_ms, now_ms - self._forget_after_ms, *ask])
            for symbol in (s.decode() if isinstance(s, bytes) else s for s in reply):
                self._seen_ms[symbol] = now_ms
                admitted.add(symbol)
            for symbol in set(ask) - admitted:
                self._seen_ms.pop(symbol, None)
            if len(self._seen_ms) > self._cap:  # forget here what Redis forgot: symbols silent for long
                self._seen_ms = {s: t for s, t in self._seen_ms.items() if now_ms - t < self._forget_after_ms}
        return admitted


class MemorySymbolRegistry:
    """The same rule in one process (unit tests)."""

    def __init__(self, max_symbols: int) -> None:
        self._cap = max_symbols
        self._known: set[str] = set()

    async def admit(self, symbols: Iterable[str], now_ms: int) -> set[str]:
        admitted = set()
        for symbol in sorted(set(symbols)):
            if symbol in self._known or len(self._known) < self._cap:
                self._known.add(symbol)
                admitted.add(symbol)
        return admitted
