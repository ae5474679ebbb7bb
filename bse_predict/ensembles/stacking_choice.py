"""Regularise stacking, or drop it: its L2 strength chosen on inner folds, kept only if it beats the mixture.

Inner folds: :mod:`bse_predict.ensembles.inner_folds` (cut by time, not by rows: kept on folds of rows,
stacking lost to climatology out of fold at 2 %). On every block the stacking
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
from bse_predict.ensembles.inner_folds import inner_folds
from bse_predict.ensembles.weight_fit import fit_weights

__all__ = ["StackingChoice", "choose_stacking"]


@dataclass(frozen=True)
class StackingChoice:
    """The chosen ``c`` and the inner out-of-fold log losses that decided whether stacking is kept."""

    c: float
    stacking_log_loss: float
    mixture_log_loss: float

    @property
    def kept(self) -> bool:
        return self.stacking_log_loss < self.mixture_log_loss


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
