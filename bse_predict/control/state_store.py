"""The applied control state in Redis: read it, follow its revision, change it in one transaction.

Two keys: ``{prefix}control:state`` (a JSON :class:`ControlState`) and
``{prefix}control:revision`` (a counter the workers poll, small to read). A
change is applied inside a WATCH/MULTI transaction (optimistic: retried when
another worker wrote first), so two workers can never interleave two changes;
a restore from ``control.state`` writes only if the stored state is still
missing or older, so workers restoring at once agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import WatchError

from configs.settings import Settings
from bse_predict.control.state_machine import ControlEvent, ControlState
from bse_predict.connections.clients import connect_redis

__all__ = ["RedisControlStore", "Transacted"]


class Transacted(NamedTuple):
    state: ControlState  # the stored state after the change
    events: list[ControlEvent]
    written: bool  # False: the change left the state as it was, nothing was stored


class RedisControlStore:
    """The applied control state and its revision counter in Redis."""

    def __init__(self, client: aioredis.Redis, key_prefix: str = "") -> None:
        self._client = client
        self._state_key = f"{key_prefix}control:state"
        self._revision_key = f"{key_prefix}control:revision"

    @classmethod
    def connect(cls, settings: Settings) -> RedisControlStore:
        """A store on its own client, whose calls fail after ``control.io_timeout_s`` and are not retried
        inside the client: the caller's :func:`~bse_predict.connections.transient.retry_transient`
        retries, logs and counts them. Close it with :meth:`close`."""
        timeout_s = settings.control.io_timeout_s
        client = connect_redis(settings, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                               retry=Retry(NoBackoff(), 0))
        return cls(client, key_prefix=settings.topic_prefix)

    async def close(self) -> None:
        """Close the client (one given to the constructor too)."""
        await self._client.aclose()

    async def ping(self) -> None:
        await self._client.ping()

    async def revision(self) -> int | None:
        """The stored revision; None when Redis holds no state."""
        raw = await self._client.get(self._revision_key)
        return int(raw) if raw is not None else None

    async def read(self) -> ControlState | None:
        raw = await self._client.get(self._state_key)
        return ControlState.model_validate_json(raw) if raw is not None else None

    async def transact(self, change: Callable[[ControlState], tuple[ControlState, list[ControlEvent]]],
                       on_missing: Callable[[], Awaitable[None]] | None = None) -> Transacted:
        """Apply ``change`` to the stored state atomically (optimistic: retried when another worker wrote
        first); a stored change gets the next ``sequence``. When no state is stored and ``change`` would
        write one, ``on_missing`` runs first (once: a restore from the log) and the transaction starts over."""
        asked = False
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._state_key)
                    raw = await pipe.get(self._state_key)
                    before = ControlState.model_validate_json(raw) if raw is not None else ControlState()
                    after, events = change(before)
                    if after == before:
                        await pipe.unwatch()
                        return Transacted(after, events, written=False)
                    if raw is None and on_missing is not None and not asked:
                        await pipe.unwatch()
                        asked = True
                        await on_missing()
                        continue
                    after = after.model_copy(update={"sequence": before.sequence + 1})
                    pipe.multi()
                    pipe.set(self._state_key, after.model_dump_json())
                    pipe.set(self._revision_key, after.revision)
                    await pipe.execute()
                    return Transacted(after, events, written=True)
                except WatchError:
                    continue

    async def restore(self, state: ControlState) -> tuple[bool, ControlState | None]:
        """Store ``state`` if the stored one is missing or has a lower sequence, atomically: of workers
        restoring at once, one writes and the others find it done. (Whether it wrote, the state it found.)"""
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._state_key)
                    raw = await pipe.get(self._state_key)
                    stored = ControlState.model_validate_json(raw) if raw is not None else None
                    if stored is not None and stored.sequence >= state.sequence:
                        await pipe.unwatch()
                        return False, stored
                    pipe.multi()
                    pipe.set(self._state_key, state.model_dump_json())
                    pipe.set(self._revision_key, state.revision)
                    await pipe.execute()
                    return True, stored
                except WatchError:
                    continue
