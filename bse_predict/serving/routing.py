"""Which served version answers for a symbol: a deterministic, sticky split.

A symbol's place in [0, 1) is the first 8 bytes of sha256(symbol) read as an
integer: the same on every worker and every restart, with no state. Arms own
consecutive intervals in the order given, so while a split stands a symbol
stays in its arm; and when a ramp raises the candidate's share (the candidate
is the first arm), the symbols already on the candidate stay there and only
new ones join.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Arm", "symbol_point", "arm_for", "normalised"]

_SCALE = float(1 << 64)


@dataclass(frozen=True)
class Arm:
    """An A/B arm: ``variant`` goes into predictions, ``version`` answers, ``weight`` is its share."""

    variant: str
    version: str
    weight: float


def symbol_point(symbol: str) -> float:
    """A symbol's fixed place in [0, 1)."""
    return int.from_bytes(hashlib.sha256(symbol.encode("utf-8")).digest()[:8], "big") / _SCALE


def normalised(arms: Sequence[Arm]) -> tuple[Arm, ...]:
    """The arms with weights scaled to sum to 1; arms of weight 0 dropped."""
    total = sum(a.weight for a in arms)
    if total <= 0:
        raise ValueError("arm weights sum to 0")
    return tuple(Arm(a.variant, a.version, a.weight / total) for a in arms if a.weight > 0)


def arm_for(symbol: str, arms: Sequence[Arm]) -> Arm:
    """The arm that serves ``symbol``; ``arms`` are normalised (see :func:`normalised`)."""
    if not arms:
        raise ValueError("no arms")
    point = symbol_point(symbol)
    upper = 0.0
    for arm in arms:
        upper += arm.weight
        if point < upper:
            return arm
    return arms[-1]  # rounding left the top sliver of [0, 1) uncovered
