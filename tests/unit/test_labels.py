"""Tests of the first-touch label rule (bse_predict/labels/first_touch.py).

Hand-computed cases pin every clause of the rule; hypothesis properties check
what must hold whatever the prices; real BTCUSDT futures candles check the
class shares are plausible and that the vectorised code equals a slow,
obviously-correct loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bse_predict.labels.first_touch import (
    CLASS_NAMES,
    DOWN,
    NONE,
    UNKNOWN,
    UP,
    first_touch,
    label_matrix,
    time_to_touch,
)

BTC_FUTURES = (
    Path(__file__).resolve().parents[2].parent / "shared/data/candles/binance-futures/BTCUSDT-1h.csv.gz"
)
HOUR_MS = 3_600_000
H_72 = 72


# --- helpers -----------------------------------------------------------------


def candle(o: float, h: float, low: float, c: float) -> list[float]:
    return [o, h, low, c, 1.0]


def flat(price: float) -> list[float]:
    """A gap-filled hour: flat at the previous close, zero volume."""
    return [price, price, price, price, 0.0]


def one(entry: float, future: list[list[float]], x: float, valid: list[bool] | None = None) -> int:
    """first_touch for a single entry (B = 1)."""
    fut = np.array([future], dtype=np.float64)
    ok = np.ones(fut.shape[:2], dtype=bool) if valid is None else np.array([valid])
    return int(first_touch(np.array([entry]), fut, ok, x)[0])


def reference_labels(ohlcv: np.ndarray, is_real: np.ndarray, x: float, h: int) -> tuple[list[int], int]:
    """The rule as a plain loop; also returns how many first touches were ambiguous."""
    rows = ohlcv.tolist()
    labels: list[int] = []
    ambiguous = 0
    for t, row in enumerate(rows):
        if not is_real[t]:
            labels.append(UNKNOWN)
            continue
        up = row[3] * (1.0 + x)
        down = row[3] * (1.0 - x)
        label = NONE if t + h < len(rows) else UNKNOWN
        for o, hi, lo, _c, _v in rows[t + 1 : t + h + 1]:
            if hi >= up and lo <= down:
                ambiguous += 1
                label = UP if up - o < o - down else DOWN
                break
            if hi >= up:
                label = UP
                break
            if lo <= down:
                label = DOWN
                break
        labels.append(label)
    return labels, ambiguous


# --- hand-computed cases -------------------------------------------------------


def test_class_codes_and_names_follow_the_column_order() -> None:
    assert (UP, DOWN, NONE, UNKNOWN) == (0, 1, 2, -1)
    assert CLASS_NAMES == ("up", "down", "none")


def test_clean_up() -> None:
    future = [candle(100, 101, 99.5, 100.5), candle(100.5, 102.5, 100, 102), candle(102, 103, 97, 98)]
    assert one(100, future, 0.02) == UP


def test_clean_down() -> None:
    future = [candle(100, 100.5, 99, 99), candle(99, 99.5, 97.9, 98), candle(98, 103, 97, 102)]
    assert one(100, future, 0.02) == DOWN


def test_none_within_horizon() -> None:
    future = [candle(100, 101.9, 98.1, 101), candle(101, 101.5, 99, 99.5)]
    assert one(100, future, 0.02) == NONE


def test_touch_exactly_at_the_barrier_counts_and_a_hair_short_does_not() -> None:
    up, down = 100 * (1.0 + 0.02), 100 * (1.0 - 0.02)
    assert one(100, [candle(100, up, 99, 100)], 0.02) == UP
    assert one(100, [candle(100, 101, down, 100)], 0.02) == DOWN
    assert one(100, [candle(100, np.nextafter(up, 0), np.nextafter(down, 200), 100)], 0.02) == NONE


def test_touch_on_last_candle_of_horizon_counts_one_beyond_is_ignored() -> None:
    quiet = candle(100, 100.5, 99.5, 100)
    grid = np.array([quiet, quiet, quiet, candle(100, 103, 99.5, 102.5), quiet])
    real = np.ones(len(grid), dtype=bool)
    assert label_matrix(grid, real, 0.02, 3)[0] == UP  # row 3 is the 3rd candle after row 0
    assert label_matrix(grid, real, 0.02, 2)[0] == NONE  # row 3 is beyond a 2-candle horizon


@pytest.mark.parametrize(("open_", "expected"), [(101.0, UP), (99.0, DOWN), (101.9, UP), (98.1, DOWN)])
def test_ambiguous_candle_goes_to_the_barrier_nearer_its_open(open_: float, expected: int) -> None:
    # Barriers 102 / 98; the candle's range covers both.
    assert one(100, [candle(open_, 103, 97, 100)], 0.02) == expected


def test_ambiguous_exact_tie_goes_down() -> None:
    # Powers of two keep the arithmetic exact: barriers 80 / 48, open 64 is mid-way.
    entry, x = 64.0, 0.25
    up, down = entry * (1.0 + x), entry * (1.0 - x)
    assert up - 64.0 == 64.0 - down  # a true tie, not a rounding accident
    assert one(entry, [candle(64.0, 90, 40, 64)], x) == DOWN
    assert one(entry, [candle(np.nextafter(64.0, 100), 90, 40, 64)], x) == UP


def test_gap_open_beyond_a_barrier_takes_that_barrier_first() -> None:
    # Opens above the up barrier (102), then falls through the down barrier (98).
    assert one(100, [candle(102.5, 102.5, 97, 97.5)], 0.02) == UP
    # Opens exactly on the up barrier: distance 0, nearer than the down barrier.
    assert one(100, [candle(100 * 1.02, 100 * 1.02, 97, 97.5)], 0.02) == UP
    # Opens below the down barrier, then rallies through the up barrier.
    assert one(100, [candle(97.5, 103, 97.5, 102.5)], 0.02) == DOWN


def test_end_of_data_without_touch_is_unknown() -> None:
    future = [candle(100, 101, 99, 100), candle(100, 101, 99, 100), candle(0, 0, 0, 0)]
    assert one(100, future, 0.02, valid=[True, True, False]) == UNKNOWN
    assert one(100, future[:2], 0.02) == NONE  # the same candles as a complete horizon


def test_end_of_data_after_a_touch_is_known() -> None:
    future = [candle(100, 101, 99, 100), candle(100, 100.5, 97.5, 98), candle(0, 0, 0, 0)]
    assert one(100, future, 0.02, valid=[True, True, False]) == DOWN


def test_invalid_candles_never_touch() -> None:
    # A crazy candle past the end of data must be ignored, not read.
    future = [candle(100, 101, 99, 100), candle(100, 1e9, 0, 100)]
    assert one(100, future, 0.02, valid=[True, False]) == UNKNOWN


def test_time_to_touch_counts_candles_from_the_entry() -> None:
    fut = np.array(
        [
            [candle(100, 101, 99, 100), candle(100, 103, 99, 102)],
            [candle(100, 100, 97, 97.5), candle(97.5, 98, 96, 97)],
            [candle(100, 101, 99, 100), candle(100, 101, 99, 100)],
        ]
    )
    got = time_to_touch(np.full(3, 100.0), fut, np.ones((3, 2), dtype=bool), 0.02)
    assert got.tolist() == [2, 1, -1]


def test_filled_gap_counts_as_hours_of_the_horizon() -> None:
    # Row 0 real, rows 1-2 a two-hour outage filled flat, row 3 touches up.
    grid = np.array([candle(100, 100.5, 99.5, 100), flat(100), flat(100), candle(100, 102.5, 99.8, 102)])
    real = np.array([True, False, False, True])
    assert label_matrix(grid, real, 0.02, 3).tolist() == [UP, UNKNOWN, UNKNOWN, UNKNOWN]
    # With a 2-hour horizon the gap eats it all: nothing touched in time.
    assert label_matrix(grid, real, 0.02, 2).tolist() == [NONE, UNKNOWN, UNKNOWN, UNKNOWN]


def test_row_that_is_not_a_real_candle_is_unknown() -> None:
    # Row 1 is a filled hour: from its "close" a clean up-touch follows, yet it has no label.
    grid = np.array([candle(100, 100.5, 99.5, 100), flat(100), candle(100, 103, 99.9, 102.5), flat(102.5)])
    labels = label_matrix(grid, np.array([True, False, True, False]), 0.02, 2)
    assert labels.tolist() == [UP, UNKNOWN, UNKNOWN, UNKNOWN]
    assert label_matrix(grid, np.ones(4, dtype=bool), 0.02, 2)[1] == UP


def test_last_rows_are_unknown_unless_already_touched() -> None:
    quiet = candle(100, 100.5, 99.5, 100)
    grid = np.array([quiet, quiet, candle(100, 100.5, 97, 97.5), quiet, quiet])
    labels = label_matrix(grid, np.ones(5, dtype=bool), 0.02, 3)
    # Row 2 (entry 97.5, up barrier 99.45) touches up in row 3: known though its horizon is cut.
    # Rows 3 and 4 have 1 and 0 of their 3 candles and touched nothing.
    assert labels.tolist() == [DOWN, DOWN, UP, UNKNOWN, UNKNOWN]


@pytest.mark.parametrize(
    "call",
    [
        lambda: first_touch(np.ones(2), np.ones((2, 3, 5)), np.ones((2, 3), dtype=bool), 0.0),
        lambda: first_touch(np.ones(2), np.ones((2, 3, 4)), np.ones((2, 3), dtype=bool), 0.02),
        lambda: first_touch(np.ones(3), np.ones((2, 3, 5)), np.ones((2, 3), dtype=bool), 0.02),
        lambda: first_touch(np.ones(2), np.ones((2, 3, 5)), np.ones((2, 2), dtype=bool), 0.02),
        lambda: label_matrix(np.ones((4, 5)), np.ones(3, dtype=bool), 0.02, 2),
        lambda: label_matrix(np.ones((4, 5)), np.ones(4, dtype=bool), 0.02, 0),
    ],
)
def test_malformed_inputs_are_refused(call) -> None:
    with pytest.raises(ValueError):
        call()


# --- properties ----------------------------------------------------------------

targets = st.sampled_from([0.002, 0.005, 0.01, 0.02, 0.05])


@st.composite
def grids(draw: st.DrawFn, max_rows: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A gap-filled grid: random-walk candles, some hours filled flat at the previous close."""
    rows = draw(st.integers(1, max_rows))
    moves = draw(arrays(np.float64, (rows, 4), elements=st.floats(-1.0, 1.0)))
    is_real = draw(arrays(np.bool_, rows, elements=st.sampled_from([True, True, True, False])))
    is_real[0] = True
    ohlcv = np.empty((rows, 5))
    close = 100.0
    for t in range(rows):
        if not is_real[t]:
            ohlcv[t] = flat(close)
            continue
        gap, ret, wick_up, wick_down = moves[t]
        open_ = close * (1 + 0.005 * gap)
        close = open_ * (1 + 0.02 * ret)
        high = max(open_, close) * (1 + 0.01 * abs(wick_up))
        low = min(open_, close) * (1 - 0.01 * abs(wick_down))
        ohlcv[t] = candle(open_, high, low, close)
    return ohlcv, is_real


