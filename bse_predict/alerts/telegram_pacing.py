"""How fast and how often to try: token buckets for Telegram's rate limits, retry backoff.

Pure: the caller passes the time (``now_s``, any monotonic seconds) and
sleeps for what these return.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TokenBucket", "backoff_delay_s"]


@dataclass
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; one token per message."""

    rate_per_s: float
    burst: int
    _tokens: float = field(init=False)
    _updated_s: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError(f"rate_per_s must be > 0 and burst >= 1, got {self.rate_per_s}, {self.burst}")
        self._tokens = float(self.burst)

    def _refill(self, now_s: float) -> None:
        if self._updated_s is not None:
            self._tokens = min(float(self.burst), self._tokens + (now_s - self._updated_s) * self.rate_per_s)
        self._updated_s = now_s if self._updated_s is None else max(self._updated_s, now_s)

    def wait_s(self, now_s: float) -> float:
        """Seconds to wait before a message may go at ``now_s`` (0 when a token is there)."""
        self._refill(now_s)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate_per_s

    def take(self, now_s: float) -> None:
        """Spend one token at ``now_s``; call only once :meth:`wait_s` said 0."""
        self._refill(now_s)
        if self._tokens < 1 - 1e-9:
            raise ValueError("no token to take: wait first")
        self._tokens -= 1

    def hold(self, now_s: float, seconds: float) -> None:
        """Telegram said wait (429 retry_after): no token until ``now_s + seconds``."""
        self._refill(now_s)
        self._tokens = min(self._tokens, 0.0) - seconds * self.rate_per_s


def backoff_delay_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds before retry number ``attempt`` (1 = the first retry): doubling, capped."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    return min(max_s, initial_s * 2 ** (attempt - 1))
