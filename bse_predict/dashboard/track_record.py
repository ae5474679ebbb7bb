"""The track record per (version, A/B arm, target, stream) from the outcomes topic: the live scores' additive
sums (:mod:`bse_predict.monitoring.live_scores`, whose formulas live in :mod:`bse_predict.scoring.probabilities`)
over a period, with the climatology beside each score and the calibration bins of each class.

Per series, two kinds of sums, a fixed set of fields each: the total over every outcome counted, and one
sum per hour of the outcome's candle (its ``open_time``) for the ``keep_hours`` hours up to the newest
candle hour seen (older hours are dropped as the newest moves on). A period of ``n`` hours
(:mod:`bse_predict.dashboard.periods`) is the sum of its ``n`` newest hour sums, ``all`` the total: the sums
are additive, so any period is scored exactly as if its outcomes had been summed alone.

Climatology is the constant forecast of the series' own outcome shares ``s``: its log loss comes with
:class:`~bse_predict.monitoring.live_scores.LiveScores`; its Brier is ``Σ_y s_y · brier(s, y)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from bse_predict.candles.schema import Outcome
from bse_predict.dashboard.periods import HOUR_MS
from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.monitoring.live_scores import CalibrationBin, add_fields, bucket_of, score_fields, window_scores
from bse_predict.scoring.probabilities import row_brier

__all__ = ["BINS", "SeriesKey", "SeriesRecord", "TrackRecord"]

BINS = 10


class SeriesKey(NamedTuple):
    version: str
    variant: str  # the A/B arm
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
    calibration: tuple[CalibrationBin, ...]  # per class and bin of its probability: count, mean p, observed share


class TrackRecord:
    """Score sums per series: the total and the last ``keep_hours`` candle hours (see the module docstring)."""

    def __init__(self, keep_hours: int) -> None:
        self.keep_hours = keep_hours
        self.newest_hour: int | None = None  # the newest candle hour of an outcome counted
        self._totals: dict[SeriesKey, dict[str, float]] = {}
        self._hours: dict[SeriesKey, dict[int, dict[str, float]]] = {}

    def add(self, key: SeriesKey, outcome: Outcome) -> None:
        fields = score_fields((outcome.p_up, outcome.p_down, outcome.p_none), outcome.outcome, BINS)
        self._totals[key] = add_fields([self._totals.get(key, {}), fields])
        hour = bucket_of(outcome.open_time, HOUR_MS)
        if self.newest_hour is None or hour > self.newest_hour:
            self.newest_hour = hour
            self._drop_old_hours()
        if hour > self.newest_hour - self.keep_hours:
            hours = self._hours.setdefault(key, {})
            hours[hour] = add_fields([hours.get(hour, {}), fields])

    def _drop_old_hours(self) -> None:
        assert self.newest_hour is not None
        oldest_kept = self.newest_hour - self.keep_hours + 1
        for hours in self._hours.values():
            for hour in [h for h in hours if h < oldest_kept]:
                del hours[hour]

    def hour_count(self) -> int:
        """The hour sums kept, all series together (at most ``keep_hours`` per series)."""
        return sum(len(hours) for hours in self._hours.values())

    def span_ms(self, hours: int | None) -> tuple[int | None, int | None]:
        """[start, end) of the candle open times a period of ``hours`` covers (None: open); (None, None)
        for ``all`` or before any outcome."""
        if hours is None or self.newest_hour is None:
            return None, None
        return (self.newest_hour - hours + 1) * HOUR_MS, (self.newest_hour + 1) * HOUR_MS

    def _sums(self, key: SeriesKey, hours: int | None) -> dict[str, float]:
        if hours is None or self.newest_hour is None:
            return self._totals[key]
        oldest = self.newest_hour - hours + 1
        return add_fields(sums for hour, sums in sorted(self._hours.get(key, {}).items()) if hour >= oldest)

    def records(self, hours: int | None = None) -> Mapping[SeriesKey, SeriesRecord]:
        """Each series' scores over the candles of the last ``hours`` hours (None: all counted); a series
        with no outcome in the period is left out."""
        result = {}
        for key in sorted(self._totals):
            scores = window_scores(self._sums(key, hours), BINS)
            if scores is None:
                continue
            shares = np.array([scores.class_shares[name] for name in CLASS_NAMES])
            climatology_brier = float(np.dot(shares, row_brier(np.tile(shares, (len(shares), 1)),
                                                               np.arange(len(shares)))))
            result[key] = SeriesRecord(scores.count, scores.accuracy, scores.base_rate, scores.log_loss,
                                       scores.climatology_log_loss, scores.brier, climatology_brier,
                                       dict(scores.class_shares), scores.calibration)
        return result