@settings(max_examples=200, deadline=None)
@given(grids(), targets, st.integers(1, 8))
def test_matches_plain_loop_reference(grid: tuple[np.ndarray, np.ndarray], x: float, h: int) -> None:
    ohlcv, is_real = grid
    assert label_matrix(ohlcv, is_real, x, h).tolist() == reference_labels(ohlcv, is_real, x, h)[0]


@settings(max_examples=100, deadline=None)
@given(grids(), targets, st.integers(1, 8), st.integers(-40, 40))
def test_scaling_prices_leaves_labels_unchanged(
    grid: tuple[np.ndarray, np.ndarray], x: float, h: int, power: int
) -> None:
    # A power of two scales every price and barrier exactly, so even exact touches survive.
    ohlcv, is_real = grid
    scaled = ohlcv.copy()
    scaled[:, :4] *= 2.0**power
    np.testing.assert_array_equal(label_matrix(scaled, is_real, x, h), label_matrix(ohlcv, is_real, x, h))


@settings(max_examples=100, deadline=None)
@given(grids(max_rows=20), targets, st.data())
def test_candles_after_the_first_touch_never_matter(
    grid: tuple[np.ndarray, np.ndarray], x: float, data: st.DataObject
) -> None:
    ohlcv, _ = grid
    entry = np.array([100.0])
    future = ohlcv[None]
    valid = np.ones((1, len(ohlcv)), dtype=bool)
    label = first_touch(entry, future, valid, x)
    steps = int(time_to_touch(entry, future, valid, x)[0])
    if steps < 0:
        return
    noise = data.draw(arrays(np.float64, future.shape, elements=st.floats(0.0, 1e6)))
    changed = future.copy()
    changed[:, steps:] = noise[:, steps:]
    assert first_touch(entry, changed, valid, x) == label
    cut = valid.copy()
    cut[:, steps:] = False  # the data ends right after the touch: still the same, known label
    assert first_touch(entry, changed, cut, x) == label


