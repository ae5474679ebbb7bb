"""The honest score of a search: tuned against configured parameters and climatology on the outer folds.

Each outer fold fits the tuned parameters, the configured ones and climatology on the same training
rows (the search's rows and, purged, any earlier outer block), and scores its test block, which the
search never read. Differences per row get a paired block bootstrap
(:func:`bse_predict.evaluation.bootstrap.paired_bootstrap`) with blocks of at least the label horizon.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bse_predict.evaluation.bootstrap import day_blocks, paired_bootstrap
from bse_predict.evaluation.effective_sample import non_overlapping_windows
from bse_predict.evaluation.fold_predictions import FamilySplit
from bse_predict.tuning.fold_scores import climatology_fold_loss, family_fold_loss
from bse_predict.tuning.nested_folds import TargetFolds
from bse_predict.tuning.schema import OuterScore, TuneOptions

__all__ = ["score_outer"]


def score_outer(family: str, tuned: dict[str, Any], configured: dict[str, Any], data: TargetFolds,
                split: FamilySplit, options: TuneOptions, horizon_hours: int,
                advance: Callable[[], None] = lambda: None) -> OuterScore:
    tuned_loss, default_loss, climatology_loss = [], [], []
    for m in data.outer:
        tuned_loss.append(family_fold_loss(family, tuned, data.X, data.rows, m, split))
        default_loss.append(family_fold_loss(family, configured, data.X, data.rows, m, split))
        climatology_loss.append(climatology_fold_loss(data.rows, m))
        advance()
    test = np.concatenate([np.flatnonzero(m.test) for m in data.outer])
    times = data.rows.open_time_ms[test]
    block_days = options.bootstrap_block_days or max(1, math.ceil(horizon_hours / 24))
    blocks = day_blocks(times, block_days)
    t, d, c = (np.concatenate(parts) for parts in (tuned_loss, default_loss, climatology_loss))

    def difference(model: np.ndarray, reference: np.ndarray, salt: int) -> Any:
        return paired_bootstrap(model, reference, blocks, options.bootstrap_samples, options.confidence_level,
                                options.seed + salt)[0]

    return OuterScore(
        target=data.rows.target, rows=len(test),
        effective_rows=non_overlapping_windows(times, data.rows.symbol_index[test], horizon_hours * 3_600_000),
        outer_start_ms=data.outer_start_ms, log_loss_tuned=float(t.mean()), log_loss_default=float(d.mean()),
        log_loss_climatology=float(c.mean()), tuned_minus_default=difference(t, d, 0),
        tuned_minus_climatology=difference(t, c, 1), default_minus_climatology=difference(d, c, 2))
