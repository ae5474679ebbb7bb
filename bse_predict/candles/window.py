"""The feature window of one candle, cut from the stored history of its symbol.

The worker keeps the newest closed candles of each symbol; to predict candle t
it needs the ``lookback`` grid slots ending at t, gap-filled exactly as the
trainer fills a whole history (:func:`bse_predict.candles.grid.fill_gaps`). A missing slot at
the window's start is filled from the latest candle before it (the anchor), so
the result equals the trainer's row t whenever the store holds that anchor.
"""

from __future__ import annotations

import numpy as np

from bse_predict.candles.grid import fill_gaps

__all__ = ["window_ending_at"]


def window_ending_at(
    open_time_ms: np.ndarray, ohlcv: np.ndarray, end_ms: int, lookback: int, step_ms: int
) -> np.ndarray | None:
    """float64[lookback, 5] of the slots ending at ``end_ms``, or None without enough history.

    ``open_time_ms`` (sorted, oldest first) and ``ohlcv`` may hold candles after
    ``end_ms``; they are ignored, so a late candle gets the window a clean run
    would have given it.
    """
    start_ms = end_ms - (lookback - 1) * step_ms
    upto = int(np.searchsorted(open_time_ms, end_ms, side="right"))
    if upto == 0 or open_time_ms[upto - 1] != end_ms or open_time_ms[0] > start_ms:
        return None
    if upto >= lookback and open_time_ms[upto - lookback] == start_ms:
        return ohlcv[upto - lookback:upto]  # every slot present: the grid is the candles themselves
    first_inside = int(np.searchsorted(open_time_ms, start_ms, side="left"))
    anchor_close = float(ohlcv[first_inside - 1, 3]) if first_inside > 0 else None
    grid = fill_gaps(
        open_time_ms[first_inside:upto],
        ohlcv[first_inside:upto],
        step_ms,
        start_ms=start_ms,
        end_ms=end_ms,
        anchor_close=anchor_close,
    )
    return grid.ohlcv
