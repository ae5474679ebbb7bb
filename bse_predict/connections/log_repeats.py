"""Say a repeated client library line once per interval, not many times a second.

While a broker is down, aiokafka logs every refused reconnect as an error, a
few times a second per connection: an outage of a minute buried the worker's
own lines (one per fault, one per recovery) under thousands. A line whose
logger and message template repeat within ``interval_s`` is held back, and the
next one that passes says how many were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RepeatFilter", "quiet_repeats"]


class RepeatFilter(logging.Filter):
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        if now - self._last.get(key, -self._interval_s) < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self._interval_s:.0f} s)"
        return True


def quiet_repeats(prefix: str, interval_s: float = 30.0) -> None:
    """Put one :class:`RepeatFilter` on every logger named ``prefix`` or below it that exists now
    (libraries create theirs at import)."""
    shared = RepeatFilter(interval_s)
    names = [name for name in logging.root.manager.loggerDict if name == prefix or name.startswith(f"{prefix}.")]
    for name in names:
        logging.getLogger(name).addFilter(shared)
