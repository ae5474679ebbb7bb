"""Regularise stacking, or drop it: its L2 strength chosen on inner folds, kept only if it beats the mixture.

The rows the ensemble's combiners are fitted on (the members' out-of-fold
predictions, pooled over symbols) are cut into ``folds`` blocks of *open time*,
equally many rows each, every symbol's rows of an hour in the same block. Each
block in turn is the inner test block; the inner training rows are those that
open more than ``purge_ms`` (the label horizon) before the block starts or
after it ends. Blocks of time, not of rows: the rows come per symbol, oldest
first, so blocks of rows would test one symbol on a model fitted on the other
symbols' same hours, which move together, and stacking would look better
there than it is on the next months (measured: kept on such folds, it lost
to climatology out of fold at 2 %). On every block the stacking
meta-learner is fitted at each candidate ``C`` (inverse L2 strength) and the
weighted mixture's weights (:func:`bse_predict.ensembles.weight_fit.fit_weights`)
on the same inner training rows; both predict the block. The ``C`` with the
lowest inner out-of-fold log loss wins; stacking is *kept* only when that log
loss is below the mixture's on the same rows, else the ensemble serves the
weighted mixture in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.ensembles.combiners import StackingCombiner, log_loss, stacking_predict, weighted_average
from bse_predict.ensembles.weight_fit import fit_weights

__all__ = ["StackingChoice", "inner_folds", "choose_stacking"]


@dataclass(frozen=True)
class StackingChoice:
    """The chosen ``c`` and the inner out-of-fold log losses that decided whether stacking is kept."""

    c: float
    stacking_log_loss: float
    mixture_log_loss: float

    @property
    def kept(self) -> bool:
        return self.stacking_log_loss < self.mixture_log_loss


def inner_folds(open_time_ms: np.ndarray, folds: int, purge_ms: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, test rows) index arrays: ``folds`` blocks of open time (see the module docstring),
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


def choose_stacking(probs: np.ndarray, mixture_probs: np.ndarray, y: np.ndarray, open_time_ms: np.ndarray,
                    cs: Sequence[float], folds: int, purge_ms: int, penalty: float, seed: int,
                    toward: int | None = None) -> StackingChoice:
    """See the module docstring. ``probs`` [M, n, 3] are the members' (what stacking reads),
    ``mixture_probs`` the mixture's members (with the climatology member, when there is one, whose
    index ``toward`` is: the weights' penalty pulls toward it)."""
    if not cs:
        raise ValueError("choose_stacking needs at least one candidate C")
    stacked = {c: np.full((len(y), 3), np.nan) for c in cs}
    mixed = np.full((len(y), 3), np.nan)
    for train, test in inner_folds(open_time_ms, folds, purge_ms):
        if len(np.unique(y[train])) < 2:  # nothing to fit on: these rows stay out of both scores
            continue
        weights = fit_weights(mixture_probs[:, train], y[train], penalty, toward)
        mixed[test] = weighted_average(mixture_probs[:, test], weights)[0]
        for c in cs:
            combiner = StackingCombiner.fit(probs[:, train], y[train], c, seed)
            stacked[c][test] = stacking_predict(probs[:, test], combiner)[0]
    scored = np.isfinite(mixed[:, 0])
    if not scored.any():
        return StackingChoice(c=float(min(cs)), stacking_log_loss=float("inf"), mixture_log_loss=float("inf"))
    losses = {c: log_loss(p[scored], y[scored]) for c, p in stacked.items()}
    best = min(cs, key=lambda c: losses[c])
    return StackingChoice(c=float(best), stacking_log_loss=losses[best],
                          mixture_log_loss=log_loss(mixed[scored], y[scored]))
