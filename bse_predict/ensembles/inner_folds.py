"""Purged inner folds of open time over the rows an ensemble's combiners are fitted on.

Those rows (the members' out-of-fold predictions, pooled over symbols) are cut
into ``folds`` blocks of *open time*, equally many rows each, every symbol's
rows of an hour in the same block. Each block in turn is the inner test block;
the inner training rows are those that open more than ``purge_ms`` (the label
horizon) before the block starts or after it ends. Blocks of time, not of rows:
the rows come per symbol, oldest first, so blocks of rows would test one symbol
on a model fitted on the other symbols' same hours, which move together, and a
combiner would look better there than it is on the next months.
"""

from __future__ import annotations

import numpy as np

__all__ = ["inner_folds"]


def inner_folds(open_time_ms: np.ndarray, folds: int, purge_ms: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, test rows) index arrays: ``folds`` blocks of open time,
    each one's training rows those opening more than ``purge_ms`` before its start or after its end;
    a block without rows is left out."""
    if folds < 2:
        raise ValueError(f"inner folds must be at least 2, got {folds}")
    times = np.asarray(open_time_ms, dtype=np.int64)
    ordered = np.sort(times)
    starts = ordered[(np.arange(folds) * len(ordered)) // folds]
    ends = np.append(starts[1:], np.iinfo(np.int64).max // 2)
    block = np.searchsorted(starts, times, side="right") - 1
    out = []
    for k in range(folds):
        test = np.flatnonzero(block == k)
        if len(test):
            train = np.flatnonzero((times < starts[k] - purge_ms) | (times >= ends[k] + purge_ms))
            out.append((train, test))
    return out