@settings(max_examples=100, deadline=None)
@given(grids(), targets, st.integers(1, 8), st.data())
def test_candles_beyond_the_horizon_never_matter(
    grid: tuple[np.ndarray, np.ndarray], x: float, h: int, data: st.DataObject
) -> None:
    ohlcv, is_real = grid
    t = data.draw(st.integers(0, len(ohlcv) - 1))
    changed, changed_real = ohlcv.copy(), is_real.copy()
    beyond = slice(t + h + 1, None)
    changed[beyond] = data.draw(arrays(np.float64, changed[beyond].shape, elements=st.floats(0.0, 1e6)))
    changed_real[beyond] = data.draw(arrays(np.bool_, changed_real[beyond].shape))
    before = label_matrix(ohlcv, is_real, x, h)[: t + 1]
    np.testing.assert_array_equal(label_matrix(changed, changed_real, x, h)[: t + 1], before)


@settings(max_examples=100, deadline=None)
@given(grids(), targets, st.integers(1, 8), st.data())
def test_appending_rows_never_changes_a_known_label(
    grid: tuple[np.ndarray, np.ndarray], x: float, h: int, data: st.DataObject
) -> None:
    ohlcv, is_real = grid
    n = data.draw(st.integers(1, len(ohlcv)))
    partial = label_matrix(ohlcv[:n], is_real[:n], x, h)
    full = label_matrix(ohlcv, is_real, x, h)
    complete = max(n - h, 0)  # rows whose whole horizon lies inside the first n rows
    np.testing.assert_array_equal(partial[:complete], full[:complete])
    assert (partial[:complete] != UNKNOWN).sum() == is_real[:complete].sum()
    known = partial != UNKNOWN
    np.testing.assert_array_equal(partial[known], full[:n][known])


