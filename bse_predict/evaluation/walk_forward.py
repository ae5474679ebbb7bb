"""Purged, embargoed, expanding walk-forward folds over pooled time.

Boundaries are open times, shared by every symbol: a fold's test block is one
time range ``[test_start_ms, test_end_ms)`` and holds the rows of all symbols
that open inside it. The first ``initial_train_fraction`` of the pooled rows
(by time) only ever trains; the rest is cut into ``n_folds`` consecutive test
blocks of about equal row counts that cover it without overlap.

Training rows of a fold (:func:`training_mask`):

- **before the block and purged**: ``open_time + horizon_ms < test_start_ms``.
  A row's label reads the candles opening at ``open_time + 1 h`` up to
  ``open_time + horizon``; with the purge every one of them opens before the
  first test candle, so no training label shares a candle with any test
  row's entry or label window (barrier labels overlap by up to 72 h).
- **embargoed**: rows that open within ``embargo_ms`` after the end of any
  earlier test block are never used for training. Why, when training only
  looks backwards: the purge removes shared *label* candles, but serial
  correlation runs through the *inputs* too (feature windows reach back 168 h
  and barrier outcomes cluster in volatility regimes), so the rows just after
  a boundary are the ones most entangled with the block before it. In this
  expanding scheme those rows can only reach the training of later folds,
  whose test blocks lie further ahead, so the embargo is a conservative
  guard rather than a correction: it keeps every training set a subset of
  what a purged *and* embargoed k-fold (López de Prado, AFML ch. 7) would
  allow, so no fold's score depends on that choice, at a cost of
  ``embargo_ms`` of rows per earlier block.

Calibration out of fold (:func:`calibration_split`): the newest share of a
fold's training rows is held out for the calibrator, and the rows the family
is fit on are purged from it by the horizon in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bse_predict.errors import BsePredictError

__all__ = ["Fold", "FoldError", "make_folds", "block_mask", "training_mask", "calibration_split"]


class FoldError(BsePredictError):
    """The rows cannot be cut into the requested folds."""


@dataclass(frozen=True)
class Fold:
    """One test block ``[test_start_ms, test_end_ms)``; ``index`` counts from 0 in time order."""

    index: int
    test_start_ms: int
    test_end_ms: int


def make_folds(open_time_ms: np.ndarray, n_folds: int, initial_train_fraction: float) -> list[Fold]:
    """Consecutive test blocks after the initial training share, cut at open times so that
    each block holds about the same number of pooled rows. The last block ends one
    millisecond after the newest row."""
    if n_folds < 1:
        raise FoldError(f"folds must be >= 1, got {n_folds}")
    if not 0.0 < initial_train_fraction < 1.0:
        raise FoldError(f"initial_train_fraction must be in (0, 1), got {initial_train_fraction}")
    times = np.sort(np.asarray(open_time_ms, dtype=np.int64))
    unique = np.unique(times)
    if len(unique) < n_folds + 1:
        raise FoldError(f"{len(unique)} distinct open times cannot make {n_folds} folds and a training share")
    first_test = int(len(times) * initial_train_fraction)
    starts = [times[first_test + (len(times) - first_test) * k // n_folds] for k in range(n_folds)]
    starts = np.unique(np.asarray(starts, dtype=np.int64))
    if len(starts) < n_folds or starts[0] <= times[0]:
        raise FoldError(f"the rows after the initial training share are too few for {n_folds} folds")
    ends = np.append(starts[1:], times[-1] + 1)
    return [Fold(k, int(s), int(e)) for k, (s, e) in enumerate(zip(starts, ends, strict=True))]


def block_mask(fold: Fold, open_time_ms: np.ndarray) -> np.ndarray:
    """Rows whose open time lies in the fold's test block."""
    return (open_time_ms >= fold.test_start_ms) & (open_time_ms < fold.test_end_ms)


def training_mask(fold: Fold, folds: list[Fold], open_time_ms: np.ndarray, horizon_ms: int,
                  embargo_ms: int) -> np.ndarray:
    """Rows a fold may train on: purged before its test block, outside every embargo."""
    if horizon_ms < 0 or embargo_ms < 0:
        raise FoldError("horizon and embargo must be >= 0")
    train = open_time_ms + horizon_ms < fold.test_start_ms
    for earlier in folds:
        if earlier.test_end_ms <= fold.test_start_ms:
            train &= ~((open_time_ms >= earlier.test_end_ms) & (open_time_ms < earlier.test_end_ms + embargo_ms))
    return train


def calibration_split(train: np.ndarray, open_time_ms: np.ndarray, calibration_fraction: float,
                      horizon_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks (fit, calibration) inside ``train``: the newest ``calibration_fraction`` of the
    training rows (cut at an open time) calibrates; the fit rows end a horizon before it."""
    if not 0.0 <= calibration_fraction < 1.0:
        raise FoldError(f"calibration_fraction must be in [0, 1), got {calibration_fraction}")
    if calibration_fraction == 0.0 or not train.any():
        return train.copy(), np.zeros_like(train)
    times = np.sort(open_time_ms[train])
    cut_ms = times[min(int(len(times) * (1.0 - calibration_fraction)), len(times) - 1)]
    calibration = train & (open_time_ms >= cut_ms)
    fit = train & (open_time_ms + horizon_ms < cut_ms)
    return fit, calibration
