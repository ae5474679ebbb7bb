"""Effective sample size of out-of-fold rows: how many label windows share no candle.

A first-touch label at open time t is decided by the candles of the next
``horizon`` hours, so rows less than a horizon apart share candles and
their outcomes are far from independent. The count used here: per symbol,
walk the rows in time order, keep a row, skip every row that opens less
than a horizon after it, keep the next; the kept rows are non-overlapping
label windows, and their number, summed over symbols, is the effective sample.

It is conservative at the small targets, where a barrier is often touched
within hours (two rows a few hours apart are then nearly independent), and
generous across symbols, which move together in the same hours.
"""

from __future__ import annotations

import numpy as np

__all__ = ["non_overlapping_windows"]


def non_overlapping_windows(open_time_ms: np.ndarray, symbol_index: np.ndarray, horizon_ms: int) -> int:
    """Number of label windows of ``horizon_ms`` that share no candle, greedily from the oldest row of each symbol."""
    if horizon_ms <= 0:
        raise ValueError(f"horizon_ms must be positive, got {horizon_ms}")
    times = np.asarray(open_time_ms, dtype=np.int64)
    symbols = np.asarray(symbol_index)
    total = 0
    for symbol in np.unique(symbols):
        ordered = np.sort(times[symbols == symbol])
        next_free = np.searchsorted(ordered, ordered + horizon_ms, side="left")
        row = 0
        while row < len(ordered):
            total += 1
            row = int(next_free[row])
    return total
