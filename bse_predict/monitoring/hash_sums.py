"""Sums added to many Redis hashes in one script call, each addition applied once, optionally buffered.

:class:`HashSums` sends one batch of increments (live scores, drift counts) in
one Lua call; :class:`UnsentSums` merges increments in process and sends them
now and then through it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

__all__ = ["HashSums", "UnsentSums"]

# KEYS: the hashes, then the call's token key; ARGV[1]: a JSON list, per hash {field: increment as a
# string}; ARGV[2]: the TTL in seconds; ARGV[3]: HINCRBY or HINCRBYFLOAT. Increments travel as the
# strings redis-py would send (Python's repr), so the sums are the same as with one command per field;
# ARGV[4]: the token's TTL in seconds. The token (unique per call) makes a second run of the same call, which redis-py sends when a
# connection fails after Redis ran it, add nothing.
_ADD_SUMS = """
local sums = cjson.decode(ARGV[1])
local ttl = tonumber(ARGV[2])
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', tonumber(ARGV[4])) then return 0 end
for i = 1, #KEYS - 1 do
  local key = KEYS[i]
  for field, value in pairs(sums[i]) do redis.call(ARGV[3], key, field, value) end
  redis.call('EXPIRE', key, ttl)
end
return #KEYS - 1
"""

_TOKEN_TTL_S = 3_600  # redis-py resends within seconds; a buffered flush (UnsentSums) later


class HashSums:
    """Adds a batch of increments to many Redis hashes in one script call.

    A pipeline of one ``HINCRBY`` per field cost the worker thousands of
    commands per batch (live scores, drift counts), most of it in redis-py
    packing and parsing them; one call with the increments as one JSON
    argument costs a few milliseconds.
    """

    def __init__(self, client: aioredis.Redis, floats: bool, token_prefix: str) -> None:
        self._script = client.register_script(_ADD_SUMS)
        self._command = "HINCRBYFLOAT" if floats else "HINCRBY"
        self._token_prefix = token_prefix

    def new_token(self) -> str:
        """A key that makes one addition count once, however often it is sent (see :meth:`add`)."""
        return f"{self._token_prefix}:sums-token:{uuid.uuid4().hex}"

    async def add(self, sums: Mapping[str, Mapping[str, float]], ttl_s: int,
                  pipe: Pipeline | None = None, token: str | None = None) -> None:
        """Add every ``sums[key][field]`` to its hash and set each hash's expiry to ``ttl_s``; a second
        call with the same ``token`` (from :meth:`new_token`, within its TTL) adds nothing."""
        if not sums:
            return
        encoded = orjson.dumps([{field: repr(value) for field, value in fields.items()} for fields in sums.values()])
        await self._script(keys=[*sums, token or self.new_token()],
                           args=[encoded, ttl_s, self._command, _TOKEN_TTL_S], client=pipe)


class UnsentSums:
    """Increments per Redis hash, one vector of named fields each, added up in process until :meth:`flush`
    sends them (the non-zero fields) in one :class:`HashSums` call.

    A flush that fails keeps its sums and its token, and the next flush sends that same call first:
    Redis refuses it if the failed one had run (only its reply was lost), so nothing counts twice or
    goes missing. Flushes may overlap (the candle agent and a timer): they send the same call with the
    same token, which counts once.
    """

    def __init__(self, sums: HashSums, ttl_s: int, field_names: Sequence[str]) -> None:
        self._sums = sums
        self._ttl_s = ttl_s
        self._names = list(field_names)
        self._unsent: dict[str, np.ndarray] = {}
        self._in_flight: tuple[str, dict[str, dict[str, float]]] | None = None

    def add(self, sums: Mapping[str, np.ndarray]) -> None:
        """Add ``sums[key]`` (float[len(field_names)]) to what the next flush sends to hash ``key``."""
        for key, vector in sums.items():
            held = self._unsent.get(key)
            self._unsent[key] = np.array(vector, dtype=np.float64) if held is None else held + vector

    async def flush(self) -> None:
        """Send what a failed flush left, then everything added since."""
        while self._in_flight is not None or self._unsent:
            if self._in_flight is None:
                named = {key: {self._names[i]: value for i, value in zip(np.flatnonzero(vector).tolist(),
                                                                          vector[vector != 0].tolist(), strict=True)}
                         for key, vector in self._unsent.items()}
                self._in_flight, self._unsent = (self._sums.new_token(), named), {}
            token, sums = self._in_flight
            await self._sums.add(sums, self._ttl_s, token=token)
            if self._in_flight is not None and self._in_flight[0] == token:
                self._in_flight = None
