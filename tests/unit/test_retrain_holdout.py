"""Which candles a retrain trains on and holds out: the months, the purge of the label horizon, the
holdout's final rows, and the holdout scored through served predictors on the worker's windows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from configs.settings import load_settings
from bse_predict.candles.files import CandleSeries
from bse_predict.candles.synthetic import synthetic_series
from bse_predict.labels.first_touch import label_matrix
from bse_predict.candles.grid import fill_gaps
from bse_predict.retrain.errors import RetrainError
from bse_predict.retrain.holdout import (RetrainWindow, clip_series, final_holdout_rows, months_before, out_of_sample,
                                         retrain_window)
from bse_predict.retrain.holdout_scores import holdout_history_ms, score_holdout
from bse_predict.scoring.probabilities import row_log_loss

HOUR = 3_600_000


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("start", "months", "expected"), [
    ((2026, 3, 15, 12), 6, (2025, 9, 15, 12)),
    ((2026, 3, 31, 0), 1, (2026, 2, 28, 0)),      # clamped to the shorter month
    ((2024, 3, 31, 0), 1, (2024, 2, 29, 0)),      # a leap year
    ((2026, 1, 10, 5), 13, (2024, 12, 10, 5)),    # across two year boundaries
])
def test_months_are_calendar_months(start: tuple, months: int, expected: tuple) -> None:
    assert months_before(_ms(*start), months) == _ms(*expected)


def test_training_candles_end_a_purge_before_the_holdout() -> None:
    newest = _ms(2026, 3, 1, 23)
    window = retrain_window(newest, months=3, holdout_hours=240, purge_hours=72, step_ms=HOUR)
    assert window.newest_ms == newest
    assert window.holdout_start_ms == newest + HOUR - 240 * HOUR  # exactly the newest 240 hourly candles
    assert window.holdout_start_ms - window.train_end_ms == 72 * HOUR
    assert window.first_ms == _ms(2025, 12, 2, 0)  # three months back from the newest candle's close
    # The last training row's label reads candles up to open + 72 h: all before the holdout's first candle.
    last_training_open = window.train_end_ms - HOUR
    assert last_training_open + 72 * HOUR < window.holdout_start_ms


def test_a_window_with_no_room_to_train_is_refused() -> None:
    with pytest.raises(RetrainError, match="raise retrain.months"):
        retrain_window(_ms(2026, 3, 1), months=1, holdout_hours=24 * 30, purge_hours=72, step_ms=HOUR)


def test_clipping_keeps_the_range_and_drops_empty_series() -> None:
    a = synthetic_series("AAAUSDT", 100, 1, _ms(2026, 1, 10))
    b = synthetic_series("BBBUSDT", 10, 2, _ms(2026, 1, 2))
    start, end = int(a.open_time_ms[50]), int(a.open_time_ms[80])
    clipped = clip_series([a, b], start, end)
    assert [s.symbol for s in clipped] == ["AAAUSDT"]
    assert clipped[0].open_time_ms[0] == start and clipped[0].open_time_ms[-1] == end - HOUR
    np.testing.assert_array_equal(clipped[0].ohlcv, a.ohlcv[50:80])


def test_only_holdout_rows_with_their_whole_horizon_count() -> None:
    newest = _ms(2026, 3, 1, 23)
    window = retrain_window(newest, months=3, holdout_hours=240, purge_hours=72, step_ms=HOUR)
    times = np.arange(window.holdout_start_ms - 10 * HOUR, newest + HOUR, HOUR)
    rows = final_holdout_rows(times, window, 72 * HOUR)
    assert times[rows][0] == window.holdout_start_ms
    assert times[rows][-1] == newest - 72 * HOUR
    assert rows.sum() == 240 - 72


class _Climatology:
    """A served predictor's protocol, answering fixed probabilities and recording what it was shown."""

    def __init__(self, version: str, p: tuple[float, float, float], min_history: int, targets: tuple[str, ...]) -> None:
        self.version, self.model_name, self.targets = version, "fixed", targets
        self.input_kinds, self.min_history = ("features",), min_history
        self._p = np.asarray(p)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(inputs["features"])
        return {t: np.tile(self._p, (rows, 1)) for t in self.targets}


