"""Tests of the regular grid and the gap rule (bse_predict/candles/grid.py).

Hand-made cases pin each clause of the rule (flat candle at the previous close,
zero volume, is_real False, the anchor for a missing first slot, the input
checks); a hypothesis property checks that removing rows and filling them back
keeps every real row and yields exactly the grid's slots; real Binance spot
candles, which have real outages, check the rule on real gaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bse_predict.candles.grid import CLOSE, OHLCV_FIELDS, VOLUME, GridCandles, fill_gaps

HOUR_MS = 3_600_000
BASE_MS = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "candles"


def candles(hours: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct real candles at BASE + h hours: open h, high h+2, low h-1, close h+1, volume 10+h."""
    h = np.array(hours, dtype=np.float64) + 100.0
    ohlcv = np.column_stack([h, h + 2.0, h - 1.0, h + 1.0, h - 90.0])
    return BASE_MS + HOUR_MS * np.array(hours, dtype=np.int64), ohlcv


def test_field_order() -> None:
    assert OHLCV_FIELDS == ("open", "high", "low", "close", "volume")
    assert (CLOSE, VOLUME) == (3, 4)


def test_no_gap_returns_the_input() -> None:
    times, ohlcv = candles([0, 1, 2, 3])
    grid = fill_gaps(times, ohlcv, HOUR_MS)
    assert isinstance(grid, GridCandles)
    assert len(grid) == 4
    np.testing.assert_array_equal(grid.open_time_ms, times)
    np.testing.assert_array_equal(grid.ohlcv, ohlcv)
    assert grid.is_real.all()
    assert (grid.open_time_ms.dtype, grid.ohlcv.dtype, grid.is_real.dtype) == (np.int64, np.float64, bool)


def test_three_hour_gap_is_flat_at_previous_close() -> None:
    times, ohlcv = candles([0, 1, 2, 6, 7])
    grid = fill_gaps(times, ohlcv, HOUR_MS)
    np.testing.assert_array_equal(grid.open_time_ms, BASE_MS + HOUR_MS * np.arange(8))
    np.testing.assert_array_equal(grid.is_real, [True, True, True, False, False, False, True, True])
    prev_close = ohlcv[2, CLOSE]
    np.testing.assert_array_equal(grid.ohlcv[3:6], np.tile([prev_close] * 4 + [0.0], (3, 1)))
    np.testing.assert_array_equal(grid.ohlcv[grid.is_real], ohlcv)


def test_each_gap_uses_its_own_previous_close() -> None:
    times, ohlcv = candles([0, 2, 3, 5])
    grid = fill_gaps(times, ohlcv, HOUR_MS)
    np.testing.assert_array_equal(grid.ohlcv[1], [ohlcv[0, CLOSE]] * 4 + [0.0])
    np.testing.assert_array_equal(grid.ohlcv[4], [ohlcv[2, CLOSE]] * 4 + [0.0])


def test_gap_at_start_is_filled_from_anchor_close() -> None:
    times, ohlcv = candles([3, 4])
    grid = fill_gaps(times, ohlcv, HOUR_MS, start_ms=BASE_MS, anchor_close=77.5)
    np.testing.assert_array_equal(grid.open_time_ms, BASE_MS + HOUR_MS * np.arange(5))
    np.testing.assert_array_equal(grid.is_real, [False, False, False, True, True])
    np.testing.assert_array_equal(grid.ohlcv[:3], np.tile([77.5] * 4 + [0.0], (3, 1)))


def test_missing_anchor_raises() -> None:
    times, ohlcv = candles([3, 4])
    with pytest.raises(ValueError, match="anchor"):
        fill_gaps(times, ohlcv, HOUR_MS, start_ms=BASE_MS)


def test_anchor_is_not_needed_when_first_slot_is_real() -> None:
    times, ohlcv = candles([0, 2])
    grid = fill_gaps(times, ohlcv, HOUR_MS, start_ms=BASE_MS)
    assert grid.is_real.tolist() == [True, False, True]


def test_candle_before_start_is_the_anchor_and_is_not_returned() -> None:
    times, ohlcv = candles([0, 3, 4, 5])
    grid = fill_gaps(times, ohlcv, HOUR_MS, start_ms=BASE_MS + 2 * HOUR_MS, end_ms=BASE_MS + 4 * HOUR_MS)
    np.testing.assert_array_equal(grid.open_time_ms, BASE_MS + HOUR_MS * np.arange(2, 5))
    np.testing.assert_array_equal(grid.ohlcv[0], [ohlcv[0, CLOSE]] * 4 + [0.0])
    np.testing.assert_array_equal(grid.ohlcv[1:], ohlcv[1:3])


def test_end_after_last_candle_fills_flat_to_the_end() -> None:
    times, ohlcv = candles([0, 1])
    grid = fill_gaps(times, ohlcv, HOUR_MS, end_ms=BASE_MS + 3 * HOUR_MS)
    assert grid.is_real.tolist() == [True, True, False, False]
    np.testing.assert_array_equal(grid.ohlcv[2:], np.tile([ohlcv[1, CLOSE]] * 4 + [0.0], (2, 1)))


