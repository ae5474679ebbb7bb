"""Streams over connections: the per-connection cap, SUBSCRIBE messages, and when a connection is replaced."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["shard_streams", "subscribe_requests", "rotation_due"]


def shard_streams(streams: Sequence[str], max_per_connection: int) -> list[tuple[str, ...]]:
    """``streams`` (duplicates dropped, order kept) split into the fewest connections under the cap, as even
    as possible."""
    unique = list(dict.fromkeys(streams))
    if not unique:
        return []
    count = math.ceil(len(unique) / max_per_connection)
    size, extra = divmod(len(unique), count)
    shards, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        shards.append(tuple(unique[start:end]))
        start = end
    return shards


def subscribe_requests(streams: Sequence[str], per_message: int, first_id: int) -> list[dict[str, Any]]:
    """The SUBSCRIBE messages for ``streams``, ``per_message`` streams each, ids from ``first_id``."""
    return [{"method": "SUBSCRIBE", "params": list(streams[i:i + per_message]), "id": first_id + n}
            for n, i in enumerate(range(0, len(streams), per_message))]


def rotation_due(opened_at_s: float, now_s: float, rotate_after_s: float) -> bool:
    """A connection this old is replaced (the exchange cuts every connection at 24 hours)."""
    return now_s - opened_at_s >= rotate_after_s
