"""The track record's periods: ``?period=24h``, ``7d`` or ``all``, read from a request's text.

A period of ``n`` hours holds the outcomes whose candle opened in the ``n`` hours up to and including the
newest candle hour the board has an outcome of (not the wall clock: a replay of old candles has periods
too, and no clock is read). It cannot be longer than the hours the board keeps per hour
(``dashboard.lookback_hours``, what is read at start-up); ``all`` is every outcome counted since start-up.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HOUR_MS", "Period", "parse_period", "shown_periods"]

HOUR_MS = 3_600_000
_PERIOD = re.compile(r"([1-9][0-9]{0,4})([hd])")
_SHOWN = ("24h", "72h", "7d", "all")


class Period(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    hours: int | None = Field(None, gt=0, description="None: every outcome counted since start-up")


def _hours(text: str) -> int | None:
    """The hours of ``<n>h`` or ``<n>d``; None for any other text."""
    found = _PERIOD.fullmatch(text)
    return None if found is None else int(found.group(1)) * (24 if found.group(2) == "d" else 1)


def parse_period(text: str, lookback_hours: int) -> Period:
    """``all``, ``<n>h`` or ``<n>d`` (at most ``lookback_hours``); ValueError with the reason otherwise."""
    if text == "all":
        return Period(name="all")
    hours = _hours(text)
    if hours is None:
        raise ValueError(f"period must be 'all', hours ('24h') or days ('7d'), not {text[:20]!r}")
    if hours > lookback_hours:
        raise ValueError(f"period {text} is longer than the {lookback_hours} h the dashboard keeps "
                         "(dashboard.lookback_hours)")
    return Period(name=text, hours=hours)


def shown_periods(lookback_hours: int) -> tuple[str, ...]:
    """The periods the page links to: those the board can answer, and ``all``."""
    return tuple(name for name in _SHOWN if name == "all" or (_hours(name) or 0) <= lookback_hours)
