"""Rows of many symbols pooled into one table, with each row's symbol and open time kept.

Within a symbol rows stay in time order; symbols follow one another. A row
is a candle with a known label for the target (the rows
:meth:`BasePredictor.prepare_data` returns). A family's inputs are pooled the
same way from its own ``prepare_data``, whatever their shape (feature rows
[n, F] or sequences [n, 168, 4]), and checked to line up row for row with
the pooled labels, so every family and baseline is scored on the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.training.dataset import SymbolDataset
from bse_predict.errors import BsePredictError
from bse_predict.families import BasePredictor
from bse_predict.features.inputs import InputRows, concat_rows
from bse_predict.labels.first_touch import UNKNOWN

__all__ = ["PooledRows", "PoolingError", "pool_rows", "pool_inputs", "prepare_key"]

_MS_PER_DAY = 86_400_000


class PoolingError(BsePredictError):
    """A family's inputs do not line up with the pooled rows."""


@dataclass(frozen=True)
class PooledRows:
    target: str
    symbols: tuple[str, ...]
    symbol_index: np.ndarray
    """int64[n]: position in ``symbols`` of each row."""
    open_time_ms: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    """float64[n, F]: the feature rows (the logistic baseline's input)."""
    return_24h: np.ndarray
    """log(close / close 24 h earlier) on the gap-filled grid (the momentum baseline's input)."""

    def __len__(self) -> int:
        return len(self.labels)


def _known(dataset: SymbolDataset, target: str) -> np.ndarray:
    return dataset.labels[target] != UNKNOWN


def _return_24h(dataset: SymbolDataset, mask: np.ndarray, timeframe_ms: int) -> np.ndarray:
    steps = max(_MS_PER_DAY // timeframe_ms, 1)
    rows = dataset.grid_rows[mask]
    close = dataset.grid_ohlcv[:, 3]
    earlier = np.maximum(rows - steps, 0)
    return np.log(close[rows] / close[earlier])


def pool_rows(datasets: Sequence[SymbolDataset], target: str, timeframe_ms: int) -> PooledRows:
    masks = [_known(d, target) for d in datasets]
    return PooledRows(
        target=target,
        symbols=tuple(d.symbol for d in datasets),
        symbol_index=np.concatenate([np.full(int(m.sum()), i, dtype=np.int64) for i, m in enumerate(masks)]),
        open_time_ms=np.concatenate([d.open_time_ms[m] for d, m in zip(datasets, masks, strict=True)]).astype(np.int64),
        labels=np.concatenate([d.labels[target][m] for d, m in zip(datasets, masks, strict=True)]).astype(np.int64),
        features=np.concatenate([d.features[m] for d, m in zip(datasets, masks, strict=True)]),
        return_24h=np.concatenate([_return_24h(d, m, timeframe_ms) for d, m in zip(datasets, masks, strict=True)]),
    )


def prepare_key(model: BasePredictor, family: str) -> tuple[object, ...]:
    """Families whose inputs are provably the same share one pooled copy: those that keep
    the base ``prepare_data`` (which depends on the input kind alone). An override may read
    its own hyperparameters, so it gets a copy of its own."""
    if type(model).prepare_data is BasePredictor.prepare_data:
        return ("base", model.input_kind)
    return ("own", family)


def pool_inputs(model: BasePredictor, datasets: Sequence[SymbolDataset], rows: PooledRows) -> np.ndarray | InputRows:
    """The family's inputs of every symbol, concatenated in the order of ``rows``."""
    parts = []
    for i, dataset in enumerate(datasets):
        X, y = model.prepare_data(dataset, rows.target)
        expected = rows.labels[rows.symbol_index == i]
        if len(X) != len(expected) or not np.array_equal(np.asarray(y, dtype=np.int64), expected):
            raise PoolingError(
                f"{model.family}.prepare_data on {dataset.symbol} {rows.target} returned {len(X)} rows whose labels "
                f"differ from the {len(expected)} labelled rows; it must return the rows with a known label, "
                "in time order")
        parts.append(X)
    return concat_rows(parts)
