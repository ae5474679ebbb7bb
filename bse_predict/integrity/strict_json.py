"""The one check for repeated keys in a JSON object: parsers keep the last one silently."""

from __future__ import annotations

from typing import Any

__all__ = ["RepeatedKey", "no_repeated_keys"]


class RepeatedKey(Exception):
    """An object of the document names ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r:.80}")
        self.key = key


def no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: the object, or :class:`RepeatedKey`."""
    decoded: dict[str, Any] = {}
    for key, value in pairs:
        if key in decoded:
            raise RepeatedKey(key)
        decoded[key] = value
    return decoded
