"""Where a batch's time goes: cumulative milliseconds per processing stage."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StageTimes"]


class StageTimes:
    """Accumulates wall time per named stage; the worker logs the averages per batch."""

    def __init__(self) -> None:
        self.total_ms: Counter[str] = Counter()
        self.batches = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.total_ms[name] += (time.perf_counter() - started) * 1000.0

    def take_per_batch_ms(self) -> dict[str, float]:
        """Average milliseconds per batch by stage since the last call, then start afresh."""
        averages = {name: round(total / self.batches, 3) for name, total in self.total_ms.items()} if self.batches else {}
        averages["batches"] = float(self.batches)
        self.total_ms.clear()
        self.batches = 0
        return averages
