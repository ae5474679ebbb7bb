"""Up-vs-down AUC three ways, each with a block-bootstrap interval.

- **pooled**: one AUC over every out-of-fold touched row. A model whose score
  level follows each fold's base rate gains pooled AUC without ranking any
  row within a fold (climatology scores a pooled AUC other than 0.5);
- **mean of within-fold AUCs**: each fold ranked on its own, folds equally
  weighted;
- **fold-demeaned**: one AUC over every touched row after subtracting from
  each row's score the mean score of its fold's test rows (all of them,
  touched or not, so no label enters the shift). Folds weigh by their rows,
  and the between-fold part of the pooled AUC is gone.

The score is the up share p_up / (p_up + p_down), as the plain AUC ranks it
(:func:`bse_predict.evaluation.scoring.auc_score`). The intervals come from
one set of block-bootstrap replicates shared by every statistic of a model:
blocks of whole days (:func:`bse_predict.evaluation.bootstrap.day_blocks`, at
least the label horizon) drawn with replacement, each row weighted by its
block's draw count, every AUC recomputed with those weights (a tie counts
one half). A replicate in which a group has no up or no down weight is left
out of that group's interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.evaluation.schema import AucIntervals, Interval
from bse_predict.evaluation.scoring import auc_score
from bse_predict.labels.first_touch import NONE, UP

__all__ = ["auc_intervals", "fold_demeaned", "symbol_auc_intervals", "weighted_auc"]

_CELLS_PER_CHUNK = 2_000_000
"""Replicates are scored in chunks of at most this many (replicate, row) weights."""


def fold_demeaned(score: np.ndarray, fold_of_row: np.ndarray) -> np.ndarray:
    """``score`` minus the mean score of the row's fold (taken about the fold's minimum, so a fold of
    equal scores becomes exactly 0)."""
    folds = np.unique(fold_of_row, return_inverse=True)[1]
    minimum = np.full(int(folds.max()) + 1 if len(folds) else 0, np.inf)
    np.minimum.at(minimum, folds, score)
    shifted = score - minimum[folds]
    return shifted - (np.bincount(folds, weights=shifted) / np.bincount(folds))[folds]


@dataclass(frozen=True)
class _Ranked:
    """Rows sorted by score: their block, whether each is an up outcome, and where each run of tied scores starts."""

    blocks: np.ndarray
    positive: np.ndarray
    starts: np.ndarray


def _ranked(score: np.ndarray, positive: np.ndarray, blocks: np.ndarray) -> _Ranked | None:
    """The rows ready for :func:`_auc`; ``None`` when they lack up or down outcomes."""
    if positive.all() or not positive.any():
        return None
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return _Ranked(blocks[order], positive[order].astype(np.float64), starts)


def _auc(ranked: _Ranked, block_weights: np.ndarray) -> np.ndarray:
    """float[c]: the AUC under each row of ``block_weights`` (c, blocks); NaN where a class weighs nothing."""
    weights = block_weights[:, ranked.blocks]
    up = np.add.reduceat(weights * ranked.positive, ranked.starts, axis=1)
    down = np.add.reduceat(weights * (1.0 - ranked.positive), ranked.starts, axis=1)
    below = np.cumsum(down, axis=1) - down
    pairs = up.sum(axis=1) * down.sum(axis=1)
    wins = np.sum(up * (below + 0.5 * down), axis=1)
    return np.divide(wins, pairs, out=np.full(len(pairs), np.nan), where=pairs > 0)


def weighted_auc(score: np.ndarray, positive: np.ndarray, row_weights: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``positive`` against the rest, each row counted ``row_weights`` times."""
    ranked = _ranked(np.asarray(score, dtype=np.float64), np.asarray(positive, dtype=bool),
                     np.arange(len(score)))
    if ranked is None:
        return float("nan")
    return float(_auc(ranked, np.asarray(row_weights, dtype=np.float64)[None, :])[0])


def _replicates(ranked: _Ranked, replicate_weights: np.ndarray) -> np.ndarray:
    chunk = max(1, _CELLS_PER_CHUNK // max(1, len(ranked.blocks)))
    return np.concatenate([_auc(ranked, replicate_weights[i:i + chunk])
                           for i in range(0, len(replicate_weights), chunk)])


def _interval(estimate: float, replicates: np.ndarray, level: float) -> Interval | None:
    finite = replicates[np.isfinite(replicates)]
    if not np.isfinite(estimate) or len(finite) == 0:
        return None
    alpha = (1.0 - level) / 2.0
    lower, upper = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(estimate=float(estimate), lower=float(lower), upper=float(upper))


def _mean_of_finite(replicates: np.ndarray) -> np.ndarray:
    """Column means over the finite entries of (folds, replicates); NaN for a column with none."""
    finite = np.isfinite(replicates)
    counts = finite.sum(axis=0)
    sums = np.where(finite, replicates, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(len(counts), np.nan), where=counts > 0)


def auc_intervals(probabilities: np.ndarray, labels: np.ndarray, fold_of_row: np.ndarray, n_folds: int,
                  blocks: np.ndarray, block_days: int, samples: int, level: float, seed: int) -> AucIntervals:
    """The pooled, mean-of-folds and fold-demeaned AUCs of one model's out-of-fold rows, and each fold's,
    with percentile intervals at ``level`` from ``samples`` block-bootstrap replicates over ``blocks``
    (block id of every row, 0 to n - 1)."""
    n_blocks = int(blocks.max()) + 1
    replicate_weights = np.random.default_rng(seed).multinomial(
        n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=samples).astype(np.float64)
    touched = labels != NONE
    score = auc_score(probabilities)
    positive = labels == UP
    unit = np.ones((1, n_blocks))

    def estimate_and_replicates(values: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        ranked = _ranked(values[rows], positive[rows], blocks[rows])
        if ranked is None:
            return float("nan"), np.full(samples, np.nan)
        return float(_auc(ranked, unit)[0]), _replicates(ranked, replicate_weights)

    pooled = estimate_and_replicates(score, touched)
    demeaned = estimate_and_replicates(fold_demeaned(score, fold_of_row), touched)
    by_fold = [estimate_and_replicates(score, touched & (fold_of_row == k)) for k in range(n_folds)]
    scored = [(e, r) for e, r in by_fold if np.isfinite(e)]
    mean_of_folds = _interval(float(np.mean([e for e, _ in scored])), _mean_of_finite(
        np.vstack([r for _, r in scored])), level) if scored else None
    return AucIntervals(
        pooled=_interval(*pooled, level), within_fold_mean=mean_of_folds,
        fold_demeaned=_interval(*demeaned, level), by_fold=tuple(_interval(*f, level) for f in by_fold),
        blocks=n_blocks, block_days=block_days)


def symbol_auc_intervals(probabilities: np.ndarray, labels: np.ndarray, fold_of_row: np.ndarray, n_folds: int,
                         symbol_of_row: np.ndarray, symbol_names: Sequence[str], blocks: np.ndarray, block_days: int,
                         samples: int, level: float, seed: int) -> dict[str, AucIntervals]:
    """:func:`auc_intervals` on each symbol's rows alone, its blocks those the symbol occupies; symbols
    without rows are left out."""
    out = {}
    for index, name in enumerate(symbol_names):
        rows = symbol_of_row == index
        if rows.any():
            own_blocks = np.unique(blocks[rows], return_inverse=True)[1]
            out[name] = auc_intervals(probabilities[rows], labels[rows], fold_of_row[rows], n_folds, own_blocks,
                                      block_days, samples, level, seed)
    return out
