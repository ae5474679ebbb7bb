"""The input kinds a served model can ask for, built from the same gap-filled windows.

A model declares the inputs it reads by name (``features``: float32[B, F];
``sequence``: float32[B, 168, 4]); the worker builds exactly those from its
windows, with no code specific to any family. A family that reads several
kinds (the regime hybrid reads both) takes its rows as :class:`InputRows`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bse_predict.features.definitions import LOOKBACK_CANDLES, compute_features
from bse_predict.features.sequences import SEQUENCE_LOOKBACK, compute_sequences

__all__ = ["INPUT_LOOKBACK", "min_history", "build_inputs", "BatchInputs", "InputRows", "concat_rows"]

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


class BatchInputs:
    """One batch's model inputs over its gap-filled windows: each kind is computed once, on first use,
    for every row, and shared by every model that reads it (the A/B arms, the shadow, the fallback).

    The windows hold at least the history of every model served (``L >= min_history``); each kind
    reads only the newest rows it needs, so one computation serves models of any history.
    """

    def __init__(self, windows: np.ndarray, open_time_ms: np.ndarray) -> None:
        self.windows = windows
        self.open_time_ms = open_time_ms
        self._built: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.open_time_ms)

    def of_kind(self, kind: str) -> np.ndarray:
        """Every row's input of ``kind`` (computed on the first call)."""
        if kind not in self._built:
            self._built[kind] = build_inputs((kind,), self.windows, self.open_time_ms)[kind]
        return self._built[kind]

    def rows(self, kinds: Iterable[str], rows: Sequence[int]) -> dict[str, np.ndarray]:
        """{kind: its batch for ``rows``}, the ONNX feed of a model reading ``kinds``."""
        index = np.asarray(rows, dtype=np.intp)
        return {kind: self.of_kind(kind)[index] for kind in kinds}


class InputRows:
    """Rows of several input kinds, aligned row for row: indexing (a slice, a mask, an index
    array) selects the same rows of every kind, so trainers and checks that slice ``X`` work
    unchanged on a family that reads more than one input."""

    def __init__(self, parts: Mapping[str, np.ndarray]) -> None:
        lengths = {kind: len(value) for kind, value in parts.items()}
        if not parts or len(set(lengths.values())) != 1:
            raise ValueError(f"input kinds must have the same number of rows, got {lengths}")
        self.parts: dict[str, np.ndarray] = dict(parts)

    def __len__(self) -> int:
        return len(next(iter(self.parts.values())))

    def __getitem__(self, rows: Any) -> InputRows:
        return InputRows({kind: value[rows] for kind, value in self.parts.items()})

    def feed(self) -> dict[str, np.ndarray]:
        """The ONNX feed: every kind as contiguous float32."""
        return {kind: np.ascontiguousarray(value, dtype=np.float32) for kind, value in self.parts.items()}


def concat_rows(parts: Sequence[np.ndarray | InputRows]) -> np.ndarray | InputRows:
    """``np.concatenate`` for model inputs, whether plain arrays or :class:`InputRows`."""
    if parts and isinstance(parts[0], InputRows):
        kinds = parts[0].parts
        return InputRows({kind: np.concatenate([p.parts[kind] for p in parts]) for kind in kinds})  # type: ignore[union-attr]
    return np.concatenate(parts)  # type: ignore[arg-type]
