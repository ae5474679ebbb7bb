"""The two stores of a store contract suite: the in-memory twin, and the Redis store on the real
server under a key prefix of its own, deleted afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from configs.settings import Settings
from bse_predict.connections.clients import connect_redis

__all__ = ["Cleanup", "StoreFactory", "prefixed_redis", "run_with_store", "store_factory"]

S = TypeVar("S")
T = TypeVar("T")
Cleanup = Callable[[], Awaitable[None]]
StoreFactory = Callable[[], Awaitable[tuple[S, Cleanup]]]


@asynccontextmanager
async def prefixed_redis(settings: Settings, name: str = "test") -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A client of the real Redis and a fresh key prefix (``{name}-{8 hex digits}:``); on the way out
    every key under the prefix is deleted and the client closed."""
    client = connect_redis(settings)
    prefix = f"{name}-{uuid.uuid4().hex[:8]}:"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def store_factory(request: pytest.FixtureRequest, memory: Callable[[], S],
                  redis: Callable[[aioredis.Redis, str], S]) -> StoreFactory[S]:
    """The body of a ``make_store`` fixture parametrised over ``"memory"`` and ``"redis"``: a factory of
    (store, cleanup). ``redis(client, key_prefix)`` builds the Redis store on :func:`prefixed_redis`,
    which its cleanup leaves."""
    if request.param == "memory":
        async def memory_store() -> tuple[S, Cleanup]:
            async def nothing() -> None:
                return None
            return memory(), nothing
        return memory_store
    redis_settings: Settings = request.getfixturevalue("services")

    async def redis_store() -> tuple[S, Cleanup]:
        stack = AsyncExitStack()
        client, prefix = await stack.enter_async_context(prefixed_redis(redis_settings))
        return redis(client, prefix), stack.aclose
    return redis_store


def run_with_store(make_store: StoreFactory[S], scenario: Callable[[S], Awaitable[T]]) -> T:
    """A fresh store from ``make_store``, the scenario's answer on it, then its cleanup."""
    async def main() -> T:
        store, cleanup = await make_store()
        try:
            return await scenario(store)
        finally:
            await cleanup()
    return asyncio.run(main())
