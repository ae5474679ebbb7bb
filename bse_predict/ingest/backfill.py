"""REST backfill planning: which klines to ask for after a (re)connect, and what each request weighs.

The range runs from the slot after the gate's floor (the newest candle already done) to the newest candle
*closed by the exchange's clock*: a candle is closed when its close time (open + interval - 1 ms) is before
the server time of ``/api/v3/time`` or ``/fapi/v1/time``. The local clock never decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["KlineRequest", "last_closed_open_ms", "initial_floor_ms", "plan_backfill", "gap_requests", "klines_weight"]


@dataclass(frozen=True)
class KlineRequest:
    """``startTime``, ``endTime`` (open times, both included) and ``limit`` of one klines request."""

    start_ms: int
    end_ms: int
    limit: int


def last_closed_open_ms(server_ms: int, timeframe_ms: int) -> int:
    """The open time of the newest candle closed at ``server_ms``: open + interval - 1 < server time."""
    return (server_ms // timeframe_ms) * timeframe_ms - timeframe_ms


def initial_floor_ms(server_ms: int, timeframe_ms: int, max_candles: int) -> int:
    """For a symbol with nothing in the topic: a floor ``max_candles`` closed candles back."""
    return last_closed_open_ms(server_ms, timeframe_ms) - max_candles * timeframe_ms


def plan_backfill(floor_ms: int, server_ms: int, timeframe_ms: int, limit: int) -> list[KlineRequest]:
    """Requests covering every open time after ``floor_ms`` up to the newest closed candle, ``limit`` a page."""
    last = last_closed_open_ms(server_ms, timeframe_ms)
    requests = []
    start = floor_ms + timeframe_ms
    while start <= last:
        end = min(last, start + (limit - 1) * timeframe_ms)
        requests.append(KlineRequest(start, end, limit))
        start = end + timeframe_ms
    return requests


def gap_requests(open_times: list[int], timeframe_ms: int, limit: int) -> list[KlineRequest]:
    """Requests covering the slots at ``open_times`` (sorted), one per run of neighbouring slots, ``limit`` a
    page: asking again for the exchange's reported gaps."""
    requests: list[KlineRequest] = []
    for t in open_times:
        last = requests[-1] if requests else None
        if last is not None and t == last.end_ms + timeframe_ms and (t - last.start_ms) // timeframe_ms < limit:
            requests[-1] = KlineRequest(last.start_ms, t, limit)
        else:
            requests.append(KlineRequest(t, t, limit))
    return requests


def klines_weight(market: Literal["spot", "futures"], limit: int) -> int:
    """Request weight of one klines request: spot 2; futures by ``limit`` (1 below 100, 2 below 500, 5 up to
    1000, 10 above)."""
    if market == "spot":
        return 2
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