# --- real data -----------------------------------------------------------------


@pytest.fixture(scope="module")
def btc() -> np.ndarray:
    if not BTC_FUTURES.exists():
        pytest.fail(f"real candles not found (the repo expects ../shared beside it) at {BTC_FUTURES}")
    raw = np.loadtxt(BTC_FUTURES, delimiter=",", skiprows=1)
    # This file has no missing hour, so its rows already are the grid (all real).
    assert (np.diff(raw[:, 0].astype(np.int64)) == HOUR_MS).all()
    return raw[:, 1:6]


@pytest.mark.slow
def test_real_btc_class_shares_are_plausible(btc: np.ndarray) -> None:
    real = np.ones(len(btc), dtype=bool)
    shares = {}
    for pct in (1, 2, 5):
        labels = label_matrix(btc, real, pct / 100, H_72)
        assert (labels[: -H_72] != UNKNOWN).all()
        known = labels[labels != UNKNOWN]
        shares[pct] = dict(zip(CLASS_NAMES, (np.bincount(known, minlength=3) / len(known)).round(4).tolist()))
    report = f"BTCUSDT futures class shares by target %: {shares}"
    assert shares[1]["none"] < shares[2]["none"] < shares[5]["none"], report
    for share in shares.values():
        assert 0.35 <= share["up"] / (share["up"] + share["down"]) <= 0.65, report
    assert shares[1]["none"] < 0.05 and shares[5]["none"] > 0.2, report


@pytest.mark.parametrize("pct", [1, 2, 5])
@pytest.mark.parametrize(
    "start",
    [
        1500,  # March 2020 (the Covid crash): wide candles, so ambiguous ones occur
        8000,  # spans row 8192, where label_matrix starts a new chunk
    ],
)
@pytest.mark.slow
def test_real_btc_matches_plain_loop_reference(btc: np.ndarray, pct: int, start: int) -> None:
    rows = 500
    window = btc[start : start + rows + H_72]
    expected, ambiguous = reference_labels(window, np.ones(len(window), dtype=bool), pct / 100, H_72)
    labels = label_matrix(btc, np.ones(len(btc), dtype=bool), pct / 100, H_72)
    assert labels[start : start + rows].tolist() == expected[:rows]
    if pct == 1 and start == 1500:
        assert ambiguous > 0  # the tie-break rule is really exercised here
