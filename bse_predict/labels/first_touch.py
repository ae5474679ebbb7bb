"""First-touch barrier labels: did price touch +X% before -X% within the horizon?

One rule serves both training and live outcomes. :func:`first_touch` is that
rule; :func:`label_matrix` only slides it over a gap-filled history, and the
worker calls :func:`first_touch` with the candles seen so far to settle a past
prediction. Keeping a single implementation means a model is scored live by the
very definition it was trained on.

The rule, for the candle ``t`` and a target ``X`` (a fraction, e.g. 0.02):

- Entry is the close of ``t``; the barriers are ``close * (1 + X)`` (up) and
  ``close * (1 - X)`` (down), computed exactly in that form.
- Only the ``H`` candles that open after ``t`` count (``H`` = horizon / timeframe,
  72 for 72 h of 1 h candles). A candle touches up when ``high >= up`` and down
  when ``low <= down``; touching exactly at a barrier counts.
- The label is the barrier touched first: ``UP`` or ``DOWN``; ``NONE`` when all
  ``H`` candles exist and none touched; ``UNKNOWN`` when the data ends before the
  horizon is over and nothing was touched yet. A touch before the data ends is
  final, because nothing later can change which barrier came first.
- Ambiguous candle (touches both barriers): the barrier nearer to that candle's
  open is taken as touched first; an exact tie goes ``DOWN``. An hourly candle
  does not say whether its high or its low came first, and its open is the
  best evidence we have of where the hour started. Ties go to the stop side,
  the conservative reading for a long position. A gap open already beyond a
  barrier has distance zero or less to it, so that barrier is nearer and wins.

The input of :func:`label_matrix` is the gap-filled grid: a missing hour is a
flat candle at the previous close. Such a candle can never make a first touch
(its price is the previous close, which lies inside the band unless an earlier
candle already touched), so the grid is treated as a plain sequence and a gap
counts towards the horizon: the horizon is wall-clock time. A row that is not a
real candle gets ``UNKNOWN``: a candle that did not exist has no label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "UP",
    "DOWN",
    "NONE",
    "UNKNOWN",
    "CLASS_NAMES",
    "first_touch",
    "time_to_touch",
    "label_matrix",
    "expand_classes",
]

UP = 0
DOWN = 1
NONE = 2
UNKNOWN = -1
CLASS_NAMES = ("up", "down", "none")

_OPEN, _HIGH, _LOW, _CLOSE = 0, 1, 2, 3
_OHLCV_COLUMNS = 5
# Rows labelled per first_touch call in label_matrix: bounds the [rows, H]
# temporaries to a few MB whatever the history length.
_CHUNK_ROWS = 8192


def _check_target(target_frac: float) -> None:
    if not 0.0 < target_frac < 1.0:
        raise ValueError(f"target_frac must be a fraction in (0, 1), got {target_frac!r}")


def _check_batch(entry_close: np.ndarray, future: np.ndarray, future_valid: np.ndarray) -> None:
    if future.ndim != 3 or future.shape[2] != _OHLCV_COLUMNS or future.shape[1] < 1:
        raise ValueError(f"future must be [B, H>=1, 5] ohlcv, got shape {future.shape}")
    if entry_close.shape != future.shape[:1]:
        raise ValueError(f"entry_close must be [B={future.shape[0]}], got shape {entry_close.shape}")
    if future_valid.shape != future.shape[:2]:
        raise ValueError(f"future_valid must be [B, H]={future.shape[:2]}, got shape {future_valid.shape}")


def _up_is_nearer(open_: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Where the up barrier is strictly nearer the open (a tie is False: DOWN wins).

    Signed distances, so an open already beyond a barrier (distance <= 0) makes
    that barrier the nearer one.
    """
    return (up - open_) < (open_ - down)


