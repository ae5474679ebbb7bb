"""The trainer's own pipeline as the yardstick for what the worker publishes.

For a candle t, the reference takes every candle of the symbol that had
arrived by then with open_time <= t, fills the grid and runs
``feature_matrix`` over that whole history (the trainer's driver), then the
same ONNX models. It shares no code with the worker's window path beyond the
feature definitions themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bse_predict.features.definitions import LOOKBACK_CANDLES, feature_matrix
from bse_predict.candles.grid import fill_gaps
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.candles.schema import prediction_id

__all__ = ["expected_predictions"]


def expected_predictions(
    model_set: ServedModelSet, arrivals: Iterable[tuple[str, str, int, np.ndarray]], step_ms: int
) -> dict[str, dict[str, np.ndarray]]:
    """``arrivals``: closed candles in the order the worker receives them (symbol, timeframe,
    open_time, ohlcv). Returns id -> {target: probabilities} for every candle that must be
    predicted (the first arrival of an id, with a full lookback of grid history)."""
    known: dict[str, dict[int, np.ndarray]] = {}
    expected: dict[str, dict[str, np.ndarray]] = {}
    for symbol, timeframe, open_time, ohlcv in arrivals:
        history = known.setdefault(symbol, {})
        history[open_time] = ohlcv
        candle_id = prediction_id(symbol, timeframe, open_time)
        if candle_id in expected:
            continue
        times = np.array(sorted(t for t in history if t <= open_time), dtype=np.int64)
        if (open_time - times[0]) // step_ms + 1 < LOOKBACK_CANDLES:
            continue
        grid = fill_gaps(times, np.array([history[t] for t in times]), step_ms)
        features = feature_matrix(grid.open_time_ms, grid.ohlcv)[-1:]
        expected[candle_id] = {target: p[0] for target, p in model_set.predict({"features": features}).items()}
    return expected
