"""Regularise stacking, or drop it: its L2 strength chosen on inner folds, kept only if it beats the mixture.

The rows the ensemble's combiners are fitted on (the members' out-of-fold
predictions, in the trainer's order: per symbol, oldest first) are cut into
``folds`` contiguous blocks. Each block in turn is the inner test block; the
inner training rows are the others, less ``purge_rows`` on each side of the
block (a label overlaps the next ``horizon`` rows). On every block the
stacking meta-learner is fitted at each candidate ``C`` (inverse L2 strength)
and the weighted mixture's weights (:func:`bse_predict.ensembles.weight_fit.fit_weights`)
on the same inner training rows; both predict the block. The ``C`` with the
lowest inner out-of-fold log loss wins; stacking is *kept* only when that log
loss is below the mixture's on the same rows, else the ensemble serves the
weighted mixture in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

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


def inner_folds(n_rows: int, folds: int, purge_rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, test rows) index arrays: ``folds`` contiguous test blocks, each one's training
    rows every other row farther than ``purge_rows`` from it."""
    if folds < 2:
        raise ValueError(f"inner folds must be at least 2, got {folds}")
    edges = np.linspace(0, n_rows, folds + 1).astype(int)
    rows = np.arange(n_rows)
    out = []
    for start, end in pairwise(edges):
        train = (rows < start - purge_rows) | (rows >= end + purge_rows)
        out.append((rows[train], rows[start:end]))
    return out


def choose_stacking(probs: np.ndarray, mixture_probs: np.ndarray, y: np.ndarray, cs: Sequence[float], folds: int,
                    purge_rows: int, penalty: float, seed: int, toward: int | None = None) -> StackingChoice:
    """See the module docstring. ``probs`` [M, n, 3] are the members' (what stacking reads),
    ``mixture_probs`` the mixture's members (with the climatology member, when there is one, whose
    index ``toward`` is: the weights' penalty pulls toward it)."""
    if not cs:
        raise ValueError("choose_stacking needs at least one candidate C")
    stacked = {c: np.empty((len(y), 3)) for c in cs}
    mixed = np.empty((len(y), 3))
    for train, test in inner_folds(len(y), folds, purge_rows):
        weights = fit_weights(mixture_probs[:, train], y[train], penalty, toward)
        mixed[test] = weighted_average(mixture_probs[:, test], weights)[0]
        for c in cs:
            combiner = StackingCombiner.fit(probs[:, train], y[train], c, seed)
            stacked[c][test] = stacking_predict(probs[:, test], combiner)[0]
    losses = {c: log_loss(p, y) for c, p in stacked.items()}
    best = min(cs, key=lambda c: losses[c])
    return StackingChoice(c=float(best), stacking_log_loss=losses[best], mixture_log_loss=log_loss(mixed, y))
