"""A symbol's Redis keys: their common hash-tagged name, when they expire and how often a store renews that."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["EXPIRY_REFRESH_WRITES", "DEFAULT_EXPIRE_AFTER_MS", "SymbolKeyStore"]

EXPIRY_REFRESH_WRITES = 24
"""A symbol's keys get their expiry again every this many closed writes (a day of hourly candles):
renewing on every write cost about 20 us a candle."""

DEFAULT_EXPIRE_AFTER_MS = 720 * 3_600_000
"""A symbol's keys expire this long after its last write, unless the store is told otherwise."""


class SymbolKeyStore:
    """A Redis store that keeps state per (symbol, timeframe) under :meth:`_symbol_key`: hash-tagged, so
    every store's keys of one symbol share a cluster slot, and expiring about ``expire_after_ms`` after
    the symbol's last write."""

    def __init__(self, client: aioredis.Redis, key_prefix: str = "",
                 expire_after_ms: int = DEFAULT_EXPIRE_AFTER_MS) -> None:
        self._client = client
        self._prefix = key_prefix
        self._expire_ms = expire_after_ms

    def _symbol_key(self, symbol: str, timeframe: str) -> str:
        """The part every key of the symbol starts with."""
        return f"{self._prefix}bse:{{{symbol}:{timeframe}}}"
