"""Which candles a retrain reads, trains on and holds out: pure, the archive's newest candle passed in.

Counted back from the newest candle's close (pooled over symbols, so every
symbol shares the boundaries):

- **the window**: the newest ``months`` calendar months (``retrain.months``);
- **the holdout**: the newest ``holdout_hours`` hours. A holdout row counts
  only when its label is final: its whole horizon lies inside the data
  (``open_time + horizon <= newest open time``); a row near the end whose
  label is known only because a barrier was touched early would favour
  touched rows;
- **the purge**: training candles end ``purge_hours`` (at least the label
  horizon, checked at load) before the holdout starts, so no training label
  reads a candle the holdout starts from or scores on. The purged candles are
  still history for the holdout's first windows, as in live serving.
- **out of the live version's sample**: the live version may have been
  trained on part of the holdout (a retrain a week ago trained up to then).
  Scored there it would look better than it is, so the holdout starts no
  earlier than a horizon after the newest candle the live version trained on
  (its manifest's data span; :func:`out_of_sample`). Right after a retrain
  the holdout is short, and a gate with too few rows refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from bse_predict.candles.files import CandleSeries
from bse_predict.retrain.errors import RetrainError

__all__ = ["RetrainWindow", "months_before", "retrain_window", "clip_series", "final_holdout_rows", "out_of_sample"]

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class RetrainWindow:
    """Open-time boundaries (UTC ms): training candles in ``[first_ms, train_end_ms)``, the holdout
    from ``holdout_start_ms`` to ``newest_ms`` (the newest candle), the purge between them."""

    first_ms: int
    train_end_ms: int
    holdout_start_ms: int
    newest_ms: int

    @property
    def purge_hours(self) -> float:
        return (self.holdout_start_ms - self.train_end_ms) / _HOUR_MS

    def describe(self) -> str:
        def day(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")

        return (f"train {day(self.first_ms)} to {day(self.train_end_ms)}, purge {self.purge_hours:g} h, "
                f"holdout {day(self.holdout_start_ms)} to {day(self.newest_ms)} UTC")


def months_before(time_ms: int, months: int) -> int:
    """The same UTC day and time ``months`` calendar months earlier (the day clamped to the month's end)."""
    when = datetime.fromtimestamp(time_ms / 1000, UTC)
    month_index = when.year * 12 + (when.month - 1) - months
    year, month = divmod(month_index, 12)
    next_month = datetime(year + (month + 1) // 12, (month + 1) % 12 + 1, 1, tzinfo=UTC)
    last_day = (next_month - datetime(year, month + 1, 1, tzinfo=UTC)).days
    earlier = when.replace(year=year, month=month + 1, day=min(when.day, last_day))
    return int(earlier.timestamp() * 1000)


def retrain_window(newest_ms: int, months: int, holdout_hours: int, purge_hours: int, step_ms: int) -> RetrainWindow:
    """The boundaries for an archive whose newest candle opens at ``newest_ms``; a
    :class:`~bse_predict.retrain.errors.RetrainError` when the months leave nothing to train on."""
    end_ms = newest_ms + step_ms  # the newest candle's close
    holdout_start_ms = end_ms - holdout_hours * _HOUR_MS
    train_end_ms = holdout_start_ms - purge_hours * _HOUR_MS
    first_ms = months_before(end_ms, months)
    if train_end_ms <= first_ms:
        raise RetrainError("read", f"{months} months hold no training candles before a {holdout_hours} h holdout "
                                   f"and a {purge_hours} h purge: raise retrain.months or lower retrain.holdout_hours")
    return RetrainWindow(first_ms, train_end_ms, holdout_start_ms, newest_ms)


def clip_series(series: list[CandleSeries], start_ms: int, end_ms: int) -> list[CandleSeries]:
    """Each series' candles opening in ``[start_ms, end_ms)``; a series left empty is dropped."""
    clipped = []
    for one in series:
        keep = (one.open_time_ms >= start_ms) & (one.open_time_ms < end_ms)
        if keep.any():
            clipped.append(CandleSeries(one.symbol, one.timeframe, one.open_time_ms[keep],
                                        np.ascontiguousarray(one.ohlcv[keep]), one.source, one.duplicates_dropped))
    return clipped


def final_holdout_rows(open_time_ms: np.ndarray, window: RetrainWindow, horizon_ms: int) -> np.ndarray:
    """Rows inside the holdout whose whole label horizon lies inside the data."""
    times = np.asarray(open_time_ms, dtype=np.int64)
    return (times >= window.holdout_start_ms) & (times + horizon_ms <= window.newest_ms)


def out_of_sample(window: RetrainWindow, trained_until_ms: int | None, horizon_ms: int, step_ms: int) -> RetrainWindow:
    """``window`` with its holdout starting after a model's newest training candle (``trained_until_ms``,
    None: unknown, unchanged) and the label horizon of that candle."""
    if trained_until_ms is None:
        return window
    return replace(window, holdout_start_ms=max(window.holdout_start_ms, trained_until_ms + horizon_ms + step_ms))
