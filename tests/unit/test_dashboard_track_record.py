"""The track record over a period: its hour sums give the scores plain numpy gives over the outcomes of the
period's candles, in any arrival order; hours past ``keep_hours`` are dropped (memory stays bounded) while
``all`` still counts them; the reliability bins are the scoring module's calibration bins; the periods'
text, and the reliability diagram's geometry."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bse_predict.candles.schema import ModelRef, Outcome
from bse_predict.dashboard.charts import PAD, equity_chart, reliability_dots
from bse_predict.dashboard.periods import parse_period, shown_periods
from bse_predict.dashboard.track_record import BINS, SeriesKey, TrackRecord
from bse_predict.monitoring.live_scores import CalibrationBin
from bse_predict.scoring.probabilities import calibration_bins

HOUR_MS = 3_600_000
T0 = 1_735_689_600_000
CLASSES = ("up", "down", "none")


def _outcomes(seed: int, hours: int) -> list[tuple[SeriesKey, Outcome]]:
    rng = np.random.default_rng(seed)
    result = []
    for hour in range(hours):
        for symbol in ("BTCUSDT", "ETHUSDT"):
            for variant in ("control", "b"):
                p = rng.dirichlet([2.0, 2.0, 3.0])
                o = Outcome(id=f"{symbol}|1h|{T0 + hour * HOUR_MS}", symbol=symbol, open_time=T0 + hour * HOUR_MS,
                            target="2%", outcome=CLASSES[rng.choice(3, p=[0.3, 0.3, 0.4])],
                            resolved_at=T0 + (hour + 5) * HOUR_MS, model=ModelRef(name="rf", version="v1"),
                            variant=variant, p_up=float(p[0]), p_down=float(p[1]), p_none=float(p[2]))
                result.append((SeriesKey("v1", variant, "2%", "live"), o))
    return result


def _numpy_scores(rows: list[Outcome]) -> list[float]:
    p = np.array([[o.p_up, o.p_down, o.p_none] for o in rows])
    y = np.array([CLASSES.index(o.outcome) for o in rows])
    n = len(y)
    shares = np.bincount(y, minlength=3) / n
    return [n, float(np.mean(p.argmax(axis=1) == y)), float(shares.max()),
            float(np.mean(-np.log(np.maximum(p[np.arange(n), y], 1e-12)))),
            float(-sum(s * np.log(s) for s in shares if s > 0)),
            float(np.mean(((p - np.eye(3)[y]) ** 2).sum(axis=1))), float(1 - (shares ** 2).sum())]


@pytest.mark.parametrize("seed", [1, 2])
def test_scores_over_a_period_equal_numpy_over_the_outcomes_of_its_candles(seed: int) -> None:
    outcomes = _outcomes(seed, 300)
    random.Random(seed).shuffle(outcomes)  # outcomes resolve, and are read, out of candle order
    track = TrackRecord(keep_hours=168)
    for key, o in outcomes:
        track.add(key, o)
    newest = T0 + 299 * HOUR_MS
    for hours in (1, 24, 100, 168, None):
        records = track.records(hours)
        assert set(records) == {SeriesKey("v1", v, "2%", "live") for v in ("control", "b")}
        for key, record in records.items():
            rows = [o for k, o in outcomes if k == key and (hours is None or o.open_time > newest - hours * HOUR_MS)]
            assert list(record[:7]) == pytest.approx(_numpy_scores(rows), rel=1e-9, abs=1e-12), (hours, key)
    assert track.span_ms(24) == (newest - 23 * HOUR_MS, newest + HOUR_MS)
    assert track.span_ms(None) == (None, None)


def test_hours_past_keep_hours_are_dropped_and_all_still_counts_them() -> None:
    track = TrackRecord(keep_hours=48)
    outcomes = _outcomes(3, 200)
    for key, o in outcomes:
        track.add(key, o)
        assert track.hour_count() <= 2 * 48  # two series
    assert track.hour_count() == 2 * 48
    late_key, late = outcomes[0]  # an outcome of hour 0 read now: in all only
    late = late.model_copy(update={"id": "late"})
    before = track.records(48)[late_key]
    track.add(late_key, late)
    assert track.records(48)[late_key] == before
    assert track.records(None)[late_key].count == 2 * 200 + 1  # two symbols an hour
    assert track.records(1)[late_key].count == 2  # the newest hour: two symbols


def test_reliability_bins_are_the_scoring_modules_calibration_bins() -> None:
    outcomes = _outcomes(4, 150)
    track = TrackRecord(keep_hours=168)
    for key, o in outcomes:
        track.add(key, o)
    for key, record in track.records(72).items():
        rows = [o for k, o in outcomes if k == key and o.open_time >= T0 + (149 - 71) * HOUR_MS]
        p = np.array([[o.p_up, o.p_down, o.p_none] for o in rows])
        y = np.array([CLASSES.index(o.outcome) for o in rows])
        for c, name in enumerate(CLASSES):
            expected = calibration_bins(p[:, c], y == c, BINS)
            shown = {b.bin: b for b in record.calibration if b.cls == name}
            assert sorted(shown) == np.flatnonzero(expected.rows).tolist()
            for b, kept in shown.items():
                assert kept.count == expected.rows[b]
                assert kept.mean_p == pytest.approx(expected.mean_p[b], rel=1e-12)
                assert kept.hit_rate == pytest.approx(expected.hit_rate[b], rel=1e-12)


def test_periods_are_bounded_by_what_the_board_keeps() -> None:
    assert parse_period("24h", 168).hours == 24 and parse_period("7d", 168).hours == 168
    assert parse_period("all", 168).hours is None
    for bad in ("8d", "169h", "0h", "7 d", "1w", "-1h", ""):
        with pytest.raises(ValueError):
            parse_period(bad, 168)
    assert shown_periods(168) == ("24h", "72h", "7d", "all") and shown_periods(48) == ("24h", "all")


def test_the_reliability_diagram_puts_each_bin_at_mean_p_against_observed() -> None:
    bins = (CalibrationBin(cls="up", bin=2, count=100, mean_p=0.25, hit_rate=0.75),
            CalibrationBin(cls="none", bin=9, count=25, mean_p=1.0, hit_rate=0.0))
    size = 224
    up, none = reliability_dots(bins, BINS, size)
    assert (up.x, up.y) == (PAD + 0.25 * (size - 2 * PAD), size - PAD - 0.75 * (size - 2 * PAD))
    assert (none.x, none.y) == (size - PAD, size - PAD)
    assert up.r == pytest.approx(2 * none.r)  # area grows with the count
    assert (up.lower, up.upper) == (0.2, 0.3)


def test_the_equity_chart_starts_at_zero_and_spans_its_range() -> None:
    chart = equity_chart([(10, 1.0), (20, -2.0), (30, 3.0)], 100, 60)
    assert chart is not None and (chart.low, chart.high) == (-2.0, 3.0) and (chart.start_ms, chart.end_ms) == (10, 30)
    points = [tuple(map(float, p.split(","))) for p in chart.points.split()]
    assert points[0] == (PAD, chart.zero_y) and points[-1] == (100 - PAD, PAD)
    assert equity_chart([], 100, 60) is None
    same_exit = equity_chart([(10, 1.0), (20, 5.0), (20, -2.0), (30, 3.0)], 100, 60)  # trades closing together
    assert same_exit is not None and len(same_exit.points.split()) == 4 and same_exit.high == 3.0
    assert len(equity_chart([(t, float(t)) for t in range(1000)], 100, 60).points.split()) <= 402
