"""The mixture weights' penalty, chosen on purged inner folds of time instead of fixed.

A fixed penalty (:mod:`bse_predict.ensembles.weight_fit`) is on the scale of a
mean log loss, so it cannot suit every amount of data: 0.1 was chosen on
4,000-hour slices, where the members earn little over climatology, and on the
whole futures history it kept 0.52 to 0.98 of the weight on climatology while
the members beat climatology on the holdout by 0.03 at 2 % and 0.12 at 5 %
(docs/models/ensembles.md). Here every candidate penalty fits the weights on each
inner fold's training rows (:mod:`bse_predict.ensembles.inner_folds`) and predicts
its test block; the penalty with the lowest inner out-of-fold log loss wins.
Too few rows for inner folds, or no fold to score: the strongest candidate, the
choice that trusts the members least.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.ensembles.combiners import log_loss, weighted_average
from bse_predict.ensembles.inner_folds import inner_folds
from bse_predict.ensembles.weight_fit import fit_weights

__all__ = ["PenaltyChoice", "choose_penalty"]


@dataclass(frozen=True)
class PenaltyChoice:
    """The chosen penalty and each candidate's inner out-of-fold log loss (empty when none was scored)."""

    penalty: float
    inner_log_loss: dict[float, float]


def choose_penalty(mixture_probs: np.ndarray, y: np.ndarray, open_time_ms: np.ndarray, penalties: Sequence[float],
                   folds: int, purge_ms: int, toward: int | None = None) -> PenaltyChoice:
    """The penalty of ``penalties`` whose weights (pulled toward member ``toward``) predict the inner
    test blocks of ``mixture_probs`` [M, n, 3] best; see the module docstring."""
    if not penalties:
        raise ValueError("choose_penalty needs at least one candidate penalty")
    strongest = float(max(penalties))
    mixed = {float(p): np.full((len(y), 3), np.nan) for p in penalties}
    for train, test in inner_folds(open_time_ms, folds, purge_ms):
        if len(np.unique(y[train])) < 2:  # nothing to fit on: these rows stay out of every score
            continue
        for penalty, rows in mixed.items():
            rows[test] = weighted_average(mixture_probs[:, test], fit_weights(mixture_probs[:, train], y[train],
                                                                              penalty, toward))[0]
    scored = np.isfinite(mixed[strongest][:, 0])
    if not scored.any():
        return PenaltyChoice(penalty=strongest, inner_log_loss={})
    losses = {penalty: log_loss(rows[scored], y[scored]) for penalty, rows in mixed.items()}
    return PenaltyChoice(penalty=min(losses, key=lambda p: (losses[p], -p)), inner_log_loss=losses)
