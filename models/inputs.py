"""The input kinds a served model can ask for, built from the same gap-filled windows.

A model declares the inputs it reads by name (``features``: float32[B, F];
``sequence``: float32[B, 168, 4]); the worker builds exactly those from its
windows, with no code specific to any family.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.features import LOOKBACK_CANDLES, compute_features
from models.sequences import SEQUENCE_LOOKBACK, compute_sequences

__all__ = ["INPUT_LOOKBACK", "min_history", "build_inputs"]

INPUT_LOOKBACK: dict[str, int] = {"features": LOOKBACK_CANDLES, "sequence": SEQUENCE_LOOKBACK}


def min_history(kinds: Iterable[str]) -> int:
    """Rows of gap-filled history the given inputs need, the current candle included."""
    unknown = set(kinds) - set(INPUT_LOOKBACK)
    if unknown:
        raise ValueError(f"unknown input kinds {sorted(unknown)}; known: {sorted(INPUT_LOOKBACK)}")
    return max(INPUT_LOOKBACK[k] for k in kinds)


def build_inputs(kinds: Iterable[str], windows: np.ndarray, open_time_ms: np.ndarray) -> dict[str, np.ndarray]:
    """float64[B, L, 5] windows (L >= min_history(kinds)) -> {kind: batch}."""
    inputs: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "features":
            inputs[kind] = compute_features(np.ascontiguousarray(windows[:, -LOOKBACK_CANDLES:]), open_time_ms)
        elif kind == "sequence":
            inputs[kind] = compute_sequences(windows)
        else:
            raise ValueError(f"unknown input kind {kind!r}")
    return inputs
