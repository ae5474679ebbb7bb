"""Nested walk-forward folds: the search sees the earlier folds only, the later ones score its result.

The pooled rows of a target are cut into expanding, purged and embargoed walk-forward folds exactly as
``bse-predict evaluate`` cuts them (:func:`bse_predict.evaluation.walk_forward.make_folds`,
:func:`bse_predict.evaluation.fold_predictions.fold_masks`). The first ``folds - outer_folds`` are the
*inner* folds the search scores trials on; the rest are the *outer* folds. Every inner mask is cut to
the rows whose label window ends before the first outer test row opens
(``open_time + horizon < outer start``): an inner test row near the boundary would otherwise carry a
label decided by candles of the outer block, and the search would have peeked at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.evaluation.fold_predictions import FoldMasks, fold_masks
from bse_predict.evaluation.walk_forward import make_folds
from bse_predict.families import get_model
from bse_predict.training.dataset import SymbolDataset
from bse_predict.training.pooling import PooledRows, pool_inputs, pool_rows
from bse_predict.tuning.errors import TuningError
from bse_predict.tuning.schema import TuneOptions

__all__ = ["TargetFolds", "nested_masks", "target_folds"]


@dataclass(frozen=True)
class TargetFolds:
    """One target's pooled rows, the family's inputs for them, and the two sets of folds."""

    rows: PooledRows
    X: np.ndarray
    inner: list[FoldMasks]
    outer: list[FoldMasks]

    @property
    def outer_start_ms(self) -> int:
        return self.outer[0].fold.test_start_ms

    def seen(self) -> np.ndarray:
        """Rows the search reads in any way (to fit, calibrate or score a trial)."""
        seen = np.zeros(len(self.rows), dtype=bool)
        for m in self.inner:
            seen |= m.train | m.fit | m.calibration | m.test
        return seen


def nested_masks(rows: PooledRows, options: TuneOptions, horizon_ms: int) -> tuple[list[FoldMasks], list[FoldMasks]]:
    """(inner, outer) fold masks of the pooled rows."""
    folds = make_folds(rows.open_time_ms, options.folds, options.initial_train_fraction)
    masks = fold_masks(rows, folds, horizon_ms, options.embargo_hours * 3_600_000, options.calibration_fraction)
    n_inner = options.folds - options.outer_folds
    before = rows.open_time_ms + horizon_ms < folds[n_inner].test_start_ms
    inner = [FoldMasks(m.fold, m.train & before, m.fit & before, m.calibration & before, m.test & before)
             for m in masks[:n_inner]]
    if not all(m.test.any() and m.fit.any() for m in inner):
        raise TuningError(f"target {rows.target}: an inner fold has no rows once purged from the outer folds; "
                          "give more rows or fewer folds")
    return inner, masks[n_inner:]


def target_folds(datasets: Sequence[SymbolDataset], target: str, family: str, options: TuneOptions,
                 timeframe_ms: int, horizon_ms: int) -> TargetFolds:
    rows = pool_rows(datasets, target, timeframe_ms)
    if len(rows) == 0:
        raise TuningError(f"target {target}: no labelled rows")
    inner, outer = nested_masks(rows, options, horizon_ms)
    # every tunable family keeps the base prepare_data, whose inputs depend on the input kind alone
    X = pool_inputs(get_model(family), datasets, rows)
    return TargetFolds(rows, np.asarray(X), inner, outer)
