"""Per-hour sequence inputs for the sequence families (LSTM, HMM regimes).

The same rule as the tabular features: one definition over a gap-filled
window, used by the trainer (sliding over history) and by the worker (on its
Redis window). Each of the last :data:`SEQUENCE_LENGTH` hours gets
:data:`SEQUENCE_FIELDS`, all scale-free:

- ``log_return``: log(close / previous close)
- ``log_range``: log(high / low)
- ``close_position``: (close - low) / (high - low), 0.5 on a flat candle
- ``log_volume_ratio``: log1p(volume / mean volume of the 24 hours ending there), 0 when that mean is 0

Standardising them is the model's job (with training statistics).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["SEQUENCE_FIELDS", "SEQUENCE_LENGTH", "SEQUENCE_LOOKBACK", "compute_sequences", "sequence_rows"]

SEQUENCE_FIELDS = ("log_return", "log_range", "close_position", "log_volume_ratio")
SEQUENCE_LENGTH = 168
_VOLUME_HOURS = 24
SEQUENCE_LOOKBACK = SEQUENCE_LENGTH + _VOLUME_HOURS
"""Rows of gap-filled history one sequence needs, the current candle included."""


def compute_sequences(windows: np.ndarray) -> np.ndarray:
    """float64[B, >= SEQUENCE_LOOKBACK, 5] windows -> float32[B, SEQUENCE_LENGTH, 4] (oldest hour first)."""
    w = windows[:, -SEQUENCE_LOOKBACK:, :]
    o, h, l, c, v = (w[:, :, i] for i in range(5))
    log_return = np.log(c[:, 1:] / c[:, :-1])[:, -SEQUENCE_LENGTH:]
    high, low, close = h[:, -SEQUENCE_LENGTH:], l[:, -SEQUENCE_LENGTH:], c[:, -SEQUENCE_LENGTH:]
    log_range = np.log(high / low)
    span = high - low
    close_position = np.divide(close - low, span, out=np.full_like(span, 0.5), where=span > 0)
    volume_mean = sliding_window_view(v, _VOLUME_HOURS, axis=1).mean(axis=2)[:, -SEQUENCE_LENGTH:]
    volume = v[:, -SEQUENCE_LENGTH:]
    ratio = np.divide(volume, volume_mean, out=np.zeros_like(volume), where=volume_mean > 0)
    return np.stack([log_return, log_range, close_position, np.log1p(ratio)], axis=2).astype(np.float32)


def sequence_rows(grid_ohlcv: np.ndarray, rows: np.ndarray, chunk_rows: int = 2048) -> np.ndarray:
    """Sequences ending at each of ``rows`` (indices into a gap-filled history with at least
    SEQUENCE_LOOKBACK - 1 rows before them) -> float32[len(rows), SEQUENCE_LENGTH, 4]."""
    windows = sliding_window_view(grid_ohlcv, SEQUENCE_LOOKBACK, axis=0).transpose(0, 2, 1)
    starts = np.asarray(rows) - (SEQUENCE_LOOKBACK - 1)
    if len(starts) and starts.min() < 0:
        raise ValueError(f"a sequence needs {SEQUENCE_LOOKBACK} rows of history")
    parts = [compute_sequences(windows[starts[i:i + chunk_rows]]) for i in range(0, len(starts), chunk_rows)]
    return np.concatenate(parts) if parts else np.empty((0, SEQUENCE_LENGTH, len(SEQUENCE_FIELDS)), np.float32)
