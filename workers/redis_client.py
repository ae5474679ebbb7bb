"""The worker's Redis client: timeouts, health checks and a bounded retry on connection errors.

Without a socket timeout a hung Redis (``DEBUG SLEEP``, a stalled network)
blocks the stream forever while the worker keeps its partitions; with one, a
late reply is a fault that the batch guard retries. redis-py resends a command
whose connection failed, so every Lua script the worker runs is safe to run
twice; a script lost by a Redis restart (``NOSCRIPT``) is loaded again by
redis-py's ``Script`` objects, which every store uses.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from configs.settings import FaultConfig

__all__ = ["connect_redis"]

_COMMAND_RETRIES = 2


def connect_redis(url: str, faults: FaultConfig) -> aioredis.Redis:
    """A client for ``url`` whose every command fails within about
    ``(retries + 1) × redis_socket_timeout_s`` instead of waiting forever."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=faults.redis_socket_timeout_s,
        socket_connect_timeout=faults.redis_connect_timeout_s,
        health_check_interval=faults.redis_health_check_s,
        retry=Retry(ExponentialBackoff(cap=faults.retry_max_s, base=faults.retry_initial_s), _COMMAND_RETRIES),
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError],
    )
