"""The track record per (version, target, stream) from the outcomes topic: the live scores' additive
sums (:mod:`bse_predict.monitoring.live_scores`, whose formulas live in :mod:`bse_predict.scoring.probabilities`)
over every outcome read, with the climatology beside each score.

Climatology is the constant forecast of the series' own outcome shares ``s``: its log loss comes with
:class:`~bse_predict.monitoring.live_scores.LiveScores`; its Brier is ``Σ_y s_y · brier(s, y)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from bse_predict.candles.schema import Outcome
from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.monitoring.live_scores import add_fields, score_fields, window_scores
from bse_predict.scoring.probabilities import row_brier

__all__ = ["SeriesKey", "SeriesRecord", "TrackRecord"]

_BINS = 10


class SeriesKey(NamedTuple):
    version: str
    target: str
    stream: str


class SeriesRecord(NamedTuple):
    count: int
    hit_rate: float  # the arg-max class happened
    base_rate: float  # the share of the most frequent outcome
    log_loss: float
    climatology_log_loss: float
    brier: float
    climatology_brier: float
    shares: dict[str, float]


class TrackRecord:
    def __init__(self) -> None:
        self._sums: dict[SeriesKey, dict[str, float]] = {}

    def add(self, key: SeriesKey, outcome: Outcome) -> None:
        fields = score_fields((outcome.p_up, outcome.p_down, outcome.p_none), outcome.outcome, _BINS)
        self._sums[key] = add_fields([self._sums.get(key, {}), fields])

    def records(self) -> Mapping[SeriesKey, SeriesRecord]:
        result = {}
        for key in sorted(self._sums):
            scores = window_scores(self._sums[key], _BINS)
            if scores is None:
                continue
            shares = np.array([scores.class_shares[name] for name in CLASS_NAMES])
            climatology_brier = float(np.dot(shares, row_brier(np.tile(shares, (len(shares), 1)),
                                                               np.arange(len(shares)))))
            result[key] = SeriesRecord(scores.count, scores.accuracy, scores.base_rate, scores.log_loss,
                                       scores.climatology_log_loss, scores.brier, climatology_brier,
                                       dict(scores.class_shares))
        return result