def _scan(
    entry_close: np.ndarray, future: np.ndarray, future_valid: np.ndarray, target_frac: float
) -> tuple[np.ndarray, np.ndarray]:
    """Labels int8[B] and the 0-based index of the touching candle int64[B] (-1: none)."""
    _check_target(target_frac)
    entry = np.asarray(entry_close, dtype=np.float64)
    future = np.asarray(future, dtype=np.float64)
    valid = np.asarray(future_valid, dtype=bool)
    _check_batch(entry, future, valid)

    up = entry * (1.0 + target_frac)
    down = entry * (1.0 - target_frac)
    hit_up = valid & (future[..., _HIGH] >= up[:, None])
    hit_down = valid & (future[..., _LOW] <= down[:, None])
    hit = hit_up | hit_down

    touched = hit.any(axis=1)
    first = hit.argmax(axis=1)
    rows = np.arange(len(entry))
    up_at_first = hit_up[rows, first]
    down_at_first = hit_down[rows, first]
    up_wins = up_at_first & (~down_at_first | _up_is_nearer(future[rows, first, _OPEN], up, down))

    untouched = np.where(valid.all(axis=1), NONE, UNKNOWN)
    labels = np.where(touched, np.where(up_wins, UP, DOWN), untouched).astype(np.int8)
    index = np.where(touched, first, -1).astype(np.int64)
    return labels, index


def first_touch(
    entry_close: np.ndarray, future: np.ndarray, future_valid: np.ndarray, target_frac: float
) -> np.ndarray:
    """The label rule: which barrier the candles after each entry touch first.

    entry_close: float64[B]; future: float64[B, H, 5] ohlcv (open, high, low,
    close, volume) of the H candles after the entry; future_valid: bool[B, H],
    False where that candle does not exist (yet); valid candles are a prefix of
    each row. Returns int8[B] of UP / DOWN / NONE / UNKNOWN.
    """
    return _scan(entry_close, future, future_valid, target_frac)[0]


def time_to_touch(
    entry_close: np.ndarray, future: np.ndarray, future_valid: np.ndarray, target_frac: float
) -> np.ndarray:
    """Candles from the entry to the touching one (1 = the next candle); -1 where nothing touched.

    Same inputs as :func:`first_touch`; returns int64[B].
    """
    index = _scan(entry_close, future, future_valid, target_frac)[1]
    return np.where(index >= 0, index + 1, -1)


def label_matrix(
    ohlcv: np.ndarray, is_real: np.ndarray, target_frac: float, horizon_candles: int
) -> np.ndarray:
    """Labels for every row of a gap-filled grid history: float64[T, 5] ohlcv -> int8[T].

    Row t is labelled by :func:`first_touch` on rows t+1 .. t+H of the grid
    (H = horizon_candles); rows past the end of the history are invalid, so the
    last rows are UNKNOWN unless already touched. Rows with is_real False are
    UNKNOWN.
    """
    ohlcv = np.asarray(ohlcv, dtype=np.float64)
    is_real = np.asarray(is_real, dtype=bool)
    if ohlcv.ndim != 2 or ohlcv.shape[1] != _OHLCV_COLUMNS:
        raise ValueError(f"ohlcv must be [T, 5], got shape {ohlcv.shape}")
    if is_real.shape != ohlcv.shape[:1]:
        raise ValueError(f"is_real must be [T={len(ohlcv)}], got shape {is_real.shape}")
    if horizon_candles < 1:
        raise ValueError(f"horizon_candles must be >= 1, got {horizon_candles}")

    rows = len(ohlcv)
    padded = np.concatenate([ohlcv, np.full((horizon_candles, _OHLCV_COLUMNS), np.nan)])
    exists = np.concatenate([np.ones(rows, dtype=bool), np.zeros(horizon_candles, dtype=bool)])
    # Window i of the padded arrays covers rows i .. i+H-1, so window t+1 is
    # the future of row t. Views only: nothing [T, H, 5] is materialised.
    futures = sliding_window_view(padded, horizon_candles, axis=0)[1:].transpose(0, 2, 1)
    futures_valid = sliding_window_view(exists, horizon_candles)[1:]

    labels = np.empty(rows, dtype=np.int8)
    for start in range(0, rows, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, rows)
        labels[start:stop] = first_touch(
            ohlcv[start:stop, _CLOSE], futures[start:stop], futures_valid[start:stop], target_frac
        )
    labels[~is_real] = UNKNOWN
    return labels


def expand_classes(probabilities: np.ndarray, present: Sequence[int]) -> np.ndarray:
    """Per-class numbers over the classes a model saw (``present``, e.g. (UP, DOWN) when a
    training slice held no NONE; the last axis) to the full (up, down, none) layout, absent ones 0."""
    full = np.zeros((*np.shape(probabilities)[:-1], len(CLASS_NAMES)), dtype=np.float64)
    full[..., np.asarray(present, dtype=np.int64)] = probabilities
    return full
