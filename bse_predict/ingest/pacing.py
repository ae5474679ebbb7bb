"""How fast the client may talk to the exchange: the REST weight budget, ``Retry-After``, and the backoff
between failed attempts. Pure: every time is passed in, and the backoff's jitter is a draw in [0, 1) given
by the caller.
"""

from __future__ import annotations

__all__ = ["WeightBudget", "parse_retry_after_s", "backoff_delay_s"]

_WINDOW_S = 60.0


class WeightBudget:
    """At most ``limit_per_minute`` request weight in each minute, and nothing while an exchange's
    ``Retry-After`` runs.

    The spent weight is counted locally and corrected upwards by the exchange's own count
    (``X-MBX-USED-WEIGHT-1M``), which also includes what other clients on the same IP spent.
    """

    def __init__(self, limit_per_minute: int) -> None:
        if limit_per_minute <= 0:
            raise ValueError("limit_per_minute must be positive")
        self.limit_per_minute = limit_per_minute
        self._window_start_s: float | None = None
        self._used = 0
        self._blocked_until_s = float("-inf")

    @property
    def used(self) -> int:
        return self._used

    def _roll(self, now_s: float) -> None:
        if self._window_start_s is None or now_s - self._window_start_s >= _WINDOW_S:
            self._window_start_s, self._used = now_s, 0

    def delay_s(self, weight: int, now_s: float) -> float:
        """How long to wait before a request of ``weight`` may go out (0: now)."""
        if now_s < self._blocked_until_s:
            return self._blocked_until_s - now_s
        self._roll(now_s)
        assert self._window_start_s is not None
        if self._used > 0 and self._used + weight > self.limit_per_minute:
            return self._window_start_s + _WINDOW_S - now_s
        return 0.0

    def spend(self, weight: int, now_s: float) -> None:
        self._roll(now_s)
        self._used += weight

    def observe_used(self, reported: int, now_s: float) -> None:
        """The exchange's count of this minute's weight: ours is raised to it, never lowered."""
        self._roll(now_s)
        self._used = max(self._used, reported)

    def block_for(self, seconds: float, now_s: float) -> None:
        """No request before ``now_s + seconds`` (a 429's or 418's ``Retry-After``)."""
        self._blocked_until_s = max(self._blocked_until_s, now_s + seconds)


def parse_retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds (Binance sends whole seconds); None when absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def backoff_delay_s(attempt: int, initial_s: float, max_s: float, jitter_draw: float) -> float:
    """The wait before retry number ``attempt`` (0 for the first): ``initial_s`` doubled per attempt up to
    ``max_s``, then scaled into [half, all] of that by the draw, so that many clients do not retry in step.
    There is no last attempt: the delay stays at the cap."""
    base = min(max_s, initial_s * 2.0 ** min(attempt, 64))
    return base * (0.5 + 0.5 * min(max(jitter_draw, 0.0), 1.0))
