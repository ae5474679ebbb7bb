"""Redis keys owned by a token: the schedule lease and the claims on sends.

A key holds an owner's token and expires unless the owner renews it. Taking,
renewing and releasing are each one Lua script, so only the owner whose
token is in the key can renew or delete it, and running any of them twice
has the effect of running it once.

- :class:`Lease`: one key per deployment; its holder is the one process that
  builds and sends digests, daily summaries and catch-up notes. Renewed
  every third of its time to live while the process runs, released on stop.
- :func:`renewing`: keeps a claim (see :mod:`bse_predict.alerts.store`) alive
  while the send it guards is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["OwnedKeys", "Lease", "renewing"]

log = logging.getLogger(__name__)

# KEYS[1] the key, ARGV[1] the token, ARGV[2] time to live in ms. Returns 1 when the key is the
# token's now (taken or renewed), otherwise what the key holds.
_TAKE = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return current
"""

# KEYS[1] the key, ARGV[1] the token, ARGV[2] time to live in ms. 1 when renewed, 0 when not the token's.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] the key, ARGV[1] the token. 1 when deleted, 0 when not the token's (or gone).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS[1] the key, ARGV[1] the token, ARGV[2] the value that replaces it, ARGV[3] time to live in s.
# Sets the value whoever holds the key; 1 when the token still held it, 0 otherwise.
_REPLACE = """
local current = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if current == ARGV[1] then
  return 1
end
return 0
"""


class OwnedKeys:
    """The four scripts, registered once on a client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._replace = client.register_script(_REPLACE)

    async def take(self, key: str, token: str, ttl_ms: int) -> bytes | None:
        """None when ``key`` is ``token``'s now (it was free or already ours); else what it holds."""
        result = await self._take(keys=[key], args=[token, ttl_ms])
        if isinstance(result, int):  # the script's 1; what a key holds comes back as a string
            return None
        return result if isinstance(result, bytes) else str(result).encode()

    async def renew(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[key], args=[token, ttl_ms]))

    async def release(self, key: str, token: str) -> bool:
        return bool(await self._release(keys=[key], args=[token]))

    async def replace(self, key: str, token: str, value: str | int, ttl_s: int) -> bool:
        """Set ``value``; True when ``token`` still held the key until then."""
        return bool(await self._replace(keys=[key], args=[token, value, ttl_s]))


@asynccontextmanager
async def renewing(renew: Callable[[], Awaitable[bool]], every_s: float, what: str) -> AsyncIterator[None]:
    """Call ``renew`` every ``every_s`` while the body runs; a failed renewal is logged, not retried."""

    async def keep() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                renewed = await renew()
            except RedisError as exc:
                log.warning("%s not renewed (%s: %s); another process may take it over", what,
                            type(exc).__name__, exc)
                return
            if not renewed:
                log.warning("%s expired before it was renewed; another process may take it over", what)
                return

    task = asyncio.create_task(keep())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


class Lease:
    """One process's hold on ``key``: :meth:`hold` takes or renews it, :meth:`keep` renews it until stop."""

    def __init__(self, keys: OwnedKeys, key: str, token: str, ttl_s: float) -> None:
        self._keys = keys
        self._key = key
        self._token = token
        self._ttl_ms = int(ttl_s * 1000)
        self._held = False

    async def hold(self) -> bool:
        """True when this process holds the lease now (taken, or renewed as the holder)."""
        held = await self._keys.take(self._key, self._token, self._ttl_ms) is None
        if held != self._held:
            log.info("%s the schedule lease (digests, summaries, catch-up notes)",
                     "holds" if held else "lost")
            self._held = held
        return held

    async def release(self) -> None:
        try:
            released = await self._keys.release(self._key, self._token)
        except RedisError as exc:
            log.warning("schedule lease not released (%s: %s); it expires on its own", type(exc).__name__, exc)
            return
        if released:
            log.info("released the schedule lease")
        self._held = False

    async def keep(self, stop: asyncio.Event) -> None:
        """Take or renew every third of the time to live until ``stop`` is set (the caller releases)."""
        while not stop.is_set():
            try:
                await self.hold()
            except RedisError as exc:
                log.warning("schedule lease not renewed (%s: %s)", type(exc).__name__, exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._ttl_ms / 3000)
