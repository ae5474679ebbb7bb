"""The regular candle grid and the gap rule shared by the trainer and the worker.

Exchanges have outages, so a stream of real candles can miss slots. Features
and labels are defined on a *regular* grid (one row per ``step_ms``), so every
missing slot is filled the same way everywhere: with a flat candle at the
previous close (open = high = low = close = previous close, volume = 0).

A flat candle says honestly that no trading happened: zero range, zero volume,
zero return. It can never touch a barrier, and because the trainer (whole
histories) and the worker (a short window from Redis) both call
:func:`fill_gaps`, the two see identical rows for identical real candles.

The module is pure numpy; the fill is vectorised (no Python loop over rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OHLCV_FIELDS", "CLOSE", "VOLUME", "GridCandles", "fill_gaps"]

OHLCV_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""Column order of every ``ohlcv`` array in the project."""

CLOSE: int = OHLCV_FIELDS.index("close")
VOLUME: int = OHLCV_FIELDS.index("volume")


@dataclass(frozen=True, slots=True)
class GridCandles:
    """Candles on a regular grid: one row per slot, oldest first.

    ``open_time_ms`` is int64[T], ``ohlcv`` float64[T, 5] in
    :data:`OHLCV_FIELDS` order, ``is_real`` bool[T] (False for a gap-filled
    flat candle). The arrays are read-only.
    """

    open_time_ms: np.ndarray
    ohlcv: np.ndarray
    is_real: np.ndarray

    def __len__(self) -> int:
        return int(self.open_time_ms.shape[0])


def fill_gaps(
    open_time_ms: np.ndarray,
    ohlcv: np.ndarray,
    step_ms: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
    anchor_close: float | None = None,
) -> GridCandles:
    """Return every grid slot from ``start_ms`` to ``end_ms`` (inclusive), gaps filled flat.

    ``open_time_ms`` (int[N]) must be strictly increasing and aligned to
    ``step_ms`` (``t % step_ms == 0``); ``ohlcv`` is float[N, 5]. ``start_ms``
    and ``end_ms`` default to the first and last candle and must be aligned
    too. Real candles outside ``[start_ms, end_ms]`` are not returned.

    A missing slot becomes a flat candle at the previous close with volume 0
    and ``is_real`` False. For a missing first slot the previous close is the
    close of the latest input candle before ``start_ms`` or, when the input
    has none, ``anchor_close`` (the caller's close of the latest real candle
    before ``start_ms``); with neither, ``ValueError`` is raised.
    """
    times, values = _validated(open_time_ms, ohlcv, step_ms)
    start, end = _bounds(times, step_ms, start_ms, end_ms)

    n_slots = (end - start) // step_ms + 1
    inside = (times >= start) & (times <= end)
    slot_of_real = (times[inside] - start) // step_ms
    real_rows = np.flatnonzero(inside)

    # For each slot: the input row of the latest real candle at or before it (-1: none yet).
    source = np.full(n_slots, -1, dtype=np.int64)
    source[slot_of_real] = real_rows
    is_real = source >= 0
    source = np.maximum.accumulate(source)

    first_close = _first_close(times, values, start, anchor_close, needed=not is_real[0])
    prev_close = np.full(n_slots, first_close)
    has_prev = source >= 0
    prev_close[has_prev] = values[source[has_prev], CLOSE]

    out = np.empty((n_slots, len(OHLCV_FIELDS)), dtype=np.float64)
    out[:, :VOLUME] = prev_close[:, None]
    out[:, VOLUME] = 0.0
    out[is_real] = values[real_rows]

    grid_times = start + step_ms * np.arange(n_slots, dtype=np.int64)
    for array in (grid_times, out, is_real):
        array.setflags(write=False)
    return GridCandles(open_time_ms=grid_times, ohlcv=out, is_real=is_real)


def _validated(open_time_ms: np.ndarray, ohlcv: np.ndarray, step_ms: int) -> tuple[np.ndarray, np.ndarray]:
    times = np.asarray(open_time_ms)
    if times.ndim != 1 or not (np.issubdtype(times.dtype, np.integer) or times.size == 0):
        raise ValueError(f"open_time_ms must be a 1-D integer array, got {times.dtype} {times.shape}")
    times = times.astype(np.int64, copy=False)
    values = np.asarray(ohlcv, dtype=np.float64)
    if values.shape != (times.shape[0], len(OHLCV_FIELDS)):
        raise ValueError(f"ohlcv must have shape ({times.shape[0]}, {len(OHLCV_FIELDS)}), got {values.shape}")
    if int(step_ms) <= 0:
        raise ValueError(f"step_ms must be positive, got {step_ms}")
    if np.any(np.diff(times) <= 0):
        raise ValueError("open_time_ms must be strictly increasing")
    if np.any(times % step_ms != 0):
        raise ValueError(f"open_time_ms must be aligned to step_ms={step_ms}")
    return times, values


def _bounds(times: np.ndarray, step_ms: int, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    if times.size == 0 and (start_ms is None or end_ms is None):
        raise ValueError("start_ms and end_ms are required when there are no candles")
    start = int(times[0]) if start_ms is None else int(start_ms)
    end = int(times[-1]) if end_ms is None else int(end_ms)
    if start % step_ms != 0 or end % step_ms != 0:
        raise ValueError(f"start_ms and end_ms must be aligned to step_ms={step_ms}")
    if end < start:
        raise ValueError(f"end_ms {end} is before start_ms {start}")
    return start, end


def _first_close(
    times: np.ndarray, values: np.ndarray, start: int, anchor_close: float | None, needed: bool
) -> float:
    """The previous close of the first slot: an input candle before ``start``, else the anchor."""
    if not needed:
        return np.nan
    before = int(np.searchsorted(times, start, side="left"))
    if before > 0:
        return float(values[before - 1, CLOSE])
    if anchor_close is None:
        raise ValueError("the first grid slot is missing and there is no anchor_close to fill it")
    if not (np.isfinite(anchor_close) and anchor_close > 0):
        raise ValueError(f"anchor_close must be a finite positive price, got {anchor_close}")
    return float(anchor_close)