def test_no_candles_in_range_with_anchor_is_all_flat() -> None:
    times, ohlcv = candles([])
    grid = fill_gaps(times, ohlcv, HOUR_MS, start_ms=BASE_MS, end_ms=BASE_MS + HOUR_MS, anchor_close=5.0)
    np.testing.assert_array_equal(grid.ohlcv, [[5.0] * 4 + [0.0]] * 2)
    assert not grid.is_real.any()


def test_result_is_read_only() -> None:
    times, ohlcv = candles([0, 2])
    grid = fill_gaps(times, ohlcv, HOUR_MS)
    with pytest.raises(ValueError):
        grid.ohlcv[0, 0] = 1.0
    with pytest.raises(ValueError):
        grid.is_real[1] = True


@pytest.mark.parametrize(
    ("hours", "kwargs", "match"),
    [
        ([0, 2, 1], {}, "strictly increasing"),
        ([0, 1, 1], {}, "strictly increasing"),
        ([0, 1], {"start_ms": BASE_MS + 1}, "aligned"),
        ([0, 1], {"end_ms": BASE_MS - HOUR_MS}, "before"),
        ([], {}, "required"),
    ],
)
def test_invalid_input_raises(hours: list[int], kwargs: dict[str, int], match: str) -> None:
    times, ohlcv = candles(hours)
    with pytest.raises(ValueError, match=match):
        fill_gaps(times, ohlcv, HOUR_MS, **kwargs)


def test_misaligned_times_raise() -> None:
    times, ohlcv = candles([0, 1])
    with pytest.raises(ValueError, match="aligned"):
        fill_gaps(times + 60_000, ohlcv, HOUR_MS)


def test_bad_shapes_and_types_raise() -> None:
    times, ohlcv = candles([0, 1])
    with pytest.raises(ValueError, match="shape"):
        fill_gaps(times, ohlcv[:, :4], HOUR_MS)
    with pytest.raises(ValueError, match="integer"):
        fill_gaps(times.astype(np.float64), ohlcv, HOUR_MS)
    with pytest.raises(ValueError, match="step_ms"):
        fill_gaps(times, ohlcv, 0)
    with pytest.raises(ValueError, match="anchor_close"):
        fill_gaps(times, ohlcv, HOUR_MS, start_ms=BASE_MS - HOUR_MS, anchor_close=float("nan"))


@settings(max_examples=200, deadline=None)
@given(
    n_slots=st.integers(min_value=2, max_value=120),
    data=st.data(),
    step_ms=st.sampled_from([60_000, HOUR_MS, 86_400_000]),
)
def test_removing_interior_rows_then_filling_restores_the_grid(
    n_slots: int, data: st.DataObject, step_ms: int
) -> None:
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=n_slots, max_size=n_slots)))
    keep[[0, -1]] = True
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    start = (BASE_MS // step_ms) * step_ms
    all_times = start + step_ms * np.arange(n_slots, dtype=np.int64)
    all_ohlcv = rng.uniform(1.0, 1000.0, size=(n_slots, 5))

    grid = fill_gaps(all_times[keep], all_ohlcv[keep], step_ms)

    np.testing.assert_array_equal(grid.open_time_ms, all_times)
    np.testing.assert_array_equal(grid.is_real, keep)
    np.testing.assert_array_equal(grid.ohlcv[keep], all_ohlcv[keep])
    last_real = np.maximum.accumulate(np.where(keep, np.arange(n_slots), -1))
    filled = ~keep
    prev_close = all_ohlcv[last_real[filled], CLOSE]
    np.testing.assert_array_equal(grid.ohlcv[filled, :VOLUME], np.repeat(prev_close[:, None], 4, axis=1))
    assert (grid.ohlcv[filled, VOLUME] == 0.0).all()


@pytest.mark.slow
def test_real_spot_outages_are_filled() -> None:
    path = DATA / "binance-spot" / "BTCUSDT-1h.csv.gz"
    if not path.exists():
        pytest.fail(f"real candles not found (the repo expects ../shared beside it) at {path}")
    raw = np.loadtxt(path, delimiter=",", skiprows=1)
    times, ohlcv = raw[:, 0].astype(np.int64), raw[:, 1:]
    grid = fill_gaps(times, ohlcv, HOUR_MS)

    missing = int(np.sum(np.diff(times) // HOUR_MS - 1))
    assert missing >= 30  # the ~30 h hole of 2023-12-30 and a few short outages
    assert len(grid) == times.size + missing == (times[-1] - times[0]) // HOUR_MS + 1
    assert int((~grid.is_real).sum()) == missing
    np.testing.assert_array_equal(grid.ohlcv[grid.is_real], ohlcv)
    longest = int(np.argmax(np.diff(times)))
    slot = int((times[longest] - times[0]) // HOUR_MS)
    hole = slice(slot + 1, slot + int((times[longest + 1] - times[longest]) // HOUR_MS))
    assert hole.stop - hole.start >= 29
    assert not grid.is_real[hole].any()
    assert (grid.ohlcv[hole, :VOLUME] == ohlcv[longest, CLOSE]).all()
    assert (grid.ohlcv[hole, VOLUME] == 0.0).all()
