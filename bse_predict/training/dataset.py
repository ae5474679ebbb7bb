"""Candle series to training rows: gap-filled grid, inputs and labels.

Features and labels come from the one definition each (``bse_predict.features.definitions``,
``bse_predict.labels.first_touch``); this module only lines them up. A row is kept when its
candle is real (not a filled gap) and every input kind has its full lookback
(so all families train and are evaluated on the same rows); its label may
still be UNKNOWN (the horizon runs past the data), which training drops.
Sequence inputs are built on demand from the kept grid (``sequences``): at
168 hours × 4 fields they are 30 times the size of the feature rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.candles.files import CandleSeries
from bse_predict.features.definitions import feature_matrix
from bse_predict.candles.grid import fill_gaps
from bse_predict.features.inputs import INPUT_LOOKBACK
from bse_predict.labels.first_touch import label_matrix
from bse_predict.features.sequences import sequence_rows
from bse_predict.serving.signals import target_label

__all__ = ["SymbolDataset", "build_dataset", "FIRST_ROW"]

FIRST_ROW = max(INPUT_LOOKBACK.values()) - 1
"""Index of the first grid row that every input kind can be built for."""


@dataclass(frozen=True)
class SymbolDataset:
    symbol: str
    open_time_ms: np.ndarray
    close: np.ndarray
    features: np.ndarray
    labels: dict[str, np.ndarray]
    grid_ohlcv: np.ndarray
    grid_rows: np.ndarray
    """Index of each kept row in ``grid_ohlcv``."""

    def sequences(self, mask: np.ndarray | None = None) -> np.ndarray:
        """float32[n, 168, 4] sequence inputs of the kept rows (or of ``mask``'s rows)."""
        rows = self.grid_rows if mask is None else self.grid_rows[mask]
        return sequence_rows(self.grid_ohlcv, rows)


def build_dataset(series: CandleSeries, targets_pct: Sequence[float], horizon_candles: int,
                  max_rows: int | None = None) -> SymbolDataset:
    """Rows of one symbol; ``max_rows`` keeps the newest rows (plus the lookback they need)."""
    if max_rows is not None:
        series = series.tail(max_rows + FIRST_ROW)
    grid = fill_gaps(series.open_time_ms, series.ohlcv, series.step_ms)
    features = feature_matrix(grid.open_time_ms, grid.ohlcv)
    enough_history = np.arange(len(grid.open_time_ms)) >= FIRST_ROW
    keep = grid.is_real & enough_history & np.isfinite(features).all(axis=1)
    labels = {
        target_label(pct): label_matrix(grid.ohlcv, grid.is_real, pct / 100.0, horizon_candles)[keep]
        for pct in targets_pct
    }
    return SymbolDataset(series.symbol, grid.open_time_ms[keep], grid.ohlcv[keep, 3], features[keep], labels,
                         grid.ohlcv, np.flatnonzero(keep))
