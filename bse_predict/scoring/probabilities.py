"""The formulas on rows of class probabilities ``(p_up, p_down, p_none)``: the one home of each.

- ``confidence = max(p_up, p_down) / (p_up + p_down)``, 0.5 where both are 0;
- the up share ``p_up / (p_up + p_down)``, 0.5 where both are 0: the score of the up-vs-down AUC;
- the called side: up when ``p_up >= p_down`` (a tie calls up), else down;
- log loss ``-log max(p_y, PROBABILITY_FLOOR)`` of the outcome ``y``;
- Brier ``sum_k (p_k - [y = k])^2``, the three-class score (0 best, 2 worst);
- climatology: the class shares of a set of labels, Jeffreys-smoothed (+0.5 per
  class), so that a class never seen still has a finite log loss;
- calibration bins: rows counted by bin of a probability, with the sums of
  that probability and of the hits in each bin.

Pure numpy, vectorised over rows; no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from bse_predict.labels.first_touch import DOWN, UP

__all__ = [
    "PROBABILITY_FLOOR",
    "CalibrationBins",
    "confidence",
    "up_share",
    "called_side",
    "outcome_log_loss",
    "row_log_loss",
    "row_brier",
    "climatology_shares",
    "bin_index",
    "calibration_bins",
]

PROBABILITY_FLOOR = 1e-12
"""The probability of an outcome is raised to this before its log is taken: one row costs at most ~27.6 nats."""

_PSEUDO_COUNT = 0.5
"""Jeffreys' prior: half an observation of every class before the labels are counted."""
_ONE_HOT = np.eye(3)
_ONE_HOT.flags.writeable = False


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """max(p_up, p_down) / (p_up + p_down) over the last axis (up, down, none); 0.5 where p_up + p_down is 0."""
    p = np.asarray(probabilities, dtype=np.float64)
    up, down = p[..., UP], p[..., DOWN]
    touched = up + down
    return np.where(touched > 0, np.maximum(up, down) / np.where(touched > 0, touched, 1.0), 0.5)


def up_share(probabilities: np.ndarray) -> np.ndarray:
    """p_up / (p_up + p_down) over the last axis (up, down, none); 0.5 where p_up + p_down is 0."""
    p = np.asarray(probabilities, dtype=np.float64)
    up, touched = p[..., UP], p[..., UP] + p[..., DOWN]
    return np.where(touched > 0, up / np.where(touched > 0, touched, 1.0), 0.5)


def called_side(probabilities: np.ndarray) -> np.ndarray:
    """The class index of the called side over the last axis: UP where p_up >= p_down, else DOWN."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.where(p[..., UP] >= p[..., DOWN], UP, DOWN)


def outcome_log_loss(p_of_outcome: np.ndarray) -> np.ndarray:
    """-log p of the outcome that happened, with p raised to :data:`PROBABILITY_FLOOR` first."""
    return -np.log(np.maximum(np.asarray(p_of_outcome, dtype=np.float64), PROBABILITY_FLOOR))


def row_log_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float[n]: :func:`outcome_log_loss` of ``probabilities[i, labels[i]]`` for rows float[n, 3]."""
    labels = np.asarray(labels, dtype=np.int64)
    return outcome_log_loss(np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels])


def row_brier(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float[n]: sum over the three classes of (p - onehot(label))^2 per row (0 to 2)."""
    onehot = _ONE_HOT[np.asarray(labels, dtype=np.int64)]
    return np.sum((np.asarray(probabilities, dtype=np.float64) - onehot) ** 2, axis=1)


def climatology_shares(labels: np.ndarray) -> np.ndarray:
    """float64[3]: the (up, down, none) shares of ``labels``, each class counted +0.5 first."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=3).astype(np.float64) + _PSEUDO_COUNT
    return counts / counts.sum()


def bin_index(p: np.ndarray, bins: int | Sequence[float]) -> np.ndarray:
    """The bin of each probability in ``p``.

    ``bins`` an int: ``bins`` equal-width bins on [0, 1], index ``floor(p * bins)``
    with p = 1 in the last bin. ``bins`` a sequence of increasing edges: bin i
    holds ``edges[i] <= p < edges[i + 1]``, the last bin also its upper edge;
    -1 for a value outside the edges.
    """
    values = np.asarray(p, dtype=np.float64)
    if isinstance(bins, Integral):
        return np.minimum((values * bins).astype(np.int64), bins - 1)
    edges = np.asarray(bins, dtype=np.float64)
    index = np.searchsorted(edges, values, side="right") - 1
    index = np.where(values == edges[-1], len(edges) - 2, index)
    return np.where((values >= edges[0]) & (values <= edges[-1]), index, -1)


@dataclass(frozen=True)
class CalibrationBins:
    """Per bin: its edges, the number of rows in it, and the sums of their probabilities and hits."""

    lower: np.ndarray
    upper: np.ndarray
    rows: np.ndarray
    sum_p: np.ndarray
    sum_hit: np.ndarray

    @property
    def mean_p(self) -> np.ndarray:
        """sum_p / rows; NaN for an empty bin."""
        return np.divide(self.sum_p, self.rows, out=np.full(len(self.rows), np.nan), where=self.rows > 0)

    @property
    def hit_rate(self) -> np.ndarray:
        """sum_hit / rows; NaN for an empty bin."""
        return np.divide(self.sum_hit, self.rows, out=np.full(len(self.rows), np.nan), where=self.rows > 0)


def calibration_bins(p: np.ndarray, hit: np.ndarray, bins: int | Sequence[float]) -> CalibrationBins:
    """Rows binned by their probability ``p`` (``bins`` as in :func:`bin_index`), with ``hit``
    (bool or 0/1: whether the event ``p`` forecasts happened) summed per bin; a row whose bin
    index is negative (outside the edges) is left out."""
    values = np.asarray(p, dtype=np.float64)
    hits = np.asarray(hit, dtype=np.float64)
    if isinstance(bins, Integral):
        n_bins = int(bins)
        lower = np.arange(n_bins) / n_bins
        upper = (np.arange(n_bins) + 1) / n_bins
    else:
        edges = np.asarray(bins, dtype=np.float64)
        n_bins = len(edges) - 1
        lower, upper = edges[:-1], edges[1:]
    index = bin_index(values, bins)
    inside = index >= 0
    index, values, hits = index[inside], values[inside], hits[inside]
    return CalibrationBins(
        lower=lower,
        upper=upper,
        rows=np.bincount(index, minlength=n_bins),
        sum_p=np.bincount(index, weights=values, minlength=n_bins),
        sum_hit=np.bincount(index, weights=hits, minlength=n_bins),
    )
