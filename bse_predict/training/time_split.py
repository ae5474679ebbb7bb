"""The trainer's cut of every served series into training, validation and holdout rows: calendar times.

The boundaries are open times shared by every series, placed so that the newest
``holdout_fraction`` of all the series' rows together are held out (and, among
the rows before the holdout, the newest ``validation_fraction`` are the
validation slice). Shared because series move together: cut each one at its own
share and spot BTC, whose history is longer, would train on hours of futures
BTC's holdout, whose outcomes are nearly the same, and the holdout would flatter
the model. Every training row's label horizon ends before the validation slice's
first hour and every validation row's before the holdout's (the purge); the rows
in between are used by neither. The boundaries come from the rows' hours, not
from the rows one target can label, so every target and family trains on the
same hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NEVER", "SeriesSplit", "calendar_cut", "split_series"]

NEVER = int(np.iinfo(np.int64).max // 2)
"""A boundary no row reaches (nothing held out); halved so that adding a horizon cannot overflow."""


@dataclass(frozen=True)
class SeriesSplit:
    """Boolean masks over one series' rows."""

    train: np.ndarray
    validation: np.ndarray
    holdout: np.ndarray


def calendar_cut(open_time_ms: Sequence[np.ndarray], fraction: float) -> int:
    """The open time from which the newest ``fraction`` of all the series' rows together lie;
    :data:`NEVER` when ``fraction`` is 0 or there are no rows."""
    times = np.sort(np.concatenate([np.asarray(t, dtype=np.int64) for t in open_time_ms])) if open_time_ms \
        else np.empty(0, dtype=np.int64)
    first = int(len(times) * (1.0 - fraction))
    if fraction <= 0 or first >= len(times):
        return NEVER
    return int(times[first])


def split_series(open_time_ms: Sequence[np.ndarray], holdout_fraction: float, validation_fraction: float,
                 horizon_ms: int) -> list[SeriesSplit]:
    """One :class:`SeriesSplit` per series of ``open_time_ms``, at the shared boundaries of the module
    docstring."""
    holdout_start = calendar_cut(open_time_ms, holdout_fraction)
    before_holdout = [np.asarray(t, dtype=np.int64) + horizon_ms < holdout_start for t in open_time_ms]
    validation_start = calendar_cut([t[b] for t, b in zip(open_time_ms, before_holdout, strict=True)],
                                    validation_fraction)
    splits = []
    for times, before in zip(open_time_ms, before_holdout, strict=True):
        times = np.asarray(times, dtype=np.int64)
        splits.append(SeriesSplit(train=before & (times + horizon_ms < validation_start),
                                  validation=before & (times >= validation_start),
                                  holdout=times >= holdout_start))
    return splits
