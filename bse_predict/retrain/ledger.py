"""When the fleet last retrained, in Redis: the minimum interval holds across schedulers and restarts.

One key, ``{prefix}bse:retrain:started``, holding the start time (ISO-8601) and
expiring after ``retrain.min_interval_hours``: while it exists no scheduled or
triggered retrain starts. :meth:`RetrainLedger.claim` sets it only when absent
(``SET NX``: of two schedulers, one wins); a retrain started by hand sets it
unconditionally (:meth:`RetrainLedger.mark`).
"""

from __future__ import annotations

from datetime import datetime

import redis.asyncio as aioredis

from bse_predict.control.messages import format_issued_at

__all__ = ["RetrainLedger"]


class RetrainLedger:
    def __init__(self, client: aioredis.Redis, key_prefix: str, min_interval_hours: float) -> None:
        self._client = client
        self._key = f"{key_prefix}bse:retrain:started"
        self._ttl_s = int(round(min_interval_hours * 3600))

    async def claim(self, now: datetime) -> bool:
        """True when no retrain started within the minimum interval; the start is then recorded."""
        if self._ttl_s <= 0:
            return True
        return bool(await self._client.set(self._key, format_issued_at(now), nx=True, ex=self._ttl_s))

    async def mark(self, now: datetime) -> None:
        """Record a start whatever the interval says (a retrain asked for by hand)."""
        if self._ttl_s > 0:
            await self._client.set(self._key, format_issued_at(now), ex=self._ttl_s)

    async def last_started(self) -> str | None:
        """The recorded start, while it is inside the interval."""
        raw = await self._client.get(self._key)
        return raw.decode() if isinstance(raw, bytes) else raw
