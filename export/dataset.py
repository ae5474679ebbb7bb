"""Candle series to training rows: gap-filled grid, features and labels.

Features and labels come from the one definition each (``models.features``,
``models.labels``); this module only lines them up. A row is kept when its
candle is real (not a filled gap) and its features are complete; its label may
still be UNKNOWN (the horizon runs past the data), which training drops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.candle_files import CandleSeries
from models.features import LOOKBACK_CANDLES, feature_matrix
from models.grid import fill_gaps
from models.labels import label_matrix
from models.signals import target_label

__all__ = ["SymbolDataset", "build_dataset", "holdout_split"]


@dataclass(frozen=True)
class SymbolDataset:
    symbol: str
    open_time_ms: np.ndarray
    close: np.ndarray
    features: np.ndarray
    labels: dict[str, np.ndarray]


def build_dataset(series: CandleSeries, targets_pct: Sequence[float], horizon_candles: int,
                  max_rows: int | None = None) -> SymbolDataset:
    """Rows of one symbol; ``max_rows`` keeps the newest rows (plus the lookback they need)."""
    if max_rows is not None:
        series = series.tail(max_rows + LOOKBACK_CANDLES - 1)
    grid = fill_gaps(series.open_time_ms, series.ohlcv, series.step_ms)
    features = feature_matrix(grid.open_time_ms, grid.ohlcv)
    keep = grid.is_real & np.isfinite(features).all(axis=1)
    labels = {
        target_label(pct): label_matrix(grid.ohlcv, grid.is_real, pct / 100.0, horizon_candles)[keep]
        for pct in targets_pct
    }
    return SymbolDataset(series.symbol, grid.open_time_ms[keep], grid.ohlcv[keep, 3], features[keep], labels)


def holdout_split(open_time_ms: np.ndarray, holdout_fraction: float, horizon_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout): the newest share is held out, and training rows
    whose label horizon reaches into the holdout are purged."""
    n = len(open_time_ms)
    holdout = np.zeros(n, dtype=bool)
    if holdout_fraction <= 0 or n == 0:
        return ~holdout, holdout
    first_holdout = int(n * (1.0 - holdout_fraction))
    holdout[first_holdout:] = True
    holdout_start_ms = open_time_ms[first_holdout] if first_holdout < n else np.iinfo(np.int64).max
    train = open_time_ms + horizon_ms < holdout_start_ms
    return train, holdout
