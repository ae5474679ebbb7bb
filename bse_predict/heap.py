"""Long-lived objects moved out of the garbage collector's full collections.

A full (generation 2) collection traverses every object the collector tracks. A process that
allocates fast (the worker at 1,000 candles/s builds several messages a candle) runs one every few
seconds, and with the start-up's modules, Faust's and aiokafka's structures and the model sets
(about 118,000 objects in the worker) each took 66 to 96 ms, all of it on the event loop: every tick
arriving meanwhile waited, and those waits made the bench's p99 latency (docs/performance.md).
Frozen (``gc.freeze``), they move to the permanent generation, which collections skip; what such a
process drops later is still freed by its reference count (only a cycle among frozen objects stays).
"""

from __future__ import annotations

import gc
from typing import NamedTuple

__all__ = ["Frozen", "freeze_long_lived"]


class Frozen(NamedTuple):
    collected: int
    """Unreachable objects the full collection before the freeze freed."""
    frozen: int
    """Objects in the permanent generation after it."""


def freeze_long_lived() -> Frozen:
    """One full collection, then every surviving object frozen; call it once the process is set up."""
    collected = gc.collect()
    gc.freeze()
    return Frozen(collected, gc.get_freeze_count())