def _forty_days_and_their_holdout(horizon_hours: int) -> tuple[CandleSeries, RetrainWindow, list[CandleSeries]]:
    """40 days of one generated symbol, the retrain window of its newest month (a 240 h holdout) and the
    candles that holdout is scored on."""
    series = synthetic_series("AAAUSDT", 24 * 40, 5, _ms(2026, 3, 1, 23))
    window = retrain_window(int(series.open_time_ms[-1]), 1, 240, horizon_hours, HOUR)
    return series, window, clip_series([series], window.holdout_start_ms - holdout_history_ms(HOUR), window.newest_ms + 1)


def test_the_holdout_is_scored_on_final_rows_with_the_one_log_loss() -> None:
    market = load_settings().market
    series, window, holdout = _forty_days_and_their_holdout(market.horizon_hours)
    live = _Climatology("live", (0.3, 0.3, 0.4), 169, ("1%", "2%", "5%"))
    new = _Climatology("new", (0.45, 0.45, 0.1), 192, ("1%", "2%"))  # fewer targets: only the common ones count
    scores = score_holdout(holdout, window, live, new, market.targets_pct, market.horizon_candles)
    assert set(scores.target.tolist()) == {"1%", "2%"}
    assert scores.rows == 2 * (240 - market.horizon_hours)
    grid = fill_gaps(series.open_time_ms, series.ohlcv, HOUR)
    labels = label_matrix(grid.ohlcv, grid.is_real, 0.01, market.horizon_candles)
    one = scores.target == "1%"
    expected = labels[np.searchsorted(grid.open_time_ms, scores.open_time_ms[one])]
    np.testing.assert_allclose(scores.live_loss[one], row_log_loss(np.tile([0.3, 0.3, 0.4], (one.sum(), 1)), expected))
    np.testing.assert_allclose(scores.new_loss[one], row_log_loss(np.tile([0.45, 0.45, 0.1], (one.sum(), 1)), expected))


def test_the_holdout_starts_after_the_live_versions_training_data() -> None:
    newest = _ms(2026, 3, 1, 23)
    window = retrain_window(newest, months=3, holdout_hours=240, purge_hours=72, step_ms=HOUR)
    assert out_of_sample(window, None, 72 * HOUR, HOUR) == window
    long_ago = window.holdout_start_ms - 30 * 24 * HOUR
    assert out_of_sample(window, long_ago, 72 * HOUR, HOUR) == window
    recent = window.holdout_start_ms + 24 * HOUR  # the live version trained on the holdout's first day
    later = out_of_sample(window, recent, 72 * HOUR, HOUR)
    assert later.holdout_start_ms == recent + 73 * HOUR  # a horizon after its newest candle
    assert (later.first_ms, later.train_end_ms, later.newest_ms) == (window.first_ms, window.train_end_ms, newest)
    times = np.arange(window.holdout_start_ms, newest + HOUR, HOUR)
    assert final_holdout_rows(times, later, 72 * HOUR).sum() == 240 - 72 - 24 - 73


def test_a_model_answering_nan_stops_the_gate() -> None:
    market = load_settings().market
    series, window, holdout = _forty_days_and_their_holdout(market.horizon_hours)
    live = _Climatology("live", (0.3, 0.3, 0.4), 169, ("1%", "2%", "5%"))
    broken = _Climatology("r-broken", (np.nan, 0.5, 0.5), 169, ("1%", "2%", "5%"))
    with pytest.raises(RetrainError, match="r-broken answered 64 of 64 holdout rows of target 1%"):
        score_holdout(holdout, window, live, broken, market.targets_pct, market.horizon_candles, batch_rows=64)
